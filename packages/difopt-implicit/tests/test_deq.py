"""DEQ: gradients reach the module's parameters; torch.compile and torch.func.vmap."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import difopt_implicit as di

DT = torch.float64


class Cell(nn.Module):
    def __init__(self, n: int = 4) -> None:
        super().__init__()
        self.lin = nn.Linear(n, n, dtype=DT)
        with torch.no_grad():
            self.lin.weight.mul_(0.5)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.lin(z) + x)


def hand_unrolled(cell: Cell, x: torch.Tensor, iters: int = 200) -> torch.Tensor:
    z = torch.zeros_like(x)
    for _ in range(iters):
        z = cell(z, x)
    return z


@pytest.mark.parametrize("solver", ["picard", "anderson", "broyden", "newton"])
def test_deq_gradients_equal_the_hand_unrolled_oracle(solver: str) -> None:
    cell = Cell()
    x = torch.randn(3, 4, dtype=DT, requires_grad=True)
    layer = di.DEQ(cell, solver=solver, tol=1e-12, max_iter=300)
    z = layer(torch.zeros(3, 4, dtype=DT), x)
    assert layer.info is not None and layer.info.converged.shape == (3,)
    assert bool(layer.info.converged.all())
    params = [cell.lin.weight, cell.lin.bias, x]
    got = torch.autograd.grad((z * z).sum(), params)
    want = torch.autograd.grad((hand_unrolled(cell, x) ** 2).sum(), params)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-8, atol=1e-11)


class Model(nn.Module):
    def __init__(self, backward: str) -> None:
        super().__init__()
        self.enc = nn.Linear(4, 4, dtype=DT)
        self.deq = di.DEQ(Cell(), tol=1e-10, backward=backward)
        self.head = nn.Linear(4, 2, dtype=DT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.enc(x)
        return self.head(self.deq(torch.zeros_like(h), h))


@pytest.mark.parametrize("backward", ["implicit", "phantom", "jfb", "unrolled"])
def test_torch_compile_of_the_surrounding_model(backward: str) -> None:
    torch.compiler.reset()
    model = Model(backward)
    x = torch.randn(5, 4, dtype=DT)
    ref = model(x)
    ref.sum().backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]  # type: ignore[union-attr]
    model.zero_grad()
    compiled = torch.compile(model, backend="aot_eager")
    for _ in range(2):  # the second call reuses the compiled graphs
        out = compiled(x)
        out.sum().backward()
        grads = [p.grad.clone() for p in model.parameters()]  # type: ignore[union-attr]
        model.zero_grad()
        torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
        for g, w in zip(grads, ref_grads):
            torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("solver", ["picard", "anderson", "broyden"])
def test_vmap_forward_equals_the_batched_solve(solver: str) -> None:
    cell = Cell()
    xs = torch.randn(6, 4, dtype=DT) * torch.linspace(0.1, 3, 6, dtype=DT)[:, None]
    single = di.DEQ(cell, solver=solver, batched=False, tol=1e-11, max_iter=100)
    batch = di.DEQ(cell, solver=solver, tol=1e-11, max_iter=100)
    with torch.no_grad():
        zs = torch.func.vmap(lambda x: single(torch.zeros(4, dtype=DT), x))(xs)
        ref = batch(torch.zeros(6, 4, dtype=DT), xs)
    torch.testing.assert_close(zs, ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(ref, hand_unrolled(cell, xs).detach(), rtol=0, atol=1e-9)


@pytest.mark.parametrize("backward", ["jfb", "phantom", "unrolled"])
def test_vmap_of_grad_with_autograd_backwards(backward: str) -> None:
    cell = Cell()
    layer = di.DEQ(cell, solver="anderson", batched=False, tol=1e-11, backward=backward)
    xs = torch.randn(3, 4, dtype=DT)
    params = dict(layer.named_parameters())

    def loss(p: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(layer, p, (torch.zeros(4, dtype=DT), x)).sum()

    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, xs)
    for i in range(3):
        want = torch.autograd.grad(loss(params, xs[i]), list(params.values()))
        for name, w in zip(params, want):
            torch.testing.assert_close(per_sample[name][i], w, rtol=1e-8, atol=1e-10)


def test_implicit_inside_a_func_transform_is_a_clear_error() -> None:
    layer = di.DEQ(Cell(), batched=False)
    params = dict(layer.named_parameters())

    def loss(p: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(layer, p, (torch.zeros(4, dtype=DT), x)).sum()

    with pytest.raises(RuntimeError, match="backward='implicit' cannot run inside a torch.func"):
        torch.func.grad(loss)(params, torch.randn(4, dtype=DT))


def test_deq_validates_its_arguments() -> None:
    with pytest.raises(TypeError, match="'f' must be an nn.Module"):
        di.DEQ(lambda z, x: z)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'tol'"):
        di.DEQ(Cell(), tol=0.0)
    with pytest.raises(ValueError, match="'solver'"):
        di.DEQ(Cell(), solver="sgd")
    assert "anderson" in repr(di.DEQ(Cell()))
