"""Rprop: per-element step sizes adapted from the signs of successive gradients
(Riedmiller & Braun, 1993), as torch.optim.Rprop computes them."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from difopt import _leafwise as lw
from difopt import _validate as check
from difopt._factory import transformation
from difopt._shapes import param_shaped
from difopt.base import GradientTransformation

__all__ = ["ScaleByRpropState", "scale_by_rprop"]


@param_shaped("prev", "step_size")
class ScaleByRpropState(NamedTuple):
    """State of :func:`scale_by_rprop`: the previous (masked) gradient and the current step
    size of every element."""

    prev: Any
    step_size: Any


@transformation
def scale_by_rprop(
    initial_step_size: float = 1e-2,
    etas: tuple[float, float] = (0.5, 1.2),
    step_sizes: tuple[float, float] = (1e-6, 50.0),
) -> GradientTransformation:
    """Replace each gradient element by its sign times an adaptive step size.

    Where the gradient keeps its sign from the previous step the element's step size grows
    by ``etas[1]``, where it flips it shrinks by ``etas[0]`` and that element does not move
    this step (its gradient counts as 0, also for the next comparison); the step size stays
    within ``step_sizes``. The output is ``sign(g) * step_size``, to be negated.

    Args:
        initial_step_size: every element's first step size (torch.optim's ``lr``).
        etas: ``(decrease, increase)`` factors, ``0 < etas[0] < 1 < etas[1]``.
        step_sizes: ``(minimum, maximum)`` step size.

    References:
        Riedmiller & Braun, "A direct adaptive method for faster backpropagation learning:
        the RPROP algorithm", ICNN 1993.
    """
    check.non_negative("initial_step_size", initial_step_size)
    if (
        not isinstance(etas, (tuple, list))
        or len(etas) != 2
        or not all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in etas)
        or not 0.0 < etas[0] < 1.0 < etas[1] < math.inf
    ):
        raise ValueError(
            f"Invalid value for 'etas': {etas!r} (expected (decrease, increase) with "
            "0 < decrease < 1 < increase)"
        )
    if (
        not isinstance(step_sizes, (tuple, list))
        or len(step_sizes) != 2
        or not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in step_sizes)
        or not 0.0 <= step_sizes[0] <= step_sizes[1]
    ):
        raise ValueError(
            f"Invalid value for 'step_sizes': {step_sizes!r} (expected (minimum, maximum) with "
            "0 <= minimum <= maximum)"
        )
    decrease, increase = float(etas[0]), float(etas[1])
    low, high = float(step_sizes[0]), float(step_sizes[1])

    def init(params: Any) -> ScaleByRpropState:
        ps, spec = lw.flatten(params)
        return ScaleByRpropState(
            lw.unflatten(spec, lw.zeros_like(ps)),
            lw.unflatten(spec, lw.full_like(ps, initial_step_size)),
        )

    def update(updates: Any, state: Any, *, params: Any = None, inplace: bool = True) -> Any:
        gs, spec = lw.flatten(updates)
        out, prevs, sizes = [], [], []
        for g, prev, size in zip(gs, lw.leaves(state.prev), lw.leaves(state.step_size)):
            agreement = (g * prev).sign()
            # Python scalars take g's dtype here (the tensor operand decides).
            same = torch.ones_like(g)
            factor = torch.where(
                agreement > 0, increase, torch.where(agreement < 0, decrease, same)
            )
            flipped = agreement < 0
            kept = torch.where(flipped, torch.zeros_like(g), g)
            if inplace:
                size.mul_(factor).clamp_(low, high)
                prev.copy_(kept)
            else:
                size = (size * factor).clamp(low, high)
                prev = kept
            out.append(kept.sign() * size)
            prevs.append(prev)
            sizes.append(size)
        new_state = ScaleByRpropState(lw.unflatten(spec, prevs), lw.unflatten(spec, sizes))
        return lw.unflatten(spec, out), new_state

    return GradientTransformation(init, update)
