"""The fused Anderson step (``anderson_step_``): against the constrained least squares solved
with numpy in float64, the memory it writes, opcheck, and argument errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import difopt_accel
from difopt import registry

B, M, N = 5, 4, 7


def memory(dtype: torch.dtype, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images, residuals and their exact Gram matrix with the first k - 1 slots in use."""
    images = torch.randn(B, M, N, dtype=dtype)
    residuals = torch.randn(B, M, N, dtype=dtype) * torch.logspace(0, -3, M, dtype=dtype)[:, None]
    residuals[:, k - 1 :] = 0
    images[:, k - 1 :] = 0
    return images, residuals, residuals @ residuals.transpose(1, 2)


def oracle(F: np.ndarray, G: np.ndarray, ridge: float, damping: float) -> np.ndarray:
    """min |G^T a|^2 + ridge s |a|^2 s.t. sum(a) = 1, from its KKT system, then the mix."""
    k = G.shape[0]
    gram = G @ G.T
    s = np.trace(gram) / k
    kkt = np.zeros((k + 1, k + 1))
    kkt[:k, :k] = 2 * (gram + ridge * (s if s > 0 else 1.0) * np.eye(k))
    kkt[:k, k] = kkt[k, :k] = 1.0
    rhs = np.zeros(k + 1)
    rhs[k] = 1.0
    alpha = np.linalg.solve(kkt, rhs)[:k]
    return alpha @ (F - (1 - damping) * G)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("k", [1, 2, M])
@pytest.mark.parametrize("damping", [1.0, 0.6])
def test_the_step_solves_the_constrained_least_squares(
    dtype: torch.dtype, k: int, damping: float
) -> None:
    images, residuals, gram = memory(dtype, k)
    z, g = torch.randn(B, N, dtype=dtype), torch.randn(B, N, dtype=dtype) * 1e-2
    slot, ridge = k - 1, 1e-6
    out = difopt_accel.anderson_step_(images, residuals, gram, z, g, slot, k, ridge=ridge,
                                      damping=damping)  # fmt: skip
    # The new pair is in its slot; the Gram matrix is exact on the slots in use.
    torch.testing.assert_close(images[:, slot], z + g)
    torch.testing.assert_close(residuals[:, slot], g)
    used = residuals[:, :k]
    torch.testing.assert_close(gram[:, :k, :k], used @ used.transpose(1, 2))
    rtol = 1e-10 if dtype == torch.float64 else 2e-4
    for b in range(B):
        if k == 1:
            want = (z[b] + damping * g[b]).double().numpy()
        else:
            want = oracle(images[b, :k].double().numpy(), used[b].double().numpy(), ridge, damping)
        np.testing.assert_allclose(out[b].double().numpy(), want, rtol=rtol, atol=rtol)


def test_a_zero_memory_uses_unit_scale_and_stays_finite() -> None:
    # A converged sample: every residual zero, so s = 1 and the weights are equal.
    images = torch.randn(1, 3, 2, dtype=torch.float64)
    residuals = torch.zeros(1, 3, 2, dtype=torch.float64)
    gram = torch.zeros(1, 3, 3, dtype=torch.float64)
    z, g = images[:, 2].clone(), torch.zeros(1, 2, dtype=torch.float64)
    out = difopt_accel.anderson_step_(images, residuals, gram, z, g, 2, 3, ridge=1e-8)
    torch.testing.assert_close(out[0], images[0].mean(0))


def test_opcheck() -> None:
    images, residuals, gram = memory(torch.float64, 3)
    z, g = torch.randn(B, N, dtype=torch.float64), torch.randn(B, N, dtype=torch.float64)
    torch.library.opcheck(
        torch.ops.difopt_accel.anderson_step_.default,
        (images, residuals, gram, z, g, 2, 3, 1e-6, 1.0),
        test_utils=("test_schema", "test_faketensor"),
    )


def _args(**over: object) -> dict[str, object]:
    images, residuals, gram = memory(torch.float32, 2)
    args: dict[str, object] = dict(
        images=images, residuals=residuals, gram=gram, z=torch.zeros(B, N),
        g=torch.zeros(B, N), slot=1, k=2, ridge=1e-6, damping=1.0,
    )  # fmt: skip
    args.update(over)
    return args


@pytest.mark.parametrize(
    ("over", "match"),
    [
        (dict(z=torch.zeros(B, N, 1)), "'z' must be a \\(B, n\\) matrix"),
        (dict(images=torch.zeros(B, M, N + 1)), "'images' must have shape"),
        (dict(residuals=torch.zeros(B, M + 1, N)), "'residuals' must have the shape"),
        (dict(gram=torch.zeros(B, M, M + 1)), "'gram' must have shape"),
        (dict(g=torch.zeros(B, N + 1)), "'g' must have the shape"),
        (dict(k=M + 1), "'k' must be in"),
        (dict(k=0), "'k' must be in"),
        (dict(slot=2), "'slot' must be in"),
        (dict(ridge=-1.0), "'ridge' must be"),
        (dict(damping=0.0), "'damping' must be in"),
        (dict(z=torch.zeros(B, N, dtype=torch.float64)), "dtype of 'z'"),
        (dict(g=torch.zeros(B, N, dtype=torch.float64)), "dtype of 'z'"),
        (dict(z=torch.zeros(N, B).t()), "contiguous"),
    ],
)
def test_bad_arguments_are_named(over: dict[str, object], match: str) -> None:
    args = _args(**over)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.difopt_accel.anderson_step_(*args.values())


def test_half_precision_is_refused_by_name() -> None:
    args = _args(**{k: v.half() for k, v in _args().items() if isinstance(v, torch.Tensor)})
    with pytest.raises(RuntimeError, match="float32 or float64"):
        torch.ops.difopt_accel.anderson_step_(*args.values())


def test_the_provider_says_where_it_runs() -> None:
    ops = difopt_accel.ops
    assert registry.op_provider("anderson") is ops  # the entry point difopt-implicit loads
    assert ops.anderson_rejection(torch.zeros(2, 3)) is None
    assert ops.anderson_rejection(torch.zeros(2, 3, dtype=torch.float64)) is None
    assert "float32/float64" in ops.anderson_rejection(torch.zeros(2, 3, dtype=torch.float16))
    seen = []
    torch.func.vmap(lambda x: seen.append(ops.anderson_rejection(x)) or x)(torch.zeros(2, 3))
    assert "torch.func" in seen[0]
