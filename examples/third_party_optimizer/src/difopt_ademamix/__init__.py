"""AdEMAMix (Pagliardini, Ablin & Grangier, 2024) as a third-party difopt optimizer.

Adam with a second, slow momentum mixed into the numerator:

    m1 = b1 m1 + (1 - b1) g          m2 = b3 m2 + (1 - b3) g          v = b2 v + (1 - b2) g^2
    p  = p - lr * ((m1 / (1 - b1^t) + alpha m2) / (sqrt(v / (1 - b2^t)) + eps) + wd p)

with optional warm-ups of ``alpha`` and ``b3`` over ``t_alpha_beta3`` steps. One entry point
(``difopt.optimizers: ademamix``) gives it the three forms of every difopt optimizer:
``difopt.ademamix`` (functional), ``difopt.Ademamix`` (torch.optim-style) and
``difopt.MetaAdemamix`` (differentiable). It uses difopt's public API only, including a fused
apply, so a classic step adds the update to the parameters in one ``addcdiv``.

Examples:
    >>> import torch, difopt
    >>> net = torch.nn.Linear(3, 1)
    >>> opt = difopt.Ademamix(net.parameters(), lr=1e-2)
    >>> net(torch.ones(2, 3)).sum().backward()
    >>> opt.step()
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from difopt import GradientTransformation, chain
from difopt.alias import forms
from difopt.plugin import (
    count_inc,
    count_init,
    flatten,
    leaves,
    on_graph,
    param_shaped,
    same_step,
    step_value,
    transformation,
    unflatten,
)
from difopt.transform import add_decayed_weights, flip_sign_and_add_weight_decay, scale_by_neg_lr

__all__ = ["ScaleByAdemamixState", "ademamix", "scale_by_ademamix"]
__version__ = "0.1.0"

# The difopt plugin API this package is written for (difopt.plugin.PLUGIN_API_VERSION).
DIFOPT_PLUGIN_API = "1.0"


@param_shaped("mu", "nu", "mu_slow")
class ScaleByAdemamixState(NamedTuple):
    """State of :func:`scale_by_ademamix`: fast and slow first moments, second moment, and
    the step count (one counter per parameter)."""

    mu: Any
    nu: Any
    mu_slow: Any
    count: Any


def _schedules(
    t: int | torch.Tensor, b1: float, b3: float, alpha: float, warmup: float | None
) -> tuple[Any, Any]:
    """``(alpha_t, b3_t)`` at step ``t`` (from 1): linear warm-up of alpha, and b3 warmed up
    so that the slow momentum's half-life grows linearly (the paper's scheduler)."""
    if warmup is None:
        return alpha, b3
    log1, log3 = math.log(b1), math.log(b3)
    if isinstance(t, torch.Tensor):
        ratio = t / warmup
        alpha_t = torch.clamp(ratio * alpha, max=alpha)
        b3_t = torch.clamp(torch.exp(log1 * log3 / ((1.0 - ratio) * log3 + ratio * log1)), max=b3)
        return alpha_t, b3_t
    frac = t / warmup
    return min(frac * alpha, alpha), min(
        math.exp(log1 * log3 / ((1 - frac) * log3 + frac * log1)), b3
    )


def _check(name: str, value: Any, low: float, high: float | None = None) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= low
    if ok and high is not None:
        ok = value < high
    if not ok:
        bound = f"in [{low}, {high})" if high is not None else f">= {low}"
        raise ValueError(f"Invalid value for {name!r}: {value!r} (expected a number {bound})")


@transformation
def scale_by_ademamix(
    b1: float = 0.9,
    b2: float = 0.999,
    b3: float = 0.9999,
    alpha: float = 5.0,
    t_alpha_beta3: float | None = None,
    eps: float = 1e-8,
    moment_requires_grad: bool = False,
) -> GradientTransformation:
    """Rescale updates by AdEMAMix's mixture of a fast and a slow momentum.

    Args:
        b1: decay of the fast first moment.
        b2: decay of the second moment.
        b3: decay of the slow first moment (after its warm-up).
        alpha: weight of the slow moment (after its warm-up).
        t_alpha_beta3: steps over which ``alpha`` and ``b3`` warm up; None: no warm-up.
        eps: term added to the denominator.
        moment_requires_grad: create the moments with ``requires_grad=True``.
    """
    for name, value in (("b1", b1), ("b2", b2), ("b3", b3)):
        _check(name, value, 0.0, 1.0)
    _check("alpha", alpha, 0.0)
    _check("eps", eps, 0.0)
    if t_alpha_beta3 is not None:
        _check("t_alpha_beta3", t_alpha_beta3, 1.0)

    def init(params: Any) -> ScaleByAdemamixState:
        ps, spec = flatten(params)

        def zeros() -> Any:
            return unflatten(
                spec, [torch.zeros_like(p).requires_grad_(moment_requires_grad) for p in ps]
            )

        return ScaleByAdemamixState(zeros(), zeros(), zeros(), count_init(params))

    def moments(gs: list[torch.Tensor], state: Any, inplace: bool) -> tuple[list[Any], Any, Any]:
        """The new moments (in place with ``inplace``), counter, and the step's scalars."""
        count = count_inc(state.count, inplace)
        t = step_value(count)
        alpha_t, b3_t = _schedules(t, b1, b3, alpha, t_alpha_beta3)
        mu, nu, slow = (leaves(getattr(state, f)) for f in ("mu", "nu", "mu_slow"))
        if inplace:
            torch._foreach_lerp_(mu, gs, 1.0 - b1)
            torch._foreach_mul_(nu, b2)
            torch._foreach_addcmul_(nu, gs, gs, value=1.0 - b2)
            for m, g in zip(slow, gs):
                m.lerp_(g, 1.0 - b3_t)
        else:
            mu = [m.lerp(g, 1.0 - b1) for m, g in zip(mu, gs)]
            nu = [b2 * v + (1.0 - b2) * g * g for v, g in zip(nu, gs)]
            slow = [m.lerp(g, 1.0 - b3_t) for m, g in zip(slow, gs)]
        scalars = (
            1.0 - b1**t,
            math.sqrt(1.0 - b2**t) if isinstance(t, int) else (1.0 - b2**t).sqrt(),
        )
        return [mu, nu, slow], count, (alpha_t, *scalars)

    def direction(tensors: list[Any], scalars: Any) -> tuple[list[Any], list[Any]]:
        """Numerator ``m1 / bc1 + alpha m2`` and denominator ``sqrt(v) / sqrt(bc2) + eps``."""
        mu, nu, slow = tensors
        alpha_t, bc1, sqrt_bc2 = scalars
        num = [m / bc1 + alpha_t * s for m, s in zip(mu, slow)]
        den = [v.sqrt() / sqrt_bc2 + eps for v in nu]
        return num, den

    def new_state(spec: Any, tensors: list[Any], count: Any) -> ScaleByAdemamixState:
        mu, nu, slow = (unflatten(spec, xs) for xs in tensors)
        return ScaleByAdemamixState(mu, nu, slow, count)

    def update(updates: Any, state: Any, *, params: Any = None, inplace: bool = True) -> Any:
        gs, spec = flatten(updates)
        tensors, count, scalars = moments(gs, state, inplace)
        num, den = direction(tensors, scalars)
        out = [n / d for n, d in zip(num, den)]
        return unflatten(spec, out), new_state(spec, tensors, count)

    def apply_scaled(
        updates: Any, state: Any, *, params: Any, factor: float, inplace: bool
    ) -> tuple[list[torch.Tensor], Any] | None:
        """``params + factor * update`` with the division and the add in one ``addcdiv``."""
        gs, spec = flatten(updates)
        ps = leaves(params)
        if len(ps) != len(gs) or not same_step(leaves(state.count)):
            return None  # update() handles parameters at different steps
        tensors, count, scalars = moments(gs, state, inplace)
        num, den = direction(tensors, scalars)
        if inplace and not on_graph(ps, gs):
            torch._foreach_addcdiv_(ps, num, den, value=factor)
            new_params = list(ps)
        else:
            new_params = [p + factor * n / d for p, n, d in zip(ps, num, den)]
        return new_params, new_state(spec, tensors, count)

    return GradientTransformation(init, update).declare(apply_scaled=apply_scaled)


