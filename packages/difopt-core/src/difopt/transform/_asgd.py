"""ASGD: stochastic gradient descent with a decaying step size and a running average of the
iterates (Polyak & Juditsky, 1992), as torch.optim.ASGD computes them."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from difopt import _leafwise as lw
from difopt import _step_counters as counters
from difopt import _validate as check
from difopt._factory import transformation
from difopt._shapes import param_shaped
from difopt.base import GradientTransformation
from difopt.transform._adaptive import _step
from difopt.transform._core import _params_like

__all__ = ["ScaleByAsgdState", "scale_by_asgd"]


@param_shaped("ax")
class ScaleByAsgdState(NamedTuple):
    """State of :func:`scale_by_asgd`.

    ``ax`` is the running average of the parameters, ASGD's answer. ``eta`` and ``mu`` are the
    step size and the averaging weight of the next step, one float64 scalar per parameter
    as torch.optim.ASGD keeps them. ``count`` is the step count.
    """

    ax: Any
    eta: Any
    mu: Any
    count: Any  # as the other counting states; shadows tuple.count


@transformation
def scale_by_asgd(
    lr: Any = 1e-2, lambd: float = 1e-4, alpha: float = 0.75, t0: float = 1e6
) -> GradientTransformation:
    """The ASGD step ``p <- p (1 - lambd eta) - eta g`` as an update, and the average of the
    iterates in the state.

    The output is ``eta * (g + lambd * p)``, to be negated. Then ``ax`` moves to the new
    parameters by the fraction ``mu``. After step ``t`` (from 1), ``eta = lr / (1 + lambd lr
    t) ** alpha`` and ``mu = 1 / max(1, t - t0)``: averaging starts after step ``t0``, and
    before that ``ax`` follows the parameters. The first step's size is ``lr`` at that step.

    Args:
        lr: the initial step size, a float or a 0-d tensor (read at every step, as a
            torch.optim scheduler fills it). It is not a schedule: the decay is ASGD's own.
        lambd: decay term, >= 0.
        alpha: power of the step-size decay.
        t0: the step after which averaging starts.

    References:
        Polyak & Juditsky, "Acceleration of stochastic approximation by averaging", SIAM J.
        Control Optim., 1992.
    """
    if callable(lr):
        raise TypeError(
            "Invalid value for 'lr': ASGD decays its step size from lr itself; pass a float "
            "or a 0-d tensor, not a schedule"
        )
    check.learning_rate("lr", lr)
    check.non_negative("lambd", lambd)
    check.finite("alpha", alpha)
    check.finite("t0", t0)

    def init(params: Any) -> ScaleByAsgdState:
        ps, spec = lw.flatten(params)
        start = float(lr.detach()) if isinstance(lr, torch.Tensor) else float(lr)
        return ScaleByAsgdState(
            ax=lw.unflatten(spec, lw.zeros_like(ps)),
            eta=lw.unflatten(spec, _scalars(len(ps), start)),
            mu=lw.unflatten(spec, _scalars(len(ps), 1.0)),
            count=counters.count_init(params),
        )

    def update(updates: Any, state: Any, *, params: Any = None, inplace: bool = True) -> Any:
        gs, spec = lw.flatten(updates)
        ps = _params_like(spec, params, "scale_by_asgd")
        before = counters.step_value(state.count)  # steps taken so far (the counters agree here)
        count = counters.count_inc(state.count, inplace)
        etas, mus, axs = lw.leaves(state.eta), lw.leaves(state.mu), lw.leaves(state.ax)
        out, new_axs = [], []
        for g, p, eta, mu, ax in zip(gs, ps, etas, mus, axs):
            size = _this_step_size(before, eta, g)
            d = (g + lambd * p) * size if lambd else g * size
            moved = (p - d) - ax
            if inplace:
                ax.add_(moved.mul_(mu.to(g.dtype)))
            else:
                ax = ax + moved * mu.to(g.dtype)
            out.append(d)
            new_axs.append(ax)
        t = _step(count, gs)
        next_eta = lr / (1.0 + lambd * lr * t) ** alpha
        if isinstance(t, torch.Tensor):
            next_mu: Any = 1.0 / torch.clamp(t - t0, min=1.0)
        else:
            next_mu = 1.0 / max(1.0, t - t0)
        new_etas = _store(etas, next_eta, inplace)
        new_mus = _store(mus, next_mu, inplace)
        new_state = ScaleByAsgdState(
            lw.unflatten(spec, new_axs),
            lw.unflatten(spec, new_etas),
            lw.unflatten(spec, new_mus),
            count,
        )
        return lw.unflatten(spec, out), new_state

    def _this_step_size(before: Any, eta: torch.Tensor, g: torch.Tensor) -> Any:
        """This step's size in ``g``'s dtype: ``lr`` as it is now at the first step (a
        scheduler may have changed it since the state was made; torch.optim.ASGD makes its
        state at the first step), then the size stored by the previous step."""
        if isinstance(before, int):
            if before == 0:
                return lr.to(g.dtype) if isinstance(lr, torch.Tensor) else float(lr)
            return eta.to(g.dtype)
        first = lr if isinstance(lr, torch.Tensor) else torch.full_like(eta, lr)
        return torch.where(before == 0, first.to(g.dtype), eta.to(g.dtype))

    return GradientTransformation(init, update)


def _store(olds: list[torch.Tensor], value: Any, inplace: bool) -> list[torch.Tensor]:
    """One float64 scalar per parameter holding ``value`` (a float or a 0-d tensor)."""
    if inplace:
        with torch.no_grad():
            for old in olds:
                if isinstance(value, torch.Tensor):
                    old.copy_(value)
                else:
                    old.fill_(value)
        return olds
    if isinstance(value, torch.Tensor):
        return [value.to(torch.float64) + 0.0 for _ in olds]  # one tensor each
    return _scalars(len(olds), value)


def _scalars(n: int, value: float) -> list[torch.Tensor]:
    """``n`` separate float64 0-d tensors holding ``value``."""
    return [torch.full((), value, dtype=torch.float64) for _ in range(n)]
