"""Checkpoint schedules: the binomial policy recomputes exactly Revolve's minimal number of
steps, and no policy holds more snapshots or recorded steps than it promises."""

from __future__ import annotations

import functools
import math
from typing import Any

import pytest
import torch

import difopt_unroll
from difopt_unroll import Binomial, Every, revolve_recomputations


@functools.lru_cache(maxsize=None)
def fewest_recomputations(length: int, slots: int) -> float:
    """Brute-force dynamic programme over every schedule: reverse ``length`` steps whose
    start is stored, with ``slots`` snapshots (that one included) and one recorded step at a
    time; the cost is the number of steps run without recording."""
    if length == 1:
        return 0
    if slots == 0:
        return math.inf
    return min(
        m + fewest_recomputations(length - m, slots - 1) + fewest_recomputations(m, slots)
        for m in range(1, length)
    )


@pytest.mark.parametrize("slots", range(1, 7))
def test_closed_form_is_the_brute_force_minimum(slots: int) -> None:
    for length in range(1, 60):
        assert revolve_recomputations(length, slots) == fewest_recomputations(length, slots)


# (steps, snapshots) -> recomputed steps, worked out by hand from Griewank & Walther's formula
# t = r l - binomial(c + r, r - 1), binomial(c + r - 1, c) < l <= binomial(c + r, c).
KNOWN = {
    (1, 1): 0,
    (2, 1): 1,
    (5, 1): 10,
    (10, 1): 45,
    (3, 2): 2,
    (4, 2): 4,
    (6, 2): 8,
    (10, 2): 20,
    (10, 3): 15,
    (10, 9): 9,
    (50, 3): 180,
    (50, 6): 114,
    (1000, 10): 3636,
}


@pytest.mark.parametrize(("steps", "snapshots"), sorted(KNOWN))
def test_known_revolve_counts(steps: int, snapshots: int) -> None:
    assert revolve_recomputations(steps, snapshots) == KNOWN[(steps, snapshots)]


def _toy_unroll(num_steps: int, **kwargs: Any) -> tuple[list[Any], difopt_unroll.UnrollStats, int]:
    """A cheap scalar inner loop; returns the meta-gradients, the stats after backward and
    the number of times the step ran (counted by the step itself)."""
    w0 = torch.tensor([1.0, -0.5], dtype=torch.float64, requires_grad=True)
    lr = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    calls = [0]

    def step(w: torch.Tensor, state: Any, k: int) -> tuple[torch.Tensor, Any, torch.Tensor]:
        calls[0] += 1
        loss = (torch.sin(w + 0.1 * k) ** 2).sum()
        (g,) = difopt_unroll.inner_grad(loss, (w,))
        return w - lr * g, state, loss

    out = difopt_unroll.unroll(step, w0, (), num_steps, meta_params=lr, **kwargs)
    meta = (out.params**2).sum() + out.losses.sum()
    return list(torch.autograd.grad(meta, [w0, lr])), out.stats, calls[0]


def _plain_toy_loop(num_steps: int) -> list[Any]:
    """The same inner loop written out by hand: the oracle of the meta-gradients."""
    w0 = torch.tensor([1.0, -0.5], dtype=torch.float64, requires_grad=True)
    lr = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    w, losses = w0, []
    for k in range(num_steps):
        loss = (torch.sin(w + 0.1 * k) ** 2).sum()
        (g,) = torch.autograd.grad(loss, w, create_graph=True)
        w = w - lr * g
        losses.append(loss)
    return list(torch.autograd.grad((w**2).sum() + torch.stack(losses).sum(), [w0, lr]))


@pytest.mark.parametrize("budget", [1, 2, 3, 5])
def test_binomial_schedule_executes_the_revolve_count(budget: int) -> None:
    for num_steps in [1, 2, 3, 7, 10, 21, 33]:
        want = _plain_toy_loop(num_steps)
        got, stats, calls = _toy_unroll(num_steps, policy=Binomial(budget))
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-14)
        # Each step recorded once, plus the brute-force minimum of steps run without it.
        assert calls == num_steps + fewest_recomputations(num_steps, budget)
        assert stats.steps_advanced + stats.steps_recorded == calls
        assert stats.steps_recorded == num_steps
        assert stats.peak_snapshots <= budget
        assert stats.peak_recorded == 1
        assert stats.snapshots == 0  # all freed after the backward


@pytest.mark.parametrize("k", [1, 3, 8, 40])
def test_every_k_bounds(k: int) -> None:
    num_steps = 40
    got, stats, calls = _toy_unroll(num_steps, policy=Every(k))
    for g, w in zip(got, _plain_toy_loop(num_steps)):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-14)
    assert stats.peak_snapshots <= -(-num_steps // k)
    assert stats.peak_recorded <= k
    last = num_steps - k * ((num_steps - 1) // k)  # the last segment is never recomputed
    assert calls == num_steps + (num_steps - last)  # one extra forward pass, at most
    assert stats.snapshots == 0


@pytest.mark.parametrize("num_steps", [1, 2, 50, 100, 101])
def test_sqrt_bounds(num_steps: int) -> None:
    _, stats, calls = _toy_unroll(num_steps, policy="sqrt")
    root = math.isqrt(num_steps - 1) + 1 if num_steps > 1 else 1
    assert stats.peak_snapshots <= root
    assert stats.peak_recorded <= root
    assert calls < 2 * num_steps


def test_none_keeps_every_step() -> None:
    _, stats, calls = _toy_unroll(30, policy="none")
    assert calls == 30
    assert (stats.steps_advanced, stats.steps_recorded, stats.peak_recorded) == (0, 30, 30)
    assert stats.peak_snapshots == 0


@pytest.mark.parametrize("kwargs", [{"budget": 2}, {"policy": "sqrt"}, {"policy": Every(5)}])
def test_second_backward_recomputes_the_same_gradients(kwargs: dict[str, Any]) -> None:
    """Both backwards through one result (retain_graph) equal the plain unroll's."""
    w0 = torch.tensor([1.0, -0.5], dtype=torch.float64, requires_grad=True)

    def step(w: torch.Tensor, state: Any, k: int) -> tuple[torch.Tensor, Any]:
        (g,) = difopt_unroll.inner_grad(torch.sin(w).pow(2).sum(), (w,))
        return w - 0.1 * g, state

    plain = difopt_unroll.unroll(step, w0, (), 12, policy="none")
    (want,) = torch.autograd.grad(plain.params.pow(2).sum(), w0)
    out = difopt_unroll.unroll(step, w0, (), 12, **kwargs)
    meta = out.params.pow(2).sum()
    (first,) = torch.autograd.grad(meta, w0, retain_graph=True)
    (second,) = torch.autograd.grad(meta, w0)
    torch.testing.assert_close(first, want, rtol=1e-12, atol=0)
    torch.testing.assert_close(second, want, rtol=1e-12, atol=0)
