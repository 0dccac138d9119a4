"""Problems shared by the CPU and CUDA tests: option tables, an unrolled meta-loss."""

from __future__ import annotations

from typing import Any, Callable

import torch

import difopt

# alias, options: every option of the parity table.
OPTIONS: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
    "adam": (difopt.adam, {}),
    "eps_root": (difopt.adam, {"eps_root": 1e-6}),
    "maximize": (difopt.adam, {"maximize": True}),
    "weight_decay": (difopt.adam, {"weight_decay": 0.1}),
    "adamw": (difopt.adamw, {"weight_decay": 0.1}),
    "betas": (difopt.adam, {"betas": (0.5, 0.9), "eps": 1e-6}),
}
SHAPES = [(16, 8), (8,), (3, 5, 2), ()]
STEPS = 50
TOL = {"rtol": 1e-6, "atol": 1e-6}


def grads_sequence(device: str, dtype: torch.dtype, steps: int = STEPS) -> list[list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [
        [torch.randn(s, generator=gen, dtype=dtype).to(device) for s in SHAPES]
        for _ in range(steps)
    ]


def initial_params(device: str, dtype: torch.dtype) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    return [torch.randn(s, generator=gen, dtype=dtype).to(device) for s in SHAPES]


def leaves(tree: Any) -> list[torch.Tensor]:
    return difopt.pytree.tree_leaves(tree, namespace=difopt.pytree.NAMESPACE)


def assert_trees_close(a: Any, b: Any, **tol: float) -> None:
    la, lb = leaves(a), leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        torch.testing.assert_close(x, y, **(tol or TOL))


def meta_loss_fn(
    make_step: Callable[..., Any], device: str, eps_root: float
) -> tuple[Callable[..., torch.Tensor], tuple[torch.Tensor, ...]]:
    """``f(w, b, z)``: the outer loss after 3 unrolled steps of ``make_step`` (float64).

    ``z`` has an exactly-zero inner gradient (a ReLU that stays off), so its second moment
    stays 0, the case where sqrt's derivative needs the zero subgradient (eps_root=0).
    ``make_step(params, grads, state, t) -> (params, state)`` takes one differentiable step.
    """
    gen = torch.Generator().manual_seed(3)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(device)

    x, xq = rand(5, 3), rand(4, 3)
    inputs = (rand(3, 2).requires_grad_(), rand(2).requires_grad_(), rand(3).requires_grad_())

    def inner(w: torch.Tensor, b: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(x @ w + b) ** 2).sum() + torch.relu(z - 10.0).sum()

    def f(w: torch.Tensor, b: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        params: tuple[torch.Tensor, ...] = (w, b, z)
        state = None
        for t in range(3):
            grads = torch.autograd.grad(inner(*params), params, create_graph=True)
            params, state = make_step(params, grads, state, t)
        w3, b3, z3 = params
        return torch.sin(xq @ w3 + b3).sum() + (z3**2).sum()

    return f, inputs
