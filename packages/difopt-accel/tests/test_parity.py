"""The fused path computes what difopt's pure PyTorch path computes (the oracle).

Every option of Adam/AdamW, SGD (momentum) and RMSProp, 50 steps, float32: updates and states
equal to 1e-6, through difopt's own entry points (``use_accelerated_op=True``), through the
transformations' ``update`` and through their ``apply_scaled`` (the one-kernel classic step).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from typing import Sequence

import pytest
import torch

import difopt
import difopt_accel
from _problems import (
    OPTIONS,
    ROUNDING_SENSITIVE,
    SGD_RMSPROP_OPTIONS,
    TRANSFORMS,
    assert_trees_close,
    classic_steps,
    correctly_rounded_oracle,
    functional_steps,
    grads_sequence,
    initial_params,
    leaves,
    transform_pair,
)

DEVICE = "cpu"


@pytest.fixture(autouse=True)
def _no_fallback_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error", difopt.registry.PluginWarning)
        yield


@pytest.mark.parametrize("option", OPTIONS)
def test_classic_optimizer_matches_pure(option: str) -> None:
    for fused, pure in classic_steps(*OPTIONS[option], DEVICE):
        assert_trees_close(fused, pure)


@pytest.mark.parametrize("moment_requires_grad", [False, True], ids=["moments", "moments-grad"])
@pytest.mark.parametrize("option", OPTIONS)
def test_functional_update_matches_pure(option: str, moment_requires_grad: bool) -> None:
    alias, kwargs = OPTIONS[option]
    kwargs = {**kwargs, "moment_requires_grad": moment_requires_grad}
    for fused, pure in functional_steps(alias, kwargs, DEVICE):
        assert_trees_close(fused, pure)
    if moment_requires_grad:
        assert all(x.requires_grad for x in leaves(fused[1][1].mu))


@pytest.mark.parametrize("eps_root", [0.0, 1e-6])
@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "functional"])
def test_apply_scaled_matches_pure(eps_root: float, inplace: bool) -> None:
    fused = difopt_accel.scale_by_adam(eps_root=eps_root)
    pure = difopt.transform.scale_by_adam(eps_root=eps_root)
    p_fused = initial_params(DEVICE, torch.float32)
    p_pure = [x.clone() for x in p_fused]
    s_fused, s_pure = fused.init(p_fused), pure.init(p_pure)
    for grads in grads_sequence(DEVICE, torch.float32):
        out = fused.properties.apply_scaled(
            grads, s_fused, params=p_fused, factor=-1e-2, inplace=inplace
        )
        assert out is not None
        p_fused, s_fused = out
        p_pure, s_pure = pure.properties.apply_scaled(
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
    counts = difopt.pytree.tree_leaves(state.count)  # one counter per parameter
    assert len(counts) == len(difopt.pytree.tree_leaves(params))
    assert all(c.dtype == torch.int64 and c.device.type == "cpu" for c in counts)
    assert [int(c) for c in counts] == [len(grads)] * len(counts)


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
    assert (
        t.properties.apply_scaled(params, t.init(params), params=params, factor=-1.0, inplace=True)
        is None
    )


# ----------------------------------------------------------------------------- RMSProp, SGD


def _mode(inplace: bool) -> contextlib.AbstractContextManager:
    # In place is the classic optimizers' mode (no graph); out of place, the differentiable one.
    return torch.no_grad() if inplace else contextlib.nullcontext()


@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "functional"])
@pytest.mark.parametrize("option", TRANSFORMS)
def test_transformation_update_matches_pure(option: str, inplace: bool) -> None:
    fused, pure = transform_pair(option)
    params = initial_params(DEVICE, torch.float32)
    s_fused, s_pure = fused.init(params), pure.init(params)
    assert type(s_fused) is type(s_pure)
    with _mode(inplace):
        for grads in grads_sequence(DEVICE, torch.float32):
            # with inplace=True an update may write into the incoming updates: one copy each
            u_fused, s_fused = fused.update([g.clone() for g in grads], s_fused, inplace=inplace)
            u_pure, s_pure = pure.update([g.clone() for g in grads], s_pure, inplace=inplace)
            assert_trees_close(u_fused, u_pure)
            assert_trees_close(s_fused, s_pure)


@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "functional"])
@pytest.mark.parametrize("option", TRANSFORMS)
def test_transformation_apply_scaled_matches_pure(option: str, inplace: bool) -> None:
    fused, pure = transform_pair(option)
    p_fused = initial_params(DEVICE, torch.float32)
    p_pure = [x.clone() for x in p_fused]
    s_fused, s_pure = fused.init(p_fused), pure.init(p_pure)
    with _mode(inplace):
        for grads in grads_sequence(DEVICE, torch.float32):
            out = fused.properties.apply_scaled(
                [g.clone() for g in grads], s_fused, params=p_fused, factor=-1e-2, inplace=inplace
            )
            assert out is not None
            new_params, s_fused = out
            assert (new_params[0] is p_fused[0]) == inplace  # in place: into the parameters
            p_fused = new_params
            updates, s_pure = pure.update([g.clone() for g in grads], s_pure, inplace=inplace)
            p_pure = [p + -1e-2 * u for p, u in zip(p_pure, updates)]
            assert_trees_close(p_fused, p_pure)
            assert_trees_close(s_fused, s_pure)


@pytest.mark.parametrize("option", ["rms", "stddev", "trace", "trace-nesterov"])
def test_rms_and_trace_states_are_interchangeable_with_the_pure_ones(option: str) -> None:
    params = initial_params(DEVICE, torch.float32)
    fused, pure = transform_pair(option)
    state, reference = fused.init(params), pure.init(params)
    for k, g in enumerate(grads_sequence(DEVICE, torch.float32, steps=6)):
        t = fused if k % 2 else pure  # alternate implementations on one state
        u, state = t.update(g, state, inplace=False)
        u_ref, reference = pure.update(g, reference, inplace=False)
        assert_trees_close(u, u_ref)
        assert_trees_close(state, reference)


@pytest.mark.parametrize("option", SGD_RMSPROP_OPTIONS)
def test_sgd_rmsprop_classic_optimizer_matches_pure(
    option: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    correctly_rounded_oracle(option, monkeypatch)
    for fused, pure in classic_steps(*SGD_RMSPROP_OPTIONS[option], DEVICE):
        assert_trees_close(fused, pure)


@pytest.mark.parametrize("option", sorted(ROUNDING_SENSITIVE))
def test_rms_then_momentum_matches_the_unmodified_pure_path(option: str) -> None:
    for (fused_p, fused_s), (pure_p, pure_s) in classic_steps(*SGD_RMSPROP_OPTIONS[option], DEVICE):
        assert_trees_close(fused_p, pure_p)
        assert_trees_close(fused_s, pure_s, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("option", SGD_RMSPROP_OPTIONS)
def test_sgd_rmsprop_functional_update_matches_pure(
    option: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    correctly_rounded_oracle(option, monkeypatch)
    alias, kwargs = SGD_RMSPROP_OPTIONS[option]
    if alias is difopt.sgd:
        kwargs = {**kwargs, "moment_requires_grad": True}
    for fused, pure in functional_steps(alias, kwargs, DEVICE):
        assert_trees_close(fused, pure)
    if alias is difopt.sgd:
        assert all(x.requires_grad for x in leaves(fused[1][1].trace))


@pytest.mark.parametrize("option", SGD_RMSPROP_OPTIONS)
def test_sgd_rmsprop_meta_optimizer_matches_pure(option: str) -> None:
    # float64: float32 meta-gradients through centered RMSProp are ill-conditioned (the
    # variance nu - mu^2 cancels), for the pure path as much as for the fused one.
    alias, kwargs = SGD_RMSPROP_OPTIONS[option]
    meta = difopt.optim.meta_class(alias)
    base = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    base = base.double()
    x, xq = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    results = {}
    for kind, accelerated in (("pure", False), ("fused", True)):
        net = copy.deepcopy(base)
        initial = list(net.parameters())
        opt = meta(net, lr=1e-2, use_accelerated_op=accelerated, **kwargs)
        for _ in range(5):
            opt.step(net(x).pow(2).mean())
        meta_grad = torch.autograd.grad(net(xq).sum(), initial)
        results[kind] = (list(net.parameters()), meta_grad, opt.state_groups)
    for fused, pure in zip(results["fused"], results["pure"]):
        assert_trees_close(fused, pure, rtol=1e-9, atol=1e-12)
    assert all(torch.isfinite(g).all() for g in results["fused"][1])


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("sgd-momentum", [("trace_", True)]),
        ("rmsprop", [("rms_", True)]),
        ("rmsprop-momentum", [("rms_", False), ("trace_", True)]),
    ],
)
def test_classic_step_folds_the_learning_rate_into_the_last_op(
    option: str, expected: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    for name in ("rms_", "trace_"):
        real = getattr(difopt_accel._ops, name)

        def spy(*args, _name=name, _real=real, **kwargs):
            calls.append((_name, kwargs.get("accumulate")))
            return _real(*args, **kwargs)

        monkeypatch.setattr(difopt_accel._ops, name, spy)
    alias, kwargs = SGD_RMSPROP_OPTIONS[option]
    ps = [torch.nn.Parameter(x) for x in initial_params(DEVICE, torch.float32)]
    opt = difopt.optim.classic_class(alias)(ps, lr=1e-2, use_accelerated_op=True, **kwargs)
    for p in ps:
        p.grad = torch.ones_like(p)
    opt.step()
    assert calls == expected  # one call per op; the last writes straight into the parameters


@pytest.mark.parametrize("option", ["rms", "stddev", "trace"])
def test_rms_trace_unsupported_dtype_warns_once_and_falls_back(option: str) -> None:
    params = [torch.randn(3, dtype=torch.bfloat16)]
    fused, pure = transform_pair(option)
    with pytest.warns(difopt.registry.PluginWarning, match="not used"):
        u, _ = fused.update(params, fused.init(params), inplace=False)
    u_ref, _ = pure.update(params, pure.init(params), inplace=False)
    assert_trees_close(u, u_ref)
    assert (
        fused.properties.apply_scaled(
            params, fused.init(params), params=params, factor=-1.0, inplace=True
        )
        is None
    )


# A parameter that receives gradients on some steps only: torch.optim counts its steps (bias
# corrections, the first momentum step) per parameter, and so must the fused path.
LATE_STEPS = (2, 3, 5)


def _late_losses(params: Sequence[torch.Tensor], step: int) -> torch.Tensor:
    x = torch.linspace(-1.0, 1.0, 12).reshape(3, 4) * (step + 1)
    out = x @ params[0] + (x @ params[1] if step in LATE_STEPS else 0.0)
    return (out - 0.5).pow(2).mean()


def _late_params() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(5)
    return (torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g))


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("Adam", dict(lr=0.05)),
        ("AdamW", dict(lr=0.05, weight_decay=0.1)),
        ("SGD", dict(lr=0.1, momentum=0.9)),
        ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True)),
    ],
)
def test_classic_fused_step_counts_steps_per_parameter_like_torch_optim(name, kwargs) -> None:
    ours = [torch.nn.Parameter(p.clone()) for p in _late_params()]
    theirs = [torch.nn.Parameter(p.clone()) for p in _late_params()]
    cls = {"RMSprop": difopt.RMSProp}.get(name, getattr(difopt, name))
    opt = cls(ours, **kwargs, use_accelerated_op=True)
    ref = getattr(torch.optim, name)(theirs, **kwargs)
    for step in range(7):
        for params, o in ((ours, opt), (theirs, ref)):
            o.zero_grad(set_to_none=True)
            _late_losses(params, step).backward()
            o.step()
    torch.testing.assert_close([p.detach() for p in ours], [p.detach() for p in theirs])


@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "functional"])
def test_functional_fused_update_with_lagging_counters_matches_pure(inplace: bool) -> None:
    fused = difopt.adam(lr=0.05, use_accelerated_op=True)
    pure = difopt.adam(lr=0.05)
    p_fused, p_pure = _late_params(), _late_params()
    s_fused, s_pure = fused.init(p_fused), pure.init(p_pure)
    for step in range(7):
        for tx, params, which in ((fused, p_fused, "fused"), (pure, p_pure, "pure")):
            ps = [p.detach().requires_grad_() for p in params]
            grads = torch.autograd.grad(_late_losses(ps, step), ps, allow_unused=True)
            state = s_fused if which == "fused" else s_pure
            updates, state = tx.update(grads, state, params=params, inplace=inplace)
            new = difopt.apply_updates(params, updates, inplace=inplace)
            if which == "fused":
                p_fused, s_fused = new, state
            else:
                p_pure, s_pure = new, state
    assert_trees_close(p_fused, p_pure)
    assert_trees_close(s_fused, s_pure)
