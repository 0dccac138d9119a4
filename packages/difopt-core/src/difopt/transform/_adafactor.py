"""Adafactor: second moments factored into row and column statistics (Shazeer & Stern, 2018).

For a parameter with two or more dimensions the second-moment estimate of its last two is
kept as a column of row means and a row of column means (``R + C`` numbers per matrix instead
of ``R * C``), and rebuilt as their outer product divided by their mean. The step size is
relative to the parameter's RMS and the update is clipped in RMS, so the learning rate is an
upper bound on the relative step (``min(lr, 1 / sqrt(t))``). The values follow
torch.optim.Adafactor.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import torch

from difopt import _leafwise as lw
from difopt import _step_counters as counters
from difopt import _validate as check
from difopt._factory import transformation
from difopt.base import GradientTransformation

__all__ = ["ScaleByAdafactorState", "scale_by_adafactor"]


class ScaleByAdafactorState(NamedTuple):
    """State of :func:`scale_by_adafactor`, one entry per parameter: the row and column
    statistics of a parameter with two or more dimensions (``None`` for the others), the full
    second moment of a vector or scalar (``None`` for the others), and the step count."""

    row_var: Any
    col_var: Any
    variance: Any
    count: Any  # Optax's and TorchOpt's name; shadows tuple.count


def _rms(x: torch.Tensor) -> torch.Tensor:
    """The root mean square of ``x`` in float64 (a scalar of the step size: torch.optim takes
    it as a Python float too)."""
    return torch.linalg.vector_norm(x).double() / math.sqrt(x.numel())


@transformation
def scale_by_adafactor(
    lr: float | Callable[[Any], Any] = 1e-2,
    beta2_decay: float = -0.8,
    eps: tuple[float | None, float] = (None, 1e-3),
    d: float = 1.0,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """Adafactor's step, decoupled weight decay included, to be negated and added.

    At step ``t`` (per parameter): ``b = t ** beta2_decay``; the second-moment statistics
    move toward those of ``g^2`` by ``b``; ``u = g / sqrt(max(v_hat, eps1^2))`` with ``v_hat``
    the (factored) estimate; the output is
    ``max(eps2, rms(p)) * min(lr, 1 / sqrt(t)) / max(1, rms(u) / d) * u + lr * weight_decay * p``.

    Args:
        lr: the bound on the relative step size, a float or a schedule of the step count.
        beta2_decay: exponent (<= 0) of the second-moment decay schedule.
        eps: ``(eps1, eps2)``: the floor of the second moment (``None``: each parameter's
            dtype's machine epsilon; torch.optim takes the first parameter's for all) and of
            the parameter RMS in the step size.
        d: clipping threshold on the update RMS (>= 1).
        weight_decay: decoupled weight decay coefficient.

    References:
        Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
        ICML 2018.
    """
    check.learning_rate("lr", lr)
    if (
        not isinstance(beta2_decay, (int, float))
        or isinstance(beta2_decay, bool)
        or not (beta2_decay <= 0.0)
    ):
        raise ValueError(
            f"Invalid value for 'beta2_decay': {beta2_decay!r} (expected a float <= 0)"
        )
    if not isinstance(eps, (tuple, list)) or len(eps) != 2:
        raise ValueError(
            f"Invalid value for 'eps': {eps!r} (expected a pair (eps1, eps2), eps1 None or >= 0)"
        )
    if eps[0] is not None:
        check.non_negative("eps[0]", eps[0])
    check.non_negative("eps[1]", eps[1])
    if not isinstance(d, (int, float)) or isinstance(d, bool) or not 1.0 <= d < math.inf:
        raise ValueError(f"Invalid value for 'd': {d!r} (expected a finite float >= 1)")
    check.non_negative("weight_decay", weight_decay)
    eps2 = float(eps[1])

    def init(params: Any) -> ScaleByAdafactorState:
        ps, spec = lw.flatten(params)
        rows: list[torch.Tensor | None] = []
        cols: list[torch.Tensor | None] = []
        full: list[torch.Tensor | None] = []
        for p in ps:
            if p.ndim > 1:
                rows.append(p.new_zeros((*p.shape[:-1], 1)))
                cols.append(p.new_zeros((*p.shape[:-2], 1, p.shape[-1])))
                full.append(None)
            else:
                rows.append(None)
                cols.append(None)
                full.append(torch.zeros_like(p))
        return ScaleByAdafactorState(
            lw.unflatten(spec, rows),
            lw.unflatten(spec, cols),
            lw.unflatten(spec, full),
            counters.count_init(params),
        )

    def update(updates: Any, state: Any, *, params: Any = None, inplace: bool = True) -> Any:
        if params is None:
            raise ValueError("scale_by_adafactor needs 'params' (its step is relative to them)")
        # None marks both a hidden leaf (a parameter without gradient this step, see
        # difopt._missing_leaves) and a statistic this parameter does not keep, so every tree is
        # flattened with its None leaves and a None update leaf is passed through.
        gs, spec = lw.flatten_with_none(updates)
        ps, _ = lw.flatten_with_none(params)
        rows, _ = lw.flatten_with_none(state.row_var)
        cols, _ = lw.flatten_with_none(state.col_var)
        full, _ = lw.flatten_with_none(state.variance)
        lr_t = lr(counters.step_value(state.count)) if callable(lr) else lr  # schedules see t - 1
        count = counters.count_inc(state.count, inplace)
        t = counters.step_value(count)
        if isinstance(t, int) and not torch.is_tensor(lr_t):
            rho: Any = min(lr_t, t**-0.5)
            decay: Any = float(t) ** beta2_decay
        else:  # a traced step count, or a tensor learning rate
            t64 = torch.as_tensor(t, dtype=torch.float64)
            rho = torch.clamp(t64**-0.5, max=lr_t)
            decay = t64**beta2_decay
        out: list[Any] = []
        new_rows: list[Any] = []
        new_cols: list[Any] = []
        new_full: list[Any] = []
        for g, p, row, col, var in zip(gs, ps, rows, cols, full):
            if g is None:
                out.append(None)
                new_rows.append(row)
                new_cols.append(col)
                new_full.append(var)
                continue
            eps1 = torch.finfo(p.dtype).eps if eps[0] is None else float(eps[0])
            b = decay.to(g.dtype) if torch.is_tensor(decay) else decay
            if g.ndim > 1:
                row_mean = torch.linalg.vector_norm(g, dim=-1, keepdim=True).square() / g.shape[-1]
                col_mean = torch.linalg.vector_norm(g, dim=-2, keepdim=True).square() / g.shape[-2]
                row = row.lerp_(row_mean, b) if inplace else row.lerp(row_mean, b)
                col = col.lerp_(col_mean, b) if inplace else col.lerp(col_mean, b)
                estimate = row @ col
                scale = row.mean(dim=-2, keepdim=True).clamp(min=eps1)
                estimate = estimate.div_(scale) if inplace else estimate / scale
            else:
                var = var.lerp_(g * g, b) if inplace else var.lerp(g * g, b)
                estimate = var
            alpha = torch.clamp(_rms(p), min=eps2) * rho  # float64, as torch's Python floats
            if inplace:
                # No graph to keep: one fresh buffer (the factored product, or the clamped
                # copy of a vector's variance) carries the rest, as in torch.optim.
                fresh = (
                    estimate.clamp_(min=eps1 * eps1)
                    if g.ndim > 1
                    else estimate.clamp(min=eps1 * eps1)
                )
                u = fresh.rsqrt_().mul_(g)
                factor = (alpha / torch.clamp(_rms(u) / d, min=1.0)).to(u.dtype)
                step = u.mul_(factor)
                if weight_decay:
                    step.add_(p, alpha=float(lr_t * weight_decay))
            else:
                u = estimate.clamp(min=eps1 * eps1).rsqrt() * g
                step = u * (alpha / torch.clamp(_rms(u) / d, min=1.0)).to(u.dtype)
                if weight_decay:
                    step = step + (lr_t * weight_decay) * p
            out.append(step)
            new_rows.append(row if g.ndim > 1 else None)
            new_cols.append(col if g.ndim > 1 else None)
            new_full.append(var if g.ndim <= 1 else None)
        new_state = ScaleByAdafactorState(
            lw.unflatten(spec, new_rows),
            lw.unflatten(spec, new_cols),
            lw.unflatten(spec, new_full),
            count,
        )
        return lw.unflatten(spec, out), new_state

    return GradientTransformation(init, update)
