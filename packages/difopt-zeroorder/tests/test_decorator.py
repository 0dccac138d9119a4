"""The zero_order decorator: semantics, pytrees, seeding, vectorization, non-smooth objectives."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F

from difopt_zeroorder import METHODS, zero_order

NORMAL = torch.distributions.Normal(0.0, 1.0)


def grad_of(fn: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
    (grad,) = torch.autograd.grad(fn(*args), args[0])
    return grad


@pytest.mark.parametrize("method", METHODS)
def test_value_is_the_function_value(method: str) -> None:
    def f(x: torch.Tensor) -> torch.Tensor:
        return (x**3).sum()

    x = torch.tensor([1.0, 2.0], requires_grad=True)
    out = zero_order(NORMAL, method)(f)(x)
    assert out.grad_fn is not None
    torch.testing.assert_close(out, f(x.detach()))


def test_the_same_seed_gives_the_same_estimate_and_keeps_global_rng() -> None:
    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x).sum()

    x = torch.randn(4, requires_grad=True)
    before = torch.get_rng_state()
    first = [grad_of(zero_order(NORMAL, num_samples=8, generator=5)(f), x) for _ in range(2)]
    decorated = zero_order(NORMAL, num_samples=8, generator=5)(f)
    stream = [grad_of(decorated, x) for _ in range(2)]
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(first[0], first[1])  # a fresh decorator restarts the stream
    assert torch.equal(stream[0], first[0])
    assert not torch.equal(stream[1], stream[0])  # ... and a used one advances it
    other = grad_of(zero_order(NORMAL, num_samples=8, generator=6)(f), x)
    assert not torch.equal(other, first[0])


def test_a_torch_generator_is_advanced_and_reproducible() -> None:
    def f(x: torch.Tensor) -> torch.Tensor:
        return (x**2).sum()

    x = torch.randn(3, requires_grad=True)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a = grad_of(zero_order(torch.randn, num_samples=4, generator=g1)(f), x)
    b = grad_of(zero_order(torch.randn, num_samples=4, generator=g2)(f), x)
    assert torch.equal(a, b)
    assert not torch.equal(g1.get_state(), torch.Generator().manual_seed(0).get_state())


def test_an_int_seed_matches_the_global_rng_seeded_the_same() -> None:
    """generator=s draws what torch.manual_seed(s) followed by the same draw would give."""

    def f(x: torch.Tensor) -> torch.Tensor:
        return (x**2).sum()

    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    seeded = grad_of(zero_order(torch.randn, num_samples=6, generator=9)(f), x)
    torch.manual_seed(9)
    unseeded = grad_of(zero_order(torch.randn, num_samples=6)(f), x)
    torch.testing.assert_close(seeded, unseeded)


@pytest.mark.parametrize("method", METHODS)
def test_vectorized_and_loop_evaluation_agree(method: str) -> None:
    def f(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ params["w"] + params["b"]).pow(2).mean()

    params = {"w": torch.randn(3, 2, requires_grad=True), "b": torch.zeros(2, requires_grad=True)}
    x = torch.randn(7, 3)
    grads = []
    for vectorize, chunk in [(False, None), (True, None), (True, 5)]:
        g = zero_order(
            NORMAL,
            method,
            num_samples=16,
            sigma=0.1,
            generator=1,
            vectorize=vectorize,
            chunk_size=chunk,
        )(f)
        grads.append(torch.autograd.grad(g(params, x), [params["w"], params["b"]]))
    for other in grads[1:]:
        for a, b in zip(grads[0], other):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_forward_method_subtracts_the_baseline() -> None:
    """On a constant function the forward estimate is exactly zero; the naive one is not."""

    def f(x: torch.Tensor) -> torch.Tensor:
        return x.sum() * 0 + 3.0

    x = torch.ones(4, requires_grad=True)
    assert torch.equal(grad_of(zero_order(NORMAL, "forward", generator=0)(f), x), torch.zeros(4))
    assert grad_of(zero_order(NORMAL, "naive", generator=0)(f), x).abs().sum() > 0


def test_pytrees_argnums_kwargs_and_non_tensor_arguments() -> None:
    """Several argnums (pytrees), a callable argument, keyword tensors passed through."""

    def model(params: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return x @ params[0] + params[1]

    def f(
        params: tuple[torch.Tensor, torch.Tensor],
        fn: Callable[..., torch.Tensor],
        extra: dict[str, torch.Tensor],
        x: torch.Tensor,
        *,
        y: torch.Tensor,
    ) -> torch.Tensor:
        return F.mse_loss(fn(params, x), y) + (extra["c"] ** 2).sum()

    w = torch.randn(3, 1, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    c = torch.ones(2, requires_grad=True)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    wrapped = zero_order(
        NORMAL,
        "antithetic",
        argnums=(0, 2),
        num_samples=4000,
        sigma=0.01,
        generator=0,
        vectorize=True,
    )(f)
    loss = wrapped((w, b), model, {"c": c}, x, y=y)
    gw, gb, gc = torch.autograd.grad(loss, [w, b, c])
    ew, eb, ec = torch.autograd.grad(f((w, b), model, {"c": c}, x, y=y), [w, b, c])
    for got, exact in [(gw, ew), (gb, eb), (gc, ec)]:
        # Antithetic error ~ sqrt((d+1)/n) |g| with d = 6 here: well under 15 %.
        assert (got - exact).norm() <= 0.15 * exact.norm() + 1e-3


def test_arguments_outside_argnums_get_no_gradient() -> None:
    def f(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x * y).sum()

    x, y = torch.ones(2, requires_grad=True), torch.ones(2, requires_grad=True)
    gx, gy = torch.autograd.grad(zero_order(NORMAL, argnums=0)(f)(x, y), [x, y], allow_unused=True)
    assert gx is not None and gy is None
    gx, gy = torch.autograd.grad(zero_order(NORMAL, argnums=-1)(f)(x, y), [x, y], allow_unused=True)
    assert gx is None and gy is not None


def test_backward_accumulates_into_grad_and_scales_with_the_upstream_gradient() -> None:
    def f(x: torch.Tensor) -> torch.Tensor:
        return (x**2).sum()

    x = torch.tensor([1.0, -1.0], requires_grad=True)
    single = grad_of(zero_order(NORMAL, num_samples=4, generator=2)(f), x)
    (3.0 * zero_order(NORMAL, num_samples=4, generator=2)(f)(x)).backward()
    torch.testing.assert_close(x.grad, 3.0 * single)


def test_modifying_a_saved_argument_in_place_before_backward_is_caught() -> None:
    def f(x: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
        return (x * data).sum()

    x, data = torch.ones(2, requires_grad=True), torch.ones(2)
    out = zero_order(NORMAL)(f)(x, data)
    data.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.backward()


def test_a_non_differentiable_objective_is_halved_by_200_es_steps() -> None:
    """Rounding makes autograd's gradient zero everywhere; ES still finds a descent direction."""
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(10, generator=gen) * 3

    def staircase(theta: torch.Tensor) -> torch.Tensor:
        return ((torch.round(theta * 2) / 2 - target) ** 2).sum()

    theta0 = torch.zeros(10, requires_grad=True)
    (autograd_grad,) = torch.autograd.grad(staircase(theta0), theta0)
    assert torch.equal(autograd_grad, torch.zeros(10))

    f = zero_order(NORMAL, "antithetic", num_samples=10, sigma=0.5, generator=0, vectorize=True)(
        staircase
    )
    theta = theta0.detach().clone().requires_grad_()
    start = float(staircase(theta.detach()))
    for _ in range(200):
        (grad,) = torch.autograd.grad(f(theta), theta)
        with torch.no_grad():
            theta -= 0.05 * grad
    end = float(staircase(theta.detach()))
    assert end <= 0.5 * start, (start, end)


def test_training_with_a_difopt_optimizer() -> None:
    """TorchOpt's usage pattern: functional optimizer on a tuple of parameters."""
    import difopt

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=gen)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])

    @difopt.diff.zero_order(NORMAL, "forward", argnums=0, num_samples=32, sigma=0.05, generator=0)
    def loss_fn(
        params: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        return F.mse_loss(x @ params[0] + params[1], y)

    params = (torch.zeros(4, 1, requires_grad=True), torch.zeros(1, requires_grad=True))
    optimizer = difopt.adam(lr=0.05)
    state = optimizer.init(params)
    first = float(loss_fn(params, x, y).detach())
    for _ in range(150):
        grads = torch.autograd.grad(loss_fn(params, x, y), params)
        updates, state = optimizer.update(grads, state, inplace=False)
        params = difopt.apply_updates(params, updates, inplace=False)
    assert float(loss_fn(params, x, y).detach()) < 0.05 * first
