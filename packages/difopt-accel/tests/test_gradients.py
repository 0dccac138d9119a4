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
    kwargs = {"eps": 1e-3, "eps_root": eps_root, "moment_requires_grad": True}
    return any_alias_step(difopt.adam, kwargs, accelerated)


def any_alias_step(alias, kwargs: dict, accelerated: bool):
    """Steps through ``alias``'s update (inplace=False), fused or pure."""
    impl = alias(LR, use_accelerated_op=accelerated, **kwargs)

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


# ----------------------------------------------------------------------------- RMSProp, momentum


def rms_op_step(centered: bool):
    """Steps through the rms op directly, parameters included (initial_scale 0: the
    exactly-zero gradient of z keeps its nu' (and variance) at 0, sqrt's point at 0)."""

    def step(params, grads, state, t):
        if state is None:
            zeros = [torch.zeros_like(p) for p in params]
            state = ([z.clone() for z in zeros] if centered else [], zeros)
        out, mu, nu = difopt_accel.rms(
            grads, *state, params=params, alpha=0.9, eps=1e-3, factor=-LR, centered=centered
        )
        return tuple(out), (mu, nu)

    return step


def trace_op_step(nesterov: bool, dampening: float):
    """Steps through the trace op directly, parameters included (step 1 is the first step)."""

    def step(params, grads, state, t):
        if state is None:
            state = [torch.zeros_like(p) for p in params]
        out, buf = difopt_accel.trace_op(
            grads,
            state,
            torch.tensor(t + 1),
            params=params,
            momentum=0.9,
            dampening=dampening,
            nesterov=nesterov,
            factor=-LR,
        )
        return tuple(out), buf

    return step


OP_STEPS = {
    "rms": rms_op_step(centered=False),
    "rms-centered": rms_op_step(centered=True),
    "trace": trace_op_step(nesterov=False, dampening=0.0),
    "trace-dampening": trace_op_step(nesterov=False, dampening=0.5),
    "trace-nesterov": trace_op_step(nesterov=True, dampening=0.0),
}

ALIASES = {
    "sgd": (difopt.sgd, {"momentum": 0.9, "moment_requires_grad": True}),
    "sgd-nesterov": (difopt.sgd, {"momentum": 0.9, "nesterov": True}),
    "rmsprop": (difopt.rmsprop, {"eps": 1e-3}),
    "rmsprop-centered": (difopt.rmsprop, {"eps": 1e-3, "centered": True}),
    "rmsprop-centered-momentum": (
        difopt.rmsprop,
        {"eps": 1e-3, "centered": True, "momentum": 0.9, "nesterov": True},
    ),
}


@pytest.mark.parametrize("option", OP_STEPS)
def test_gradcheck_through_three_fused_rms_trace_steps(option: str) -> None:
    f, inputs = meta_loss_fn(OP_STEPS[option], DEVICE, 0.0)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("option", ALIASES)
def test_gradcheck_through_difopt_sgd_rmsprop(option: str) -> None:
    alias, kwargs = ALIASES[option]
    f, inputs = meta_loss_fn(any_alias_step(alias, kwargs, True), DEVICE, 0.0)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("option", ALIASES)
def test_sgd_rmsprop_meta_gradient_equals_pure_path(option: str) -> None:
    alias, kwargs = ALIASES[option]
    results = []
    for accelerated in (True, False):
        step = any_alias_step(alias, kwargs, accelerated)
        f, inputs = meta_loss_fn(step, DEVICE, 0.0)
        results.append(torch.autograd.grad(f(*inputs), inputs))
    for fused, pure in zip(*results):
        assert torch.isfinite(fused).all()
        torch.testing.assert_close(fused, pure, rtol=1e-10, atol=1e-12)
    assert results[0][2].abs().sum() > 0  # z's meta-gradient (zero inner gradient) is exact


def _rand(
    gen: torch.Generator, *shape: int, positive: bool = False, scale: float = 1.0
) -> torch.Tensor:
    x = torch.randn(*shape, generator=gen, dtype=torch.float64) * scale
    return (x.abs() + 0.5 if positive else x).requires_grad_()


@pytest.mark.parametrize("centered", [False, True], ids=["uncentered", "centered"])
def test_rms_second_order_gradgradcheck(centered: bool) -> None:
    # With create_graph=True the backward is a differentiable composition of the same formula.
    gen = torch.Generator().manual_seed(5)
    g, m, p = _rand(gen, 4), _rand(gen, 4, scale=0.1), _rand(gen, 4)
    v = _rand(gen, 4, positive=True)  # the variance stays away from sqrt's 0

    def f(g, m, v, p):
        mu = [m] if centered else []
        out, m2, v2 = difopt_accel.rms(
            [g], mu, [v], params=[p], alpha=0.8, eps=1e-3, factor=-0.1, centered=centered
        )
        return (out[0], *m2, v2[0])

    assert torch.autograd.gradcheck(f, (g, m, v, p))
    assert torch.autograd.gradgradcheck(f, (g, m, v, p))


