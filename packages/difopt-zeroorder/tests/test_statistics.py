"""The estimators against the closed-form gradient of the Gaussian-smoothed quadratic.

Problem: ``f(theta) = ||A theta - b||^2`` in dimension ``d``, noise ``eps ~ N(0, I_d)``. With
``r = A theta - b``, ``g = 2 A^T r`` and ``H = 2 A^T A``, ``f(theta + sigma eps) = f0 +
sigma g.eps + sigma^2/2 eps^T H eps`` exactly, so the smoothed objective is ``f0 + sigma^2/2
tr(H)`` and its gradient is ``g``: the oracle.

Per-sample second moments (Isserlis' theorem; ``l = g.eps``, ``q = eps^T H eps``, ``s =
||eps||^2``; ``E s = d``, ``E l^2 s = (d+2)||g||^2``, ``E q s = (d+2) tr H``, ``E q^2 s =
(d+4)(tr(H)^2 + 2 tr(H^2))``, odd moments vanish):

* naive, ``X = f(theta + sigma eps) eps / sigma``:
  ``E||X||^2 = [f0^2 d + sigma^2 (d+2)||g||^2 + f0 sigma^2 (d+2) tr H
  + sigma^4/4 (d+4)(tr(H)^2 + 2 tr(H^2))] / sigma^2``;
* forward, ``X = (f(theta + sigma eps) - f0) eps / sigma``: the same with ``f0 = 0``;
* antithetic, ``X = (f(theta + sigma eps) - f(theta - sigma eps)) eps / (2 sigma) = (g.eps)
  eps``: ``E||X||^2 = (d+2)||g||^2``.

All three are unbiased (``E X = g``), so the total variance of one sample is ``V = E||X||^2 -
||g||^2`` and the mean of ``n`` samples has ``E||g_hat - g||^2 = V / n``. By Markov's
inequality ``P(||g_hat - g|| > k sqrt(V/n)) <= 1/k^2``; the tests use ``k = 4`` (a 1-in-16
event at worst, and in practice far rarer: ``||g_hat - g||^2 n / V`` is close to a chi-square
of ``d`` degrees of freedom divided by ``d``). Seeds are fixed, so the tests are deterministic.
"""

from __future__ import annotations

import math

import pytest
import torch

from difopt_zeroorder import zero_order

D = 5
SIGMA = 0.5
K_BOUND = 4.0


def problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    a = torch.randn(4, D, generator=g, dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    theta = torch.randn(D, generator=g, dtype=torch.float64)
    return a, b, theta


def objective(a: torch.Tensor, b: torch.Tensor) -> object:
    def f(theta: torch.Tensor) -> torch.Tensor:
        return ((a @ theta - b) ** 2).sum()

    return f


def oracle(a: torch.Tensor, b: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    return 2 * a.T @ (a @ theta - b)


def per_sample_variance(
    method: str, a: torch.Tensor, b: torch.Tensor, theta: torch.Tensor
) -> float:
    """``V = E||X||^2 - ||g||^2`` for one sample of ``method`` (see the module docstring)."""
    g = oracle(a, b, theta)
    h = 2 * a.T @ a
    g2, tr_h, tr_h2 = float(g @ g), float(torch.trace(h)), float(torch.trace(h @ h))
    s2 = SIGMA**2
    if method == "antithetic":
        second = (D + 2) * g2
    else:
        f0 = float(((a @ theta - b) ** 2).sum()) if method == "naive" else 0.0
        second = (
            f0**2 * D
            + s2 * (D + 2) * g2
            + f0 * s2 * (D + 2) * tr_h
            + s2**2 / 4 * (D + 4) * (tr_h**2 + 2 * tr_h2)
        ) / s2
    return second - g2


DISTRIBUTIONS = {
    "randn": torch.randn,  # a sample function, called with (num_samples, *leaf.shape)
    "Normal": torch.distributions.Normal(0.0, 1.0),  # drawn in place on the leaf
}


def estimate(
    method: str, num_samples: int, seed: int, distribution: str = "randn", vectorize: bool = True
) -> torch.Tensor:
    a, b, theta = problem()
    f = zero_order(
        DISTRIBUTIONS[distribution],
        method=method,
        num_samples=num_samples,
        sigma=SIGMA,
        generator=seed,
        vectorize=vectorize,
    )(objective(a, b))
    x = theta.clone().requires_grad_()
    (grad,) = torch.autograd.grad(f(x), x)
    return grad


@pytest.mark.parametrize("distribution", list(DISTRIBUTIONS))
@pytest.mark.parametrize("method", ["naive", "forward", "antithetic"])
@pytest.mark.parametrize("num_samples", [100, 1000, 10_000])
def test_estimate_converges_to_the_smoothed_gradient(
    method: str, num_samples: int, distribution: str
) -> None:
    a, b, theta = problem()
    exact = oracle(a, b, theta)
    bound = K_BOUND * math.sqrt(per_sample_variance(method, a, b, theta) / num_samples)
    error = float((estimate(method, num_samples, 7, distribution) - exact).norm())
    assert error <= bound, f"{method}, n={num_samples}: |error| {error:.4g} > bound {bound:.4g}"


@pytest.mark.parametrize("method", ["naive", "forward", "antithetic"])
def test_empirical_variance_matches_the_derived_variance(method: str) -> None:
    """The mean squared error over R independent estimates is ``V / n`` up to sampling noise.

    With R = 200 repetitions the relative standard deviation of the empirical mean of
    ``||g_hat - g||^2`` is below 0.3 for these (heavy-tailed at worst chi-square-like)
    quantities, so [0.5, 2] x the derived value is a loose, deterministic check.
    """
    a, b, theta = problem()
    exact = oracle(a, b, theta)
    n, repeats = 20, 200
    f = zero_order(torch.randn, method, num_samples=n, sigma=SIGMA, generator=3, vectorize=True)(
        objective(a, b)
    )
    x = theta.clone().requires_grad_()
    errors = [float((torch.autograd.grad(f(x), x)[0] - exact).pow(2).sum())]
    errors += [
        float((torch.autograd.grad(f(x), x)[0] - exact).pow(2).sum()) for _ in range(repeats - 1)
    ]
    empirical = sum(errors) / repeats
    derived = per_sample_variance(method, a, b, theta) / n
    assert 0.5 * derived <= empirical <= 2.0 * derived, (empirical, derived)


def test_antithetic_has_lower_variance_than_naive_for_the_same_budget() -> None:
    """Same number of function evaluations (antithetic uses two per draw) and the same seed."""
    a, b, theta = problem()
    exact = oracle(a, b, theta)
    evaluations, repeats = 40, 100

    def mse(method: str, num_samples: int) -> float:
        f = zero_order(
            torch.randn, method, num_samples=num_samples, sigma=SIGMA, generator=11, vectorize=True
        )(objective(a, b))
        x = theta.clone().requires_grad_()
        total = 0.0
        for _ in range(repeats):
            total += float((torch.autograd.grad(f(x), x)[0] - exact).pow(2).sum())
        return total / repeats

    naive = mse("naive", evaluations)
    antithetic = mse("antithetic", evaluations // 2)
    assert antithetic < naive, (antithetic, naive)
    # ... by the derived factor: 2 V_antithetic / V_naive (0.53 here), up to sampling noise.
    derived = (
        2
        * per_sample_variance("antithetic", a, b, theta)
        / per_sample_variance("naive", a, b, theta)
    )
    assert 0.5 * derived <= antithetic / naive <= 1.5 * derived, (antithetic / naive, derived)
