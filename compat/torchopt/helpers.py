"""The ``helpers`` module TorchOpt 0.7.3's tests import, written for difopt's compatibility run.

TorchOpt's sdist ships its tests without this module, so this is difopt's own implementation
of the interface those tests call (names and signatures only): a small classifier with
BatchNorm and parameters the loss never uses, a deterministic data loader, parametrization
that runs the full grid in the first dtype only, and tolerant tree comparisons.
"""

from __future__ import annotations

import copy
import itertools
import random
from typing import Any, Iterable

import numpy as np
import pytest
import torch
import torchopt  # difopt, through conftest.py's alias
from torch import nn
from torch.utils import data

NUM_UPDATES = 5
BATCH_SIZE = 32
MODEL_NUM_INPUTS = 28
MODEL_HIDDEN_SIZE = 16
MODEL_NUM_CLASSES = 10


def parametrize(**grid: list[Any]) -> pytest.MarkDecorator:
    """``pytest.mark.parametrize`` over the product of ``grid``.

    The full product runs for the first ``dtype`` only; every other dtype runs with the
    first combination of the other arguments (the grid is large and dtype-independent).
    """
    names = list(grid)
    if "dtype" in grid:
        names.remove("dtype")
        names.insert(0, "dtype")
    dtypes = grid.get("dtype", [None])
    others = [grid[n] for n in names if n != "dtype"]
    combos = list(itertools.product(*others))
    if "dtype" in grid:
        cases = [(dtypes[0], *c) for c in combos] + [(d, *combos[0]) for d in dtypes[1:]]
    else:
        cases = combos
    ids = ["-".join(f"{n}({v})" for n, v in zip(names, case)) for case in cases]
    return pytest.mark.parametrize(names, cases, ids=ids)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def dtype_torch2numpy(dtype: torch.dtype) -> np.dtype:
    return torch.empty((), dtype=dtype).numpy().dtype


def dtype_numpy2torch(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty((), dtype=dtype)).dtype


class _WithUnused(nn.Module):
    """A linear layer next to a parameter and a sub-module that no loss depends on."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.idle = nn.Linear(2, 2, bias=False)
        self.idle_scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


@torch.no_grad()
def get_model() -> nn.Module:
    return nn.Sequential(
        _WithUnused(MODEL_NUM_INPUTS, MODEL_HIDDEN_SIZE),
        nn.BatchNorm1d(MODEL_HIDDEN_SIZE),
        nn.ReLU(),
        nn.Linear(MODEL_HIDDEN_SIZE, MODEL_HIDDEN_SIZE),
        nn.BatchNorm1d(MODEL_HIDDEN_SIZE),
        nn.ReLU(),
        nn.Linear(MODEL_HIDDEN_SIZE, MODEL_NUM_CLASSES, bias=False),
        nn.Softmax(dim=-1),
    )


@torch.no_grad()
def get_models(
    device: Any = None, dtype: torch.dtype = torch.float32
) -> tuple[nn.Module, nn.Module, nn.Module, data.DataLoader]:
    """Three identical models (to train, reference, initial) and a fixed loader."""
    seed_everything(0)
    base = get_model().to(dtype=dtype)
    for name, p in base.named_parameters():
        if p.ndim >= 2:
            nn.init.orthogonal_(p)
        elif name.endswith("bias"):
            p.normal_(0.0, 0.1)
    if device is not None:
        base = base.to(torch.device(device))
    gen = torch.Generator().manual_seed(1)
    n = BATCH_SIZE * NUM_UPDATES
    dataset = data.TensorDataset(
        torch.rand(n, MODEL_NUM_INPUTS, generator=gen),
        torch.randint(0, MODEL_NUM_CLASSES, (n,), generator=gen),
    )
    loader = data.DataLoader(dataset, BATCH_SIZE, shuffle=False)
    return copy.deepcopy(base), copy.deepcopy(base), base, loader


def _tolerances(x: torch.Tensor, rtol: float | None, atol: float | None) -> tuple[float, float]:
    if rtol is not None and atol is not None:
        return rtol, atol
    # torch.testing's defaults for the dtype, widened by a factor 10 per update: the two
    # sides run the same arithmetic in different orders (foreach vs per-tensor kernels).
    defaults = {torch.float64: (1e-7, 1e-7), torch.float32: (1.3e-6, 1e-5)}
    base_rtol, base_atol = defaults.get(x.dtype, (1e-3, 1e-5))
    factor = 10 * NUM_UPDATES
    return (rtol if rtol is not None else base_rtol * factor), (
        atol if atol is not None else base_atol * factor
    )


@torch.no_grad()
def assert_all_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    base: torch.Tensor | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    equal_nan: bool = False,
) -> None:
    """Close as changes from ``base`` when given (so a shared start does not mask a drift)."""
    if base is not None:
        actual, expected = actual - base, expected - base
    rtol, atol = _tolerances(expected, rtol, atol)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, equal_nan=equal_nan)


@torch.no_grad()
def assert_model_all_close(
    model: nn.Module | tuple[Iterable[torch.Tensor], Iterable[torch.Tensor]],
    model_ref: nn.Module,
    model_base: nn.Module,
    dtype: torch.dtype = torch.float32,
    rtol: float | None = None,
    atol: float | None = None,
    equal_nan: bool = False,
) -> None:
    params, buffers = model if isinstance(model, tuple) else (model.parameters(), model.buffers())
    params, buffers = list(params), list(buffers)
    assert len(params) == len(list(model_ref.parameters()))
    for p, q, b in zip(params, model_ref.parameters(), model_base.parameters()):
        assert_all_close(p, q, base=b, rtol=rtol, atol=atol, equal_nan=equal_nan)
    for p, q, b in zip(buffers, model_ref.buffers(), model_base.buffers()):
        p, q, b = (t if t.is_floating_point() else t.to(dtype) for t in (p, q, b))
        assert_all_close(p, q, base=b, rtol=rtol, atol=atol, equal_nan=equal_nan)


@torch.no_grad()
def assert_pytree_all_close(
    actual: Any,
    expected: Any,
    base: Any = None,
    rtol: float | None = None,
    atol: float | None = None,
    equal_nan: bool = False,
) -> None:
    a_leaves, a_spec = torchopt.pytree.tree_flatten(actual)
    e_leaves, e_spec = torchopt.pytree.tree_flatten(expected)
    assert a_spec == e_spec, (a_spec, e_spec)
    b_leaves = [None] * len(a_leaves) if base is None else torchopt.pytree.tree_leaves(base)
    for a, e, b in zip(a_leaves, e_leaves, b_leaves):
        assert_all_close(a, e, base=b, rtol=rtol, atol=atol, equal_nan=equal_nan)