@forms("Ademamix", "MetaAdemamix", meta_defaults={"moment_requires_grad": True})
def ademamix(
    lr: Any = 1e-3,
    betas: tuple[float, float, float] = (0.9, 0.999, 0.9999),
    alpha: float = 5.0,
    t_alpha_beta3: float | None = None,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    *,
    moment_requires_grad: bool = False,
    maximize: bool = False,
) -> GradientTransformation:
    """AdEMAMix (Pagliardini, Ablin & Grangier, 2024): Adam with a slow momentum mixed in.

    Args:
        lr: learning rate, a float, a 0-d tensor or a schedule.
        betas: ``(b1, b2, b3)``: decays of the fast moment, the second moment and the slow
            moment.
        alpha: weight of the slow moment.
        t_alpha_beta3: steps over which ``alpha`` and ``b3`` warm up (None: none).
        eps: term added to the denominator.
        weight_decay: decoupled weight decay coefficient (as AdamW).
        moment_requires_grad: create the moments with ``requires_grad=True``.
        maximize: maximize the objective instead of minimizing it.

    References:
        Pagliardini, Ablin & Grangier, "The AdEMAMix Optimizer: Better, Faster, Older", 2024.
    """
    if not (isinstance(betas, (tuple, list)) and len(betas) == 3):
        raise ValueError(f"Invalid value for 'betas': {betas!r} (expected three decay rates)")
    _check("weight_decay", weight_decay, 0.0)
    b1, b2, b3 = betas
    return chain(
        flip_sign_and_add_weight_decay(0.0, maximize),
        scale_by_ademamix(b1, b2, b3, alpha, t_alpha_beta3, eps, moment_requires_grad),
        add_decayed_weights(weight_decay),
        scale_by_neg_lr(lr),
    )
