"""Tensor hooks registered on updates through a transformation."""

from __future__ import annotations

from typing import Any, Callable

import torch

from difopt import _leafwise as lw
from difopt._factory import transformation
from difopt.base import GradientTransformation, _empty_init

__all__ = ["nan_to_num_hook", "register_hook", "zero_nan_hook"]


def zero_nan_hook(g: torch.Tensor) -> torch.Tensor:
    """A gradient hook that replaces NaN with 0."""
    return torch.nan_to_num(g, nan=0.0)


def nan_to_num_hook(
    nan: float = 0.0, posinf: float | None = None, neginf: float | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return a gradient hook that applies :func:`torch.nan_to_num` with these values."""

    def hook(g: torch.Tensor) -> torch.Tensor:
        return torch.nan_to_num(g, nan=nan, posinf=posinf, neginf=neginf)

    return hook


@transformation
def register_hook(hook: Callable[[torch.Tensor], torch.Tensor | None]) -> GradientTransformation:
    """Register ``hook`` on every update tensor that requires grad; updates pass unchanged.

    The hook then runs on the gradients flowing back through the updates, e.g. to zero out
    NaNs in a meta-gradient with :func:`zero_nan_hook`.
    """
    if not callable(hook):
        raise TypeError(f"Invalid value for 'hook': {hook!r} (expected a callable)")

    def update(updates: Any, state: Any, *, params: Any = None, inplace: bool = True) -> Any:
        for x in lw.leaves(updates):
            if x.requires_grad:
                x.register_hook(hook)
        return updates, state

    return GradientTransformation(_empty_init, update)
