"""Shared test helpers: a small float64 MLP problem used across the table-driven tests.

(The tests directory is on ``pythonpath`` through the package's pytest settings.)
"""

from __future__ import annotations

import torch


def make_mlp(seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 6),
        torch.nn.Tanh(),
        torch.nn.Linear(6, 3),
        torch.nn.Tanh(),
        torch.nn.Linear(3, 1),
    ).to(dtype)


def make_data(
    seed: int = 1, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 4, generator=g, dtype=dtype)
    y = torch.randn(16, 1, generator=g, dtype=dtype)
    return x, y


def mse(module: torch.nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = data
    return ((module(x) - y) ** 2).mean()


def max_rel_err(xs, ys) -> float:
    return max(((x - y).abs() / y.abs().clamp_min(1e-12)).max().item() for x, y in zip(xs, ys))
