"""Checkpoint policies: where an unroll stores snapshots of its inner state.

A *snapshot* is what it takes to restart the inner loop at a step: the parameters, the
optimizer state (moments, counters) and the random-number-generator state. A policy decides,
for a range of ``length`` steps that may hold ``slots`` snapshots at once (the one at the
range's start included), where to store the next one; the unroll engine
(:func:`difopt_unroll.unroll`) executes that recursively:

- :class:`NoCheckpoint` (``"none"``): the plain unroll, every step on the autograd graph.
- :class:`Every` (``Every(k)``): a snapshot every ``k`` steps; the backward recomputes one
  segment of ``k`` steps at a time on the graph.
- :class:`Sqrt` (``"sqrt"``): ``Every(ceil(sqrt(K)))``: O(sqrt K) snapshots and taped steps,
  one extra forward pass.
- :class:`Binomial` (``"binomial"`` with ``budget=``, or ``Binomial(budget)``): Griewank and
  Walther's binomial checkpointing (Revolve): at most ``budget`` snapshots, one taped step at a
  time, and the fewest recomputed steps any schedule with that many snapshots can achieve,
  :func:`revolve_recomputations`.

References:
    A. Griewank and A. Walther, "Algorithm 799: Revolve: an implementation of checkpointing
    for the reverse or adjoint mode of computational differentiation", ACM TOMS 26(1), 2000.
"""

from __future__ import annotations

import dataclasses
import functools
import math

__all__ = [
    "POLICY_NAMES",
    "Binomial",
    "Every",
    "NoCheckpoint",
    "Policy",
    "Sqrt",
    "make_policy",
    "revolve_recomputations",
]

POLICY_NAMES = ("binomial", "none", "sqrt")
"""The policies that can be named by a string (``Every(k)`` takes its period)."""


