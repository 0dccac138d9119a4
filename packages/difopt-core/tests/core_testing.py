"""Shared test helpers: a small float64 MLP problem used across the table-driven tests.

(The tests directory is on ``pythonpath`` through the package's pytest settings.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

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


def run_python(
    *args: str,
    cwd: Any = None,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``python *args`` in a fresh interpreter (this one's executable), capturing text.

    For what one process cannot show: what an import loads, an import hook, a command line.
    ``env`` entries are added to this process' environment. With ``check`` a nonzero exit fails
    the calling test with the program's output.
    """
    done = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"python {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
    return done
