"""The fused path computes what difopt's pure PyTorch path computes (the oracle).

Every option of Adam/AdamW, 50 steps, float32: updates and states equal to 1e-6, through
difopt's own entry points (``use_accelerated_op=True``) and through the transformation's
``apply_scaled`` (the one-kernel classic step).
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import difopt
import difopt_accel
from _problems import (
    OPTIONS,
    assert_trees_close,
    grads_sequence,
    initial_params,
    leaves,
)

DEVICE = "cpu"


@pytest.fixture(autouse=True)
def _no_fallback_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error", difopt.registry.PluginWarning)
        yield


@pytest.mark.parametrize("option", OPTIONS)
def test_classic_optimizer_matches_pure(option: str) -> None:
    alias, kwargs = OPTIONS[option]
    classic = difopt.optim._forms.classic_class(alias)
    pure_p = [torch.nn.Parameter(x) for x in initial_params(DEVICE, torch.float32)]
    fused_p = [torch.nn.Parameter(x.detach().clone()) for x in pure_p]
    pure = classic(pure_p, lr=1e-2, **kwargs)
    fused = classic(fused_p, lr=1e-2, use_accelerated_op=True, **kwargs)
    for grads in grads_sequence(DEVICE, torch.float32):
        for ps in (pure_p, fused_p):
            for p, g in zip(ps, grads):
                p.grad = g.clone()
        pure.step()
        fused.step()
        assert_trees_close(fused_p, pure_p)
        assert_trees_close(fused.state_groups, pure.state_groups)


@pytest.mark.parametrize("moment_requires_grad", [False, True], ids=["moments", "moments-grad"])
@pytest.mark.parametrize("option", OPTIONS)
def test_functional_update_matches_pure(option: str, moment_requires_grad: bool) -> None:
    alias, kwargs = OPTIONS[option]
    kwargs = {**kwargs, "moment_requires_grad": moment_requires_grad}
    pure = alias(1e-2, **kwargs)
    fused = alias(1e-2, use_accelerated_op=True, **kwargs)
    params = initial_params(DEVICE, torch.float32)
    s_pure, s_fused = pure.init(params), fused.init(params)
    for grads in grads_sequence(DEVICE, torch.float32):
        u_pure, s_pure = pure.update(grads, s_pure, params=params, inplace=False)
        u_fused, s_fused = fused.update(grads, s_fused, params=params, inplace=False)
        assert_trees_close(u_fused, u_pure)
        assert_trees_close(s_fused, s_pure)
        params = [p + u for p, u in zip(params, u_pure)]
    if moment_requires_grad:
        assert all(x.requires_grad for x in leaves(s_fused[1].mu))


@pytest.mark.parametrize("eps_root", [0.0, 1e-6])
@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "functional"])
def test_apply_scaled_matches_pure(eps_root: float, inplace: bool) -> None:
    fused = difopt_accel.scale_by_adam(eps_root=eps_root)
    pure = difopt.transform.scale_by_adam(eps_root=eps_root)
    p_fused = initial_params(DEVICE, torch.float32)
    p_pure = [x.clone() for x in p_fused]
    s_fused, s_pure = fused.init(p_fused), pure.init(p_pure)
    for grads in grads_sequence(DEVICE, torch.float32):
        out = fused._difopt_apply(grads, s_fused, params=p_fused, factor=-1e-2, inplace=inplace)
        assert out is not None
        p_fused, s_fused = out
        p_pure, s_pure = pure._difopt_apply(
            grads, s_pure, params=p_pure, factor=-1e-2, inplace=inplace
        )
        assert_trees_close(p_fused, p_pure)
        assert_trees_close(s_fused, s_pure)


def test_optimizer_on_a_chain_takes_the_one_kernel_step(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = difopt_accel._ops.adam_

    def spy(*args, **kwargs):
        calls.append(kwargs.get("accumulate"))
        return real(*args, **kwargs)

    monkeypatch.setattr(difopt_accel._ops, "adam_", spy)
    ps = [torch.nn.Parameter(x) for x in initial_params(DEVICE, torch.float32)]
    opt = difopt.Optimizer(
        ps, difopt.chain(difopt_accel.scale_by_adam(), difopt.transform.scale(-1e-2))
    )
    for p in ps:
        p.grad = torch.ones_like(p)
    opt.step()
    assert calls == [True]  # one call, straight into the parameters


def test_states_are_interchangeable_with_the_pure_transformation() -> None:
    params = initial_params(DEVICE, torch.float32)
    grads = grads_sequence(DEVICE, torch.float32, steps=6)
    fused, pure = difopt_accel.scale_by_adam(), difopt.transform.scale_by_adam()
    state = fused.init(params)
    assert type(state) is type(pure.init(params))
    reference = pure.init(params)
    for k, g in enumerate(grads):
        t = fused if k % 2 else pure  # alternate implementations on one state
        u, state = t.update(g, state, inplace=False)
        u_ref, reference = pure.update(g, reference, inplace=False)
        assert_trees_close(u, u_ref)
    assert state.count.dtype == torch.int64 and state.count.device.type == "cpu"
    assert int(state.count) == len(grads)


def test_meta_optimizer_matches_pure() -> None:
    base = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    x, xq = torch.randn(6, 4), torch.randn(6, 4)
    results = {}
    for kind, accelerated in (("pure", False), ("fused", True)):
        net = copy.deepcopy(base)
        initial = list(net.parameters())
        opt = difopt.MetaAdam(net, lr=1e-2, eps_root=1e-8, use_accelerated_op=accelerated)
        for _ in range(5):
            opt.step(net(x).pow(2).mean())
        meta_grad = torch.autograd.grad(net(xq).sum(), initial)
        results[kind] = (list(net.parameters()), meta_grad, opt.state_groups)
    for fused, pure in zip(results["fused"], results["pure"]):
        assert_trees_close(fused, pure, rtol=1e-5, atol=1e-6)


def test_unsupported_dtype_warns_once_and_falls_back() -> None:
    params = [torch.randn(3, dtype=torch.bfloat16)]
    t = difopt_accel.scale_by_adam()
    pure = difopt.transform.scale_by_adam()
    with pytest.warns(difopt.registry.PluginWarning, match="not used"):
        u, _ = t.update(params, t.init(params), inplace=False)
    u_ref, _ = pure.update(params, pure.init(params), inplace=False)
    assert_trees_close(u, u_ref)
    assert t._difopt_apply(params, t.init(params), params=params, factor=-1.0, inplace=True) is None