class Policy:
    """Base class of checkpoint policies; see the module docstring."""

    def slots(self, num_steps: int) -> int:
        """How many snapshots the policy may hold at once for ``num_steps`` steps (an int
        >= 0)."""
        raise NotImplementedError

    def split(self, length: int, slots: int) -> int | None:
        """Where to store the next snapshot in a range of ``length`` steps with ``slots``
        snapshots, as an offset in ``[1, length - 1]``; ``None`` records the whole range on
        the autograd graph at once. It may return an offset only while ``slots >= 1`` (each
        snapshot takes one); the unroll raises ``ValueError`` naming ``policy`` otherwise."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class NoCheckpoint(Policy):
    """The plain unroll: every step stays on the autograd graph (memory grows with K)."""

    def slots(self, num_steps: int) -> int:
        return 0

    def split(self, length: int, slots: int) -> int | None:
        return None


@dataclasses.dataclass(frozen=True)
class Every(Policy):
    """A snapshot every ``k`` steps; the backward records ``k`` steps at a time.

    Memory: ``ceil(K / k)`` snapshots and ``k`` recorded steps; one extra forward pass.
    """

    k: int

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"Every(k): 'k' must be an int >= 1, got {self.k!r}")

    def slots(self, num_steps: int) -> int:
        return -(-num_steps // self.k)

    def split(self, length: int, slots: int) -> int | None:
        return self.k if length > self.k else None


@dataclasses.dataclass(frozen=True)
class Sqrt(Policy):
    """``Every(ceil(sqrt(K)))``: O(sqrt K) memory for one extra forward pass."""

    def period(self, num_steps: int) -> int:
        return max(1, math.isqrt(num_steps - 1) + 1) if num_steps > 1 else 1

    def slots(self, num_steps: int) -> int:
        return Every(self.period(num_steps)).slots(num_steps)

    def split(self, length: int, slots: int) -> int | None:  # pragma: no cover - resolved
        raise RuntimeError("Sqrt is resolved to Every(ceil(sqrt(K))) before it runs")


@dataclasses.dataclass(frozen=True)
class Binomial(Policy):
    """Binomial checkpointing (Revolve) with at most ``budget`` snapshots held at once.

    The snapshot of the initial state counts as one. One step is on the autograd graph at a
    time. The number of recomputed steps is the minimum over all schedules with ``budget``
    snapshots, :func:`revolve_recomputations`.
    """

    budget: int

    def __post_init__(self) -> None:
        if isinstance(self.budget, bool) or not isinstance(self.budget, int) or self.budget < 1:
            raise ValueError(f"'budget' must be an int >= 1 (stored steps), got {self.budget!r}")

    def slots(self, num_steps: int) -> int:
        return self.budget

    def split(self, length: int, slots: int) -> int | None:
        if length <= 1:
            return None
        if slots < 1:
            raise RuntimeError("difopt_unroll internal error: a binomial range without slots")
        return _binomial_split(length, slots)


def _beta(c: int, r: int) -> int:
    """``binomial(c + r, c)``: the most steps ``c`` snapshots reverse with ``r`` sweeps."""
    return math.comb(c + r, c) if r >= 0 and c >= 0 else 0


def revolve_recomputations(num_steps: int, budget: int) -> int:
    """The fewest steps recomputed without the graph to reverse ``num_steps`` steps with
    ``budget`` snapshots (the initial state's included) and one recorded step at a time.

    Griewank and Walther's closed form ``t = r l - binomial(c + r, r - 1)`` for ``l`` steps and
    ``c`` snapshots, where ``r`` is the repetition number with
    ``binomial(c + r - 1, c) < l <= binomial(c + r, c)``. It counts every forward step taken
    without recording, the first sweep to step ``l - 1`` included; each step is also recorded
    once.

    Examples:
        >>> revolve_recomputations(10, 1)  # one snapshot: 9 + 8 + ... + 1
        45
        >>> revolve_recomputations(10, 9)  # enough snapshots: one sweep
        9
    """
    if num_steps < 1 or budget < 1:
        raise ValueError("revolve_recomputations() needs num_steps >= 1 and budget >= 1")
    r = 0
    while _beta(budget, r) < num_steps:
        r += 1
    return r * num_steps - _beta(budget + 1, r - 1)


@functools.lru_cache(maxsize=65536)
def _binomial_split(length: int, slots: int) -> int:
    """The offset of the next snapshot that minimises the recomputations (convex in it)."""
    if slots == 1:
        return length - 1  # one snapshot: the state before the last step stays live

    def cost(m: int) -> int:
        right = revolve_recomputations(length - m, slots - 1) if length - m > 1 else 0
        return m + revolve_recomputations(m, slots) + right

    # cost is convex in m (a sum of convex piecewise-linear functions): find the first m whose
    # right difference is >= 0 by bisection.
    lo, hi = 1, length - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if cost(mid + 1) - cost(mid) >= 0:
            hi = mid
        else:
            lo = mid + 1
    return lo


def make_policy(policy: Policy | str | None, budget: int | None) -> Policy:
    """Resolve the ``policy`` and ``budget`` arguments of the unroll functions.

    ``policy=None`` means ``Binomial(budget)`` when a budget is given, else ``Sqrt()``.
    """
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise ValueError(f"'budget' must be an int >= 1 (stored steps), got {budget!r}")
    if policy is None:
        return Binomial(budget) if budget is not None else Sqrt()
    if isinstance(policy, str):
        if policy not in POLICY_NAMES:
            raise ValueError(
                f"'policy' must be one of {', '.join(map(repr, POLICY_NAMES))} or a "
                f"difopt_unroll.Policy (e.g. Every(k)), got {policy!r}"
            )
        if policy == "binomial":
            if budget is None:
                raise ValueError("policy='binomial' needs 'budget' (stored steps, an int >= 1)")
            return Binomial(budget)
        resolved: Policy = NoCheckpoint() if policy == "none" else Sqrt()
    elif isinstance(policy, Policy):
        resolved = policy
    else:
        raise ValueError(
            f"'policy' must be one of {', '.join(map(repr, POLICY_NAMES))} or a "
            f"difopt_unroll.Policy, got {type(policy).__name__}"
        )
    if budget is not None and not isinstance(resolved, Binomial):
        raise ValueError(
            f"'budget' applies to the binomial policy only; got budget={budget} with "
            f"policy={policy!r}"
        )
    if isinstance(resolved, Binomial) and budget is not None and budget != resolved.budget:
        raise ValueError(f"'budget'={budget} contradicts policy={policy!r}")
    return resolved
