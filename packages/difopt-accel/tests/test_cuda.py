"""CUDA: the kernel source compiles with nvcc; parity and gradcheck on a GPU where present."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import difopt_accel
from _problems import (
    OPTIONS,
    SGD_RMSPROP_OPTIONS,
    TRANSFORMS,
    assert_trees_close,
    classic_steps,
    correctly_rounded_oracle,
    grads_sequence,
    initial_params,
    meta_loss_fn,
    transform_pair,
)

CSRC = Path(__file__).resolve().parents[1] / "csrc"


CUDA_SOURCES = sorted(p.name for p in CSRC.glob("*.cu"))


def test_every_op_has_its_cuda_kernels() -> None:
    assert CUDA_SOURCES == ["adam_cuda.cu", "rms_cuda.cu", "trace_cuda.cu"]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("source", CUDA_SOURCES)
def test_cuda_kernels_compile_with_nvcc(source: str, tmp_path: Path) -> None:
    # The kernels are plain CUDA (no torch headers), so they compile-check without a GPU and
    # without a CUDA build of torch; the flags are those of CMakeLists.txt.
    result = subprocess.run(
        [
            "nvcc",
            "-std=c++17",
            "-arch=sm_80",
            "--fmad=false",
            "-Xcompiler",
            "-Wall",
            "-c",
            str(CSRC / source),
            "-o",
            str(tmp_path / "kernels.o"),
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
    for fused, pure in classic_steps(*OPTIONS[option], "cuda"):
        assert_trees_close(fused, pure)


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


# ----------------------------------------------------------------------------- RMSProp, momentum


@pytest.mark.cuda
@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "functional"])
@pytest.mark.parametrize("option", TRANSFORMS)
def test_cuda_rms_trace_transformations_match_pure(option: str, inplace: bool) -> None:
    _require_cuda_kernels()
    fused, pure = transform_pair(option)
    params = initial_params("cuda", torch.float32)
    p_fused, p_pure = list(params), [x.clone() for x in params]
    s_fused, s_pure = fused.init(params), pure.init(params)
    with torch.no_grad() if inplace else torch.enable_grad():
        for grads in grads_sequence("cuda", torch.float32):
            out = fused.properties.apply_scaled(
                [g.clone() for g in grads], s_fused, params=p_fused, factor=-1e-2, inplace=inplace
            )
            assert out is not None
            p_fused, s_fused = out
            updates, s_pure = pure.update([g.clone() for g in grads], s_pure, inplace=inplace)
            p_pure = [p + -1e-2 * u for p, u in zip(p_pure, updates)]
            assert_trees_close(p_fused, p_pure)
            assert_trees_close(s_fused, s_pure)


@pytest.mark.cuda
@pytest.mark.parametrize("option", SGD_RMSPROP_OPTIONS)
def test_cuda_sgd_rmsprop_classic_optimizer_matches_pure(
    option: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _require_cuda_kernels()
    correctly_rounded_oracle(option, monkeypatch)  # in case torch's CUDA sqrt is not
    for fused, pure in classic_steps(*SGD_RMSPROP_OPTIONS[option], "cuda"):
        assert_trees_close(fused, pure)


def _on_cpu_float32(xs: list[torch.Tensor]) -> list[torch.Tensor]:
    return [x.float().cpu() for x in xs]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_cuda_rms_trace_dtypes_match_the_cpu_kernels(dtype: torch.dtype) -> None:
    _require_cuda_kernels()
    grads = [g.to(dtype) for g in grads_sequence("cuda", torch.float32, steps=1)[0]]
    mu = [0.1 * g for g in grads]
    nu = [g * g + 1 for g in grads]
    tol = {torch.float16: 1e-3, torch.bfloat16: 1e-2}.get(dtype, 1e-6)
    cuda = difopt_accel.rms(grads, mu, nu, params=grads, eps=1e-3, factor=-0.5, centered=True)
    cpu = difopt_accel.rms(
        *map(_on_cpu_float32, (grads, mu, nu)),
        params=_on_cpu_float32(grads),
        eps=1e-3,
        factor=-0.5,
        centered=True,
    )
    for a, b in zip(sum(cuda, []), sum(cpu, [])):
        assert a.dtype == dtype
        torch.testing.assert_close(a.float().cpu(), b, rtol=tol, atol=tol)
    cuda = difopt_accel.trace_op(grads, mu, torch.tensor(2), params=grads, nesterov=True)
    cpu = difopt_accel.trace_op(
        *map(_on_cpu_float32, (grads, mu)), torch.tensor(2), params=_on_cpu_float32(grads),
        nesterov=True,
    )  # fmt: skip
    for a, b in zip(sum(cuda, []), sum(cpu, [])):
        assert a.dtype == dtype
        torch.testing.assert_close(a.float().cpu(), b, rtol=tol, atol=tol)


@pytest.mark.cuda
@pytest.mark.parametrize("t", [1, 3], ids=["first-step", "later-step"])
def test_cuda_trace_device_counter(t: int) -> None:
    _require_cuda_kernels()
    grads = grads_sequence("cuda", torch.float32, steps=1)[0]
    buf = [torch.full_like(g, float("nan") if t == 1 else 0.5) for g in grads]
    on_host = difopt_accel.trace_op(grads, buf, torch.tensor(t), nesterov=True)
    on_device = difopt_accel.trace_op(grads, buf, torch.tensor(t, device="cuda"), nesterov=True)
    for a, b in zip(sum(on_host, []), sum(on_device, [])):
        assert torch.isfinite(b).all()
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    back_host = difopt_accel.trace_backward(grads, grads, torch.tensor(t), nesterov=True)
    back_device = difopt_accel.trace_backward(
        grads, grads, torch.tensor(t, device="cuda"), nesterov=True
    )
    for a, b in zip(sum(back_host, []), sum(back_device, [])):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _rms_step(centered: bool):
    def step(params, grads, state, t):
        if state is None:
            zeros = [torch.zeros_like(p) for p in params]
            state = ([z.clone() for z in zeros] if centered else [], zeros)
        out, mu, nu = difopt_accel.rms(
            grads, *state, params=params, eps=1e-3, factor=-0.1, centered=centered
        )
        return tuple(out), (mu, nu)

    return step


def _trace_step(nesterov: bool):
    def step(params, grads, state, t):
        buf = [torch.zeros_like(p) for p in params] if state is None else state
        count = torch.tensor(t + 1, device="cuda")  # read by the kernels
        out, buf = difopt_accel.trace_op(
            grads, buf, count, params=params, dampening=0.0, nesterov=nesterov, factor=-0.1
        )
        return tuple(out), buf

    return step


@pytest.mark.cuda
@pytest.mark.parametrize(
    "step",
    [_rms_step(False), _rms_step(True), _trace_step(False), _trace_step(True)],
    ids=["rms", "rms-centered", "trace", "trace-nesterov"],
)
def test_cuda_rms_trace_gradcheck_through_three_fused_steps(step) -> None:
    _require_cuda_kernels()
    f, inputs = meta_loss_fn(step, "cuda", 0.0)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.cuda
def test_cuda_rms_trace_opcheck() -> None:
    _require_cuda_kernels()

    def make(requires_grad: bool = False) -> list[torch.Tensor]:
        x = torch.rand(3, 4, device="cuda", dtype=torch.float64) + 0.5
        return [x.requires_grad_(requires_grad)]

    g, g_req, v = make(), make(True), make()
    m = [0.1 * make()[0]]
    ops = torch.ops.difopt_accel
    torch.library.opcheck(ops.rms.default, (g_req, m, v, [], 0.9, 1e-3, -0.1, True))
    torch.library.opcheck(ops.rms_.default, (make(), m, v, g, 0.9, 1e-3, -0.1, True, True))
    torch.library.opcheck(ops.rms_backward.default, (v, m, v, g, m, v, 0.9, 1e-3, -0.1, True, True))
    for count in (torch.tensor(1), torch.tensor(2, device="cuda")):
        torch.library.opcheck(ops.trace.default, (g_req, m, [], count, 0.9, 0.0, True, -0.1))
        torch.library.opcheck(ops.trace_.default, (make(), m, g, count, 0.9, 0.0, True, -0.1, True))
        torch.library.opcheck(ops.trace_backward.default, (v, m, count, 0.9, 0.0, True, -0.1, True))


@pytest.mark.cuda
def test_cuda_device_mismatch_names_the_argument() -> None:
    _require_cuda_kernels()
    g = [torch.randn(3, device="cuda")]
    with pytest.raises(RuntimeError, match=r"'nu'\[0\] is on cpu but 'grads'\[0\] is on cuda"):
        torch.ops.difopt_accel.rms(g, [], [torch.ones(3)], [], 0.9, 1e-8, 1.0, False)
    with pytest.raises(RuntimeError, match=r"'trace'\[0\] is on cpu but 'grads'\[0\] is on cuda"):
        torch.ops.difopt_accel.trace(g, [torch.ones(3)], [], torch.tensor(1), 0.9, 0.0, False, 1.0)
