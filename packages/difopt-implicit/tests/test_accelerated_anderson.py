"""``Anderson(use_accelerated_op=True)``: each step without a graph is one call of
difopt-accel's fused kernel. Checked against closed forms (the fixed point and the implicit
gradient of an affine map), and where it cannot run, the pure step with a warning.

The nox sessions of difopt-implicit install difopt-accel beside it; without it the tests
that need the kernel are skipped.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import difopt_implicit as di
from difopt import registry

DT = torch.float64


def affine(batch: int = 4, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(n, n, dtype=DT, generator=gen)
    A = 0.9 * A / torch.linalg.matrix_norm(A, 2)  # a contraction, rate 0.9
    return A, torch.randn(batch, n, dtype=DT, generator=gen)


@pytest.fixture
def kernel_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the calls of the fused kernel (skips the test without difopt-accel)."""
    accel = pytest.importorskip("difopt_accel")
    calls = [0]
    step = type(accel.ops).anderson_step_

    def counted(self: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls[0] += 1
        return step(self, *args, **kwargs)

    monkeypatch.setattr(type(accel.ops), "anderson_step_", counted)
    return calls


@pytest.mark.parametrize("damping", [1.0, 0.7])
def test_fixed_point_and_implicit_gradient_equal_the_closed_forms(
    kernel_calls: list[int], damping: float
) -> None:
    A, b = affine()
    b.requires_grad_()
    eye = torch.eye(A.shape[0], dtype=DT)
    solver = di.Anderson(m=4, damping=damping, use_accelerated_op=True)
    z, info = di.fixed_point(
        lambda z, b: z @ A.T + b, torch.zeros_like(b), b, solver=solver, tol=1e-12,
        batched=True,
    )  # fmt: skip
    forward_calls = kernel_calls[0]
    assert forward_calls == int(info.iterations.max()) > 0
    assert bool(info.converged.all())
    exact = torch.linalg.solve(eye - A, b.detach().T).T
    torch.testing.assert_close(z.detach(), exact, rtol=0, atol=1e-10)
    w = torch.randn_like(z)
    (grad,) = torch.autograd.grad((z * w).sum(), b)
    assert kernel_calls[0] > forward_calls  # the adjoint ran on the kernel too
    # z* = (I - A)^{-1} b, so d<w, z*>/db = (I - A)^{-T} w.
    torch.testing.assert_close(grad, torch.linalg.solve((eye - A).T, w.T).T, rtol=1e-9, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_nonlinear_solve_takes_the_pure_steps_iterations(
    kernel_calls: list[int], dtype: torch.dtype
) -> None:
    A, b = affine(batch=8, n=16)
    A, b = A.to(dtype), (3 * b).to(dtype)  # samples converge at different iterations

    def f(z: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z @ A.T + b)

    tol = 1e-10 if dtype == torch.float64 else 1e-5
    runs = {}
    for fused in (False, True):
        solver = di.Anderson(m=5, use_accelerated_op=fused)
        runs[fused] = di.fixed_point(f, torch.zeros_like(b), b, solver=solver, tol=tol,
                                     batched=True)  # fmt: skip
    (z_pure, info_pure), (z_fused, info_fused) = runs[False], runs[True]
    assert kernel_calls[0] == int(info_fused.iterations.max())
    assert info_fused.converged.all() and len(set(info_fused.iterations.tolist())) > 1
    # The same algorithm: the same iterations per sample, the same point to the tolerance.
    assert info_fused.iterations.tolist() == info_pure.iterations.tolist()
    torch.testing.assert_close(z_fused, f(z_fused, b), rtol=0, atol=10 * tol)
    torch.testing.assert_close(z_fused, z_pure, rtol=0, atol=10 * tol)


def test_the_unrolled_mode_builds_its_graph_with_the_pure_step(kernel_calls: list[int]) -> None:
    A, b = affine()
    b.requires_grad_()
    solver = di.Anderson(m=4, use_accelerated_op=True)
    z, _ = di.fixed_point(lambda z, b: z @ A.T + b, torch.zeros_like(b), b, solver=solver,
                          backward="unrolled", tol=1e-12, batched=True)  # fmt: skip
    assert kernel_calls[0] == 0 and z.requires_grad


def test_inside_vmap_the_pure_step_runs(kernel_calls: list[int]) -> None:
    A, b = affine()
    solver = di.Anderson(m=4, use_accelerated_op=True)

    def solve(b: torch.Tensor) -> torch.Tensor:
        return di.fixed_point(lambda z: z @ A.T + b, torch.zeros_like(b), solver=solver,
                              tol=1e-12)[0]  # fmt: skip

    with torch.no_grad():
        zs = torch.func.vmap(solve)(b)
    assert kernel_calls[0] == 0
    exact = torch.linalg.solve(torch.eye(A.shape[0], dtype=DT) - A, b.T).T
    torch.testing.assert_close(zs, exact, rtol=0, atol=1e-10)


def test_without_difopt_accel_the_pure_step_runs_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "op_provider", lambda name: None)
    A, b = affine()
    with pytest.warns(registry.PluginWarning, match="difopt-accel is not installed"):
        z, info = di.fixed_point(
            lambda z, b: z @ A.T + b, torch.zeros_like(b), b,
            solver=di.Anderson(use_accelerated_op=True), tol=1e-12, batched=True,
        )  # fmt: skip
    assert bool(info.converged.all())


def test_use_accelerated_op_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="'use_accelerated_op' must be a bool"):
        di.Anderson(use_accelerated_op=1)  # type: ignore[arg-type]
