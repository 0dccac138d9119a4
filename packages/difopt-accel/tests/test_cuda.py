"""CUDA: the kernel source compiles with nvcc; parity and gradcheck on a GPU where present."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import difopt
import difopt_accel
from _problems import (
    OPTIONS,
    assert_trees_close,
    grads_sequence,
    initial_params,
    meta_loss_fn,
)

CSRC = Path(__file__).resolve().parents[1] / "csrc"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
def test_cuda_kernels_compile_with_nvcc(tmp_path: Path) -> None:
    # The kernels are plain CUDA (no torch headers), so they compile-check without a GPU and
    # without a CUDA build of torch.
    result = subprocess.run(
        [
            "nvcc",
            "-std=c++17",
            "-arch=sm_80",
            "-Xcompiler",
            "-Wall",
            "-c",
            str(CSRC / "adam_cuda.cu"),
            "-o",
            str(tmp_path / "adam_cuda.o"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr.lower(), result.stderr


def _require_cuda_kernels() -> None:
    if not difopt_accel.is_available("cuda"):
        pytest.skip("this build of difopt-accel has no CUDA kernels (torch without CUDA)")


@pytest.mark.cuda
@pytest.mark.parametrize("option", OPTIONS)
def test_cuda_classic_optimizer_matches_pure(option: str) -> None:
    _require_cuda_kernels()
    alias, kwargs = OPTIONS[option]
    classic = difopt.optim._forms.classic_class(alias)
    pure_p = [torch.nn.Parameter(x) for x in initial_params("cuda", torch.float32)]
    fused_p = [torch.nn.Parameter(x.detach().clone()) for x in pure_p]
    pure = classic(pure_p, lr=1e-2, **kwargs)
    fused = classic(fused_p, lr=1e-2, use_accelerated_op=True, **kwargs)
    for grads in grads_sequence("cuda", torch.float32):
        for ps in (pure_p, fused_p):
            for p, g in zip(ps, grads):
                p.grad = g.clone()
        pure.step()
        fused.step()
        assert_trees_close(fused_p, pure_p)
        assert_trees_close(fused.state_groups, pure.state_groups)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_cuda_dtypes_match_float32_formula(dtype: torch.dtype) -> None:
    _require_cuda_kernels()
    grads = [g.to(dtype) for g in grads_sequence("cuda", torch.float32, steps=1)[0]]
    mu = [torch.zeros_like(g) for g in grads]
    nu = [torch.zeros_like(g) for g in grads]
    out, mu2, nu2 = difopt_accel.adam(grads, mu, nu, torch.tensor(1), eps=1e-3)
    ref, _, _ = difopt_accel.adam(
        [g.float().cpu() for g in grads],
        [m.float().cpu() for m in mu],
        [v.float().cpu() for v in nu],
        torch.tensor(1),
        eps=1e-3,
    )
    tol = {torch.float16: 1e-3, torch.bfloat16: 1e-2, torch.float32: 1e-6}[dtype]
    for a, b in zip(out, ref):
        assert a.dtype == dtype
        torch.testing.assert_close(a.float().cpu(), b, rtol=tol, atol=tol)


@pytest.mark.cuda
def test_cuda_device_counter() -> None:
    _require_cuda_kernels()
    grads = grads_sequence("cuda", torch.float32, steps=1)[0]
    mu = [torch.zeros_like(g) for g in grads]
    nu = [torch.zeros_like(g) for g in grads]
    on_host = difopt_accel.adam(grads, mu, nu, torch.tensor(3))
    on_device = difopt_accel.adam(grads, mu, nu, torch.tensor(3, device="cuda"))
    for a, b in zip(sum(on_host, []), sum(on_device, [])):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.cuda
@pytest.mark.parametrize("eps_root", [0.0, 1e-3], ids=["eps_root=0", "eps_root=1e-3"])
def test_cuda_gradcheck_through_three_fused_steps(eps_root: float) -> None:
    _require_cuda_kernels()

    def step(params, grads, state, t):
        if state is None:
            state = ([torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params])
        out, mu, nu = difopt_accel.adam(
            grads,
            *state,
            torch.tensor(t + 1),
            params=params,
            eps=1e-3,
            eps_root=eps_root,
            factor=-0.1,
        )
        return tuple(out), (mu, nu)

    f, inputs = meta_loss_fn(step, "cuda", eps_root)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.cuda
def test_cuda_opcheck() -> None:
    _require_cuda_kernels()
    g = [torch.randn(3, 4, device="cuda", dtype=torch.float64, requires_grad=True)]
    m = [torch.zeros(3, 4, device="cuda", dtype=torch.float64)]
    v = [torch.zeros(3, 4, device="cuda", dtype=torch.float64)]
    torch.library.opcheck(
        torch.ops.difopt_accel.adam.default,
        (g, m, v, [], torch.tensor(1), 0.9, 0.999, 1e-8, 0.0, -0.1),
    )
