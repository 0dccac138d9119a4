"""Argument checks shared by transformations and optimizers.

Each check names the argument and the accepted values, so bad hyper-parameters fail when the
optimizer is built, before any state exists.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def non_negative(name: str, value: Any) -> None:
    if not _is_number(value) or math.isnan(value) or value < 0.0 or math.isinf(value):
        raise ValueError(f"Invalid value for '{name}': {value!r} (expected a finite float >= 0)")


def finite(name: str, value: Any) -> None:
    if not _is_number(value) or math.isnan(value) or math.isinf(value):
        raise ValueError(f"Invalid value for '{name}': {value!r} (expected a finite float)")


def positive(name: str, value: Any) -> None:
    if not _is_number(value) or math.isnan(value) or value <= 0.0 or math.isinf(value):
        raise ValueError(f"Invalid value for '{name}': {value!r} (expected a finite float > 0)")


def unit_interval(name: str, value: Any) -> None:
    """``0 <= value < 1``: decay rates such as Adam's betas."""
    if not _is_number(value) or math.isnan(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"Invalid value for '{name}': {value!r} (expected a float in [0, 1))")


def closed_unit_interval(name: str, value: Any) -> None:
    if not _is_number(value) or math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"Invalid value for '{name}': {value!r} (expected a float in [0, 1])")


def learning_rate(name: str, value: Any) -> None:
    """A float, a schedule, or a 0-d floating-point tensor (read at every step, so that a
    torch.optim scheduler's in-place ``fill_`` takes effect without rebuilding anything, and a
    compiled step takes it as an input instead of recompiling for each value)."""
    if callable(value):
        return
    if isinstance(value, torch.Tensor):
        ok = value.ndim == 0 and value.is_floating_point()
        if ok and not torch.compiler.is_compiling():
            v = float(value.detach())
            ok = not (math.isnan(v) or math.isinf(v) or v < 0.0)
        if ok:
            return
    elif _is_number(value) and not (math.isnan(value) or math.isinf(value) or value < 0.0):
        return
    raise ValueError(
        f"Invalid value for '{name}': {value!r} (expected a finite float >= 0, a 0-d "
        "floating-point tensor holding one, or a schedule: a callable of the step count)"
    )


def betas(name: str, value: Any, n: int = 2) -> None:
    if not isinstance(value, (tuple, list)) or len(value) != n:
        raise ValueError(f"Invalid value for '{name}': {value!r} (expected a tuple of {n} floats)")
    for i, b in enumerate(value):
        unit_interval(f"{name}[{i}]", b)


def boolean(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"Invalid value for '{name}': {value!r} (expected a bool)")
