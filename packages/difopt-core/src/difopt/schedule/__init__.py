"""Learning-rate schedules: callables from the step count to a value.

Each schedule accepts the count as a Python int or as a 0-d tensor (inside ``torch.func``
transforms) and returns a float or a tensor accordingly. Schedules are small classes, so they
compare, print and pickle.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import operator
from typing import Any

import torch

from difopt import _validate as check

__all__ = [
    "cosine_decay",
    "exponential_decay",
    "linear_schedule",
    "polynomial_schedule",
    "warmup_cosine_decay",
]


def _clip(x: Any, lo: float, hi: float) -> Any:
    if torch.is_tensor(x):
        return torch.clamp(x, lo, hi)
    return min(max(x, lo), hi)


def _is_int(name: str, value: Any, minimum: int | None) -> int:
    """``value`` as an int (any integer type, numpy's included), checked ``>= minimum``."""
    try:
        as_int = operator.index(value)
    except TypeError:
        as_int = None
    if as_int is None or isinstance(value, bool) or (minimum is not None and as_int < minimum):
        expected = "an int" if minimum is None else f"an int >= {minimum}"
        raise ValueError(f"Invalid value for '{name}': {value!r} (expected {expected})")
    return as_int


def _is_finite(name: str, value: Any) -> None:
    """A finite real number, or a finite 0-d floating tensor (TorchOpt: "float or Tensor")."""
    if torch.is_tensor(value):
        ok = value.ndim == 0 and value.is_floating_point() and bool(torch.isfinite(value))
    else:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        ok = ok and math.isfinite(value)
    if not ok:
        raise ValueError(
            f"Invalid value for '{name}': {value!r} (expected a finite float or 0-d tensor)"
        )


class _Schedule:
    """Base of difopt's schedules: they take the count as a Python int (a 0-d tensor inside
    ``torch.func`` transforms), and compare, print and pickle."""

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(vars(self).items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{_public_name[type(self).__name__]}({args})"


@dataclasses.dataclass(eq=False, repr=False)
class _Constant(_Schedule):
    """What TorchOpt documents for ``transition_steps <= 0``: ``init_value`` at every step."""

    value: Any

    def __call__(self, count: Any) -> Any:
        return self.value

    def __repr__(self) -> str:
        return f"constant_schedule({self.value!r})"


@dataclasses.dataclass(eq=False, repr=False)
class _Polynomial(_Schedule):
    init_value: float
    end_value: float
    power: float
    transition_steps: int
    transition_begin: int

    def __call__(self, count: Any) -> Any:
        steps = _clip(count - self.transition_begin, 0, self.transition_steps)
        frac = 1.0 - steps / self.transition_steps
        return (self.init_value - self.end_value) * frac**self.power + self.end_value


def polynomial_schedule(
    init_value: float,
    end_value: float,
    power: float,
    transition_steps: int,
    transition_begin: int = 0,
) -> _Schedule:
    """Decay from ``init_value`` to ``end_value`` as ``(1 - t / transition_steps)^power``.

    The value is ``init_value`` for the first ``transition_begin`` steps and ``end_value``
    after ``transition_begin + transition_steps``; with ``transition_steps <= 0`` it is
    ``init_value`` throughout (as TorchOpt documents). The values may be 0-d tensors.

    Examples:
        >>> s = polynomial_schedule(1.0, 0.0, power=2, transition_steps=4)
        >>> [s(t) for t in range(6)]
        [1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0]
    """
    _is_finite("init_value", init_value)
    _is_finite("end_value", end_value)
    _is_finite("power", power)
    transition_steps = _is_int("transition_steps", transition_steps, None)
    transition_begin = _is_int("transition_begin", transition_begin, 0)
    if transition_steps <= 0:
        return _Constant(init_value)
    return _Polynomial(init_value, end_value, power, transition_steps, transition_begin)


def linear_schedule(
    init_value: float, end_value: float, transition_steps: int, transition_begin: int = 0
) -> _Schedule:
    """Linear interpolation from ``init_value`` to ``end_value`` over ``transition_steps``."""
    return polynomial_schedule(init_value, end_value, 1, transition_steps, transition_begin)


@dataclasses.dataclass(eq=False, repr=False)
class _Exponential(_Schedule):
    init_value: float
    decay_rate: float
    transition_begin: int
    transition_steps: int
    staircase: bool
    end_value: float | None

    def __call__(self, count: Any) -> Any:
        steps = count - self.transition_begin
        steps = torch.clamp(steps, min=0) if torch.is_tensor(steps) else max(steps, 0)
        p = steps / self.transition_steps
        if self.staircase:
            p = torch.floor(p) if torch.is_tensor(p) else math.floor(p)
        value = self.init_value * self.decay_rate**p
        if self.end_value is not None:
            # A lower bound when decaying, an upper bound when growing (TorchOpt's and Optax's
            # rule), whichever side of it init_value lies.
            if self.decay_rate < 1.0:
                value = _clip(value, self.end_value, math.inf)
            else:
                value = _clip(value, -math.inf, self.end_value)
        return value


def exponential_decay(
    init_value: float,
    decay_rate: float,
    transition_begin: int = 0,
    transition_steps: int = 1,
    staircase: bool = False,
    end_value: float | None = None,
) -> _Schedule:
    """``init_value * decay_rate ** ((t - transition_begin) / transition_steps)``.

    Args:
        init_value: the value before and at ``transition_begin``.
        decay_rate: the factor per ``transition_steps`` steps (> 0).
        transition_begin: steps to wait before decaying.
        transition_steps: steps over which ``decay_rate`` applies once; ``<= 0`` holds the
            value at ``init_value`` (as TorchOpt documents).
        staircase: decay in discrete jumps every ``transition_steps`` steps.
        end_value: a bound the value never passes: a lower bound when ``decay_rate < 1``,
            an upper bound otherwise (also when ``init_value`` lies beyond it).

    Examples:
        >>> s = exponential_decay(1.0, 0.5, transition_steps=2, staircase=True)
        >>> [s(t) for t in range(5)]
        [1.0, 1.0, 0.5, 0.5, 0.25]
    """
    _is_finite("init_value", init_value)
    check.positive("decay_rate", decay_rate)
    transition_begin = _is_int("transition_begin", transition_begin, 0)
    transition_steps = _is_int("transition_steps", transition_steps, None)
    check.boolean("staircase", staircase)
    if end_value is not None:
        _is_finite("end_value", end_value)
    if transition_steps <= 0:
        return _Constant(init_value)
    return _Exponential(
        init_value, decay_rate, transition_begin, transition_steps, staircase, end_value
    )


@dataclasses.dataclass(eq=False, repr=False)
class _Cosine(_Schedule):
    init_value: float
    decay_steps: int
    alpha: float
    exponent: float

    def __call__(self, count: Any) -> Any:
        frac = _clip(count, 0, self.decay_steps) / self.decay_steps
        cos = torch.cos(math.pi * frac) if torch.is_tensor(frac) else math.cos(math.pi * frac)
        decayed = (1.0 - self.alpha) * (0.5 * (1.0 + cos)) ** self.exponent + self.alpha
        return self.init_value * decayed


def cosine_decay(
    init_value: float, decay_steps: int, alpha: float = 0.0, exponent: float = 1.0
) -> _Cosine:
    """Cosine decay (Loshchilov & Hutter, SGDR) from ``init_value`` to ``alpha * init_value``.

    ``init_value * ((1 - alpha) * (0.5 * (1 + cos(pi * t / decay_steps)))^exponent + alpha)``,
    constant after ``decay_steps``.

    Examples:
        >>> s = cosine_decay(1.0, decay_steps=2)
        >>> [round(s(t), 6) for t in range(4)]
        [1.0, 0.5, 0.0, 0.0]
    """
    _is_finite("init_value", init_value)
    decay_steps = _is_int("decay_steps", decay_steps, 1)
    check.closed_unit_interval("alpha", alpha)
    check.positive("exponent", exponent)
    return _Cosine(init_value, decay_steps, alpha, exponent)


@dataclasses.dataclass(eq=False, repr=False)
class _WarmupCosine(_Schedule):
    init_value: float
    peak_value: float
    warmup_steps: int
    decay_steps: int
    end_value: float
    exponent: float

    def __call__(self, count: Any) -> Any:
        cos_steps = self.decay_steps - self.warmup_steps
        t = _clip(count - self.warmup_steps, 0, cos_steps)
        frac = t / cos_steps
        cos = torch.cos(math.pi * frac) if torch.is_tensor(frac) else math.cos(math.pi * frac)
        decay = (self.peak_value - self.end_value) * (0.5 * (1 + cos)) ** self.exponent
        cosine = self.end_value + decay
        if self.warmup_steps == 0:
            return cosine
        w = _clip(count, 0, self.warmup_steps) / self.warmup_steps
        warm = self.init_value + (self.peak_value - self.init_value) * w
        if torch.is_tensor(count):
            return torch.where(count < self.warmup_steps, warm, cosine)
        return warm if count < self.warmup_steps else cosine


def warmup_cosine_decay(
    init_value: float,
    peak_value: float,
    warmup_steps: int,
    decay_steps: int,
    end_value: float = 0.0,
    exponent: float = 1.0,
) -> _WarmupCosine:
    """Linear warm-up from ``init_value`` to ``peak_value``, then cosine decay to ``end_value``.

    ``decay_steps`` counts the warm-up steps too (Optax's convention): the value reaches
    ``end_value`` at step ``decay_steps``.

    Examples:
        >>> s = warmup_cosine_decay(0.0, 1.0, warmup_steps=2, decay_steps=4)
        >>> [round(s(t), 6) for t in range(6)]
        [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    """
    _is_finite("init_value", init_value)
    _is_finite("peak_value", peak_value)
    _is_finite("end_value", end_value)
    warmup_steps = _is_int("warmup_steps", warmup_steps, 0)
    decay_steps = _is_int("decay_steps", decay_steps, 1)
    if decay_steps <= warmup_steps:
        raise ValueError(
            f"Invalid value for 'decay_steps': {decay_steps} (expected > warmup_steps="
            f"{warmup_steps}; decay_steps includes the warm-up)"
        )
    check.positive("exponent", exponent)
    return _WarmupCosine(init_value, peak_value, warmup_steps, decay_steps, end_value, exponent)


_public_name = {
    "_Polynomial": "polynomial_schedule",
    "_Exponential": "exponential_decay",
    "_Cosine": "cosine_decay",
    "_WarmupCosine": "warmup_cosine_decay",
}
