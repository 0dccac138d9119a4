"""Exact backward: gradcheck (float64) of meta-gradients through 3 fused unrolled steps.

Each case includes a parameter whose gradient is exactly zero (its second moment stays 0),
and the fused meta-gradient must equal the one of difopt's pure path, which takes the zero
subgradient of sqrt at 0.
"""

from __future__ import annotations

import pytest
import torch

import difopt
import difopt_accel
from _problems import meta_loss_fn

DEVICE = "cpu"
LR = 0.1


def op_step(eps_root: float, moment_requires_grad: bool = False):
    """Steps through the op directly, parameters included (the apply form)."""

    def step(params, grads, state, t):
        if state is None:
            zeros = [torch.zeros_like(p).requires_grad_(moment_requires_grad) for p in params]
            state = (zeros, [z.clone() for z in zeros])
        mu, nu = state
        out, mu, nu = difopt_accel.adam(
            grads,
            mu,
            nu,
            torch.tensor(t + 1),
            params=params,
            eps=1e-3,
            eps_root=eps_root,
            factor=-LR,
        )
        return tuple(out), (mu, nu)

    return step


def alias_step(eps_root: float, accelerated: bool):
    """Steps through difopt.adam's update (inplace=False), fused or pure."""
    impl = difopt.adam(
        LR, eps=1e-3, eps_root=eps_root, moment_requires_grad=True, use_accelerated_op=accelerated
    )

    def step(params, grads, state, t):
        if state is None:
            state = impl.init(params)
        updates, state = impl.update(grads, state, params=params, inplace=False)
        return tuple(p + u for p, u in zip(params, updates)), state

    return step


@pytest.mark.parametrize("eps_root", [0.0, 1e-3], ids=["eps_root=0", "eps_root=1e-3"])
@pytest.mark.parametrize("moment_requires_grad", [False, True], ids=["moments", "moments-grad"])
def test_gradcheck_through_three_fused_steps(eps_root: float, moment_requires_grad: bool) -> None:
    f, inputs = meta_loss_fn(op_step(eps_root, moment_requires_grad), DEVICE, eps_root)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("eps_root", [0.0, 1e-3], ids=["eps_root=0", "eps_root=1e-3"])
def test_gradcheck_through_difopt_adam(eps_root: float) -> None:
    f, inputs = meta_loss_fn(alias_step(eps_root, accelerated=True), DEVICE, eps_root)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("eps_root", [0.0, 1e-3], ids=["eps_root=0", "eps_root=1e-3"])
def test_meta_gradient_equals_pure_path(eps_root: float) -> None:
    results = []
    for accelerated in (True, False):
        f, inputs = meta_loss_fn(alias_step(eps_root, accelerated), DEVICE, eps_root)
        results.append(torch.autograd.grad(f(*inputs), inputs))
    for fused, pure in zip(*results):
        assert torch.isfinite(fused).all()
        torch.testing.assert_close(fused, pure, rtol=1e-10, atol=1e-12)
    assert results[0][2].abs().sum() > 0  # z's meta-gradient (zero inner gradient) is exact


def test_second_order_gradgradcheck() -> None:
    # With create_graph=True the backward is a differentiable composition of the same formula.
    gen = torch.Generator().manual_seed(4)

    def rand(*s: int) -> torch.Tensor:
        return torch.randn(*s, generator=gen, dtype=torch.float64, requires_grad=True)

    g, m, v, p = rand(4), rand(4), (rand(4).detach().abs() + 0.1).requires_grad_(), rand(4)

    def f(g, m, v, p):
        out, m2, v2 = difopt_accel.adam(
            [g], [m], [v], torch.tensor(2), params=[p], eps=1e-3, eps_root=1e-4, factor=-0.1
        )
        return out[0], m2[0], v2[0]

    assert torch.autograd.gradcheck(f, (g, m, v, p))
    assert torch.autograd.gradgradcheck(f, (g, m, v, p))