@pytest.mark.parametrize("nesterov", [False, True], ids=["plain", "nesterov"])
@pytest.mark.parametrize("t", [1, 2], ids=["first-step", "later-step"])
def test_trace_second_order_gradgradcheck(nesterov: bool, t: int) -> None:
    gen = torch.Generator().manual_seed(6)
    g, b, p = _rand(gen, 4), _rand(gen, 4), _rand(gen, 4)

    def f(g, b, p):
        out, b2 = difopt_accel.trace_op(
            [g],
            [b],
            torch.tensor(t),
            params=[p],
            momentum=0.9,
            dampening=0.0 if nesterov else 0.3,
            nesterov=nesterov,
            factor=-0.1,
        )
        return out[0] ** 2, b2[0] ** 2  # nonlinear, so that second derivatives are not all 0

    assert torch.autograd.gradcheck(f, (g, b, p))
    assert torch.autograd.gradgradcheck(f, (g, b, p))


def test_backward_with_only_state_gradients() -> None:
    # Gradients flowing into the new state alone (none into the first output).
    gen = torch.Generator().manual_seed(7)
    g, m, v = _rand(gen, 3), _rand(gen, 3, scale=0.1), _rand(gen, 3, positive=True)
    _, m2, v2 = difopt_accel.rms([g], [m], [v], centered=True)
    dg, dm, dv = torch.autograd.grad((m2[0] + v2[0]).sum(), (g, m, v))
    torch.testing.assert_close(dg, 0.1 + 0.2 * g)  # d(mu' + nu')/dg with alpha = 0.9
    torch.testing.assert_close(dm, torch.full_like(m, 0.9))
    torch.testing.assert_close(dv, torch.full_like(v, 0.9))
    _, b2 = difopt_accel.trace_op([g], [m], torch.tensor(2), dampening=0.5)
    dg, db = torch.autograd.grad(b2[0].sum(), (g, m))
    torch.testing.assert_close(dg, torch.full_like(g, 0.5))
    torch.testing.assert_close(db, torch.full_like(m, 0.9))


def _op_case(name: str):
    """``(outputs(), inputs)`` of one functional op call, float64, with params."""
    gen = torch.Generator().manual_seed(8)
    g, m, p = _rand(gen, 5), _rand(gen, 5, scale=0.1), _rand(gen, 5)
    v = _rand(gen, 5, positive=True)
    if name == "adam":
        return lambda: sum(
            difopt_accel.adam([g], [m], [v], torch.tensor(3), params=[p], eps=1e-3), []
        ), (g, m, v, p)
    if name.startswith("rms"):
        centered = name == "rms-centered"
        mu = [m] if centered else []
        return lambda: sum(
            difopt_accel.rms([g], mu, [v], params=[p], alpha=0.8, eps=1e-3, centered=centered),
            [],
        ), (g, *mu, v, p)
    t, nesterov = (1, False) if name == "trace-first" else (3, name == "trace-nesterov")
    return lambda: sum(
        difopt_accel.trace_op(
            [g], [m], torch.tensor(t), params=[p], dampening=0.25 * (not nesterov),
            nesterov=nesterov, factor=-0.5,
        ),
        [],
    ), (g, m, p)  # fmt: skip


@pytest.mark.parametrize("which", ["all", "first-output", "state"])
@pytest.mark.parametrize("name", ["adam", "rms", "rms-centered", "trace", "trace-first",
                                  "trace-nesterov"])  # fmt: skip
def test_differentiable_backward_equals_the_native_one(name: str, which: str) -> None:
    # Under create_graph=True the backward is a composition of torch operations (so that it is
    # differentiable); it must compute what the native backward op computes.
    outputs, inputs = _op_case(name)
    outs = outputs()
    outs = {"all": outs, "first-output": outs[:1], "state": outs[1:]}[which]
    gen = torch.Generator().manual_seed(9)
    loss = sum((torch.randn(o.shape, generator=gen, dtype=o.dtype) * o).sum() for o in outs)
    native = torch.autograd.grad(loss, inputs, retain_graph=True, allow_unused=True)
    differentiable = torch.autograd.grad(loss, inputs, create_graph=True, allow_unused=True)
    for a, b in zip(native, differentiable):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14)
