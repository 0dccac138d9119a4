"""Building blocks: chain, identity, masked, clipping, NaN handling, hooks, schedules."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

import difopt
from difopt import registry, transform
from difopt.schedule import (
    cosine_decay,
    exponential_decay,
    linear_schedule,
    polynomial_schedule,
    warmup_cosine_decay,
)


def test_chain_flattens_compares_and_pickles():
    a, b, c = transform.scale(2.0), transform.trace(0.5), difopt.clip_grad_norm(1.0)
    nested = difopt.chain(a, difopt.chain(b, difopt.chain(c)), difopt.base.identity())
    assert nested.transformations == (a, b, c)
    assert nested == difopt.chain(
        transform.scale(2.0), transform.trace(0.5), difopt.clip_grad_norm(1.0)
    )
    assert nested != difopt.chain(transform.scale(3.0), b, c)
    assert "scale(step_size=2.0)" in repr(nested) and "trace(momentum=0.5" in repr(nested)
    for impl in (
        nested,
        difopt.adamw(mask={"w": True, "b": False}),
        difopt.adagrad(lr_decay=0.1),
        difopt.adam(lr=linear_schedule(1.0, 0.0, 5)),
    ):
        again = pickle.loads(pickle.dumps(impl))
        assert again == impl and repr(again) == repr(impl)
    params = [torch.ones(2)]
    out, _ = nested.update([torch.ones(2)], nested.init(params))
    # scale by 2, momentum's first step passes through, then clip the norm sqrt(8) to 1
    torch.testing.assert_close(out[0], torch.full((2,), 2.0 / (math.sqrt(8) + 1e-6)))


def test_identity_and_empty_chain():
    ident = difopt.base.identity()
    g = {"w": torch.ones(2)}
    assert ident.update(g, ident.init(g))[0] is g
    empty = difopt.chain()
    assert empty.update(g, empty.init(g))[0] is g


def test_masked_applies_inner_only_where_true():
    params = {"w": torch.ones(3), "b": torch.ones(2)}
    impl = transform.masked(transform.scale(10.0), {"w": True, "b": False})
    g = {"w": torch.ones(3), "b": torch.ones(2)}
    out, _ = impl.update(g, impl.init(params), params=params)
    assert torch.equal(out["w"], torch.full((3,), 10.0)) and out["b"] is g["b"]
    with pytest.raises(ValueError, match="'mask'"):
        transform.masked(transform.scale(1.0), {"w": True}).init(params)


def test_adamw_mask_matches_two_torch_groups():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2).double()
    ref = torch.nn.Linear(3, 2).double()
    ref.load_state_dict(net.state_dict())
    mask = lambda p: {"weight": True, "bias": False}  # noqa: E731
    params = dict(net.named_parameters())
    impl = difopt.adamw(1e-2, weight_decay=0.5, mask=mask)
    state = impl.init(params)
    theirs = torch.optim.AdamW(
        [{"params": [ref.weight]}, {"params": [ref.bias], "weight_decay": 0.0}],
        lr=1e-2,
        weight_decay=0.5,
    )
    x = torch.randn(4, 3, dtype=torch.float64)
    for _ in range(10):
        grads = dict(zip(params, torch.autograd.grad(net(x).sum(), list(params.values()))))
        updates, state = impl.update(grads, state, params=params)
        difopt.apply_updates(params, updates)
        theirs.zero_grad()
        ref(x).sum().backward()
        theirs.step()
    torch.testing.assert_close(net.weight, ref.weight)
    torch.testing.assert_close(net.bias, ref.bias)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
def test_clip_grad_norm_matches_torch(norm_type):
    torch.manual_seed(0)
    grads = [torch.randn(4, 3, dtype=torch.float64) * 5, torch.randn(7, dtype=torch.float64)]
    impl = difopt.clip_grad_norm(1.5, norm_type=norm_type)
    out, _ = impl.update(grads, impl.init(grads))
    params = [torch.zeros_like(g, requires_grad=True) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    torch.nn.utils.clip_grad_norm_(params, 1.5, norm_type=norm_type)
    for o, p in zip(out, params):
        torch.testing.assert_close(o, p.grad)


def test_nan_to_num_transform_and_hooks():
    g = [torch.tensor([math.nan, math.inf, -math.inf, 1.0])]
    impl = difopt.nan_to_num(nan=0.0, posinf=9.0, neginf=-9.0)
    out, _ = impl.update(g, impl.init(g))
    assert out[0].tolist() == [0.0, 9.0, -9.0, 1.0]

    x = torch.ones(3, requires_grad=True)
    u = x * 1.0
    hook_impl = difopt.register_hook(difopt.hook.zero_nan_hook)
    (u2,), _ = hook_impl.update((u,), hook_impl.init((u,)))
    (u2 * torch.tensor([math.nan, 1.0, 2.0])).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 2.0]

    y = torch.ones(2, requires_grad=True)
    v = y * 1.0
    v.register_hook(difopt.hook.nan_to_num_hook(nan=-1.0))
    (v * torch.tensor([math.nan, 3.0])).sum().backward()
    assert y.grad.tolist() == [-1.0, 3.0]


def test_add_decayed_weights_and_trace_closed_forms():
    p = [torch.tensor([2.0])]
    impl = transform.add_decayed_weights(0.5)
    out, _ = impl.update([torch.tensor([1.0])], impl.init(p), params=p)
    assert out[0].item() == 2.0  # 1 + 0.5 * 2
    tr = transform.trace(momentum=0.5)
    state = tr.init(p)
    outs = []
    for _ in range(3):
        o, state = tr.update([torch.tensor([1.0])], state, inplace=False)
        outs.append(o[0].item())
    assert outs == [1.0, 1.5, 1.75]


def test_scale_by_schedule_uses_the_count_before_increment():
    sched = lambda count: 1.0 / (count + 1)  # noqa: E731
    impl = transform.scale_by_schedule(sched)
    state = impl.init([torch.zeros(1)])
    seen = []
    for _ in range(3):
        out, state = impl.update([torch.ones(1)], state)
        seen.append(out[0].item())
    assert seen == [1.0, 0.5, pytest.approx(1 / 3)]


def test_schedules_closed_forms():
    poly = polynomial_schedule(1.0, 0.1, power=2, transition_steps=10, transition_begin=5)
    assert poly(0) == 1.0 and poly(5) == 1.0
    assert poly(10) == pytest.approx((1.0 - 0.1) * 0.5**2 + 0.1)
    assert poly(15) == pytest.approx(0.1) and poly(100) == pytest.approx(0.1)
    lin = linear_schedule(0.0, 1.0, transition_steps=4)
    assert [lin(t) for t in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    exp = exponential_decay(2.0, 0.5, transition_begin=2, transition_steps=3)
    assert exp(2) == 2.0 and exp(5) == pytest.approx(1.0) and exp(8) == pytest.approx(0.5)
    stair = exponential_decay(1.0, 0.1, transition_steps=10, staircase=True, end_value=0.05)
    assert stair(9) == 1.0 and stair(10) == pytest.approx(0.1) and stair(25) == 0.05
    # end_value is a floor when decaying and a ceiling when growing, even from the wrong side.
    floor = exponential_decay(0.1, 0.5, transition_steps=1, end_value=0.8)
    assert floor(0) == 0.8 and floor(5) == 0.8
    ceiling = exponential_decay(1.0, 2.0, transition_steps=1, end_value=3.0)
    assert ceiling(1) == pytest.approx(2.0) and ceiling(2) == 3.0
    cos = cosine_decay(1.0, decay_steps=10, alpha=0.1)
    assert cos(0) == 1.0 and cos(10) == pytest.approx(0.1)
    assert cos(5) == pytest.approx(0.9 * 0.5 + 0.1)
    warm = warmup_cosine_decay(0.0, 1.0, warmup_steps=4, decay_steps=14, end_value=0.2)
    assert warm(2) == pytest.approx(0.5) and warm(4) == pytest.approx(1.0)
    assert warm(9) == pytest.approx(0.2 + 0.8 * 0.5) and warm(20) == pytest.approx(0.2)
    # Tensor counts give the same values (used inside torch.func transforms).
    for s in (poly, lin, exp, stair, cos, warm):
        for t in (0, 3, 7, 12):
            assert float(s(torch.tensor(t))) == pytest.approx(s(t), rel=1e-6)
    assert pickle.loads(pickle.dumps(warm)) == warm


def test_pytree_arithmetic():
    from difopt import pytree

    a = {"x": torch.tensor([1.0, 2.0]), "y": (torch.tensor(3.0),)}
    b = {"x": torch.tensor([4.0, 5.0]), "y": (torch.tensor(6.0),)}
    assert torch.equal(pytree.tree_add(a, b)["x"], torch.tensor([5.0, 7.0]))
    assert torch.equal(pytree.tree_sub(b, a)["y"][0], torch.tensor(3.0))
    assert torch.equal(pytree.tree_add_scalar_mul(a, b, 2.0)["x"], torch.tensor([9.0, 12.0]))
    assert torch.equal(pytree.tree_sub_scalar_mul(a, b, 1.0)["x"], torch.tensor([-3.0, -3.0]))
    assert torch.equal(pytree.tree_scalar_mul(2.0, a)["x"], torch.tensor([2.0, 4.0]))
    assert torch.equal(pytree.tree_mul(a, b)["x"], torch.tensor([4.0, 10.0]))
    assert torch.equal(pytree.tree_truediv(b, 2.0)["x"], torch.tensor([2.0, 2.5]))
    assert torch.equal(pytree.tree_neg(a)["y"][0], torch.tensor(-3.0))
    assert pytree.tree_vdot_real(a, b).item() == 1 * 4 + 2 * 5 + 3 * 6
    leaves, spec = pytree.tree_flatten_as_tuple(a)
    assert isinstance(leaves, tuple) and len(leaves) == 2
    fut = torch.futures.Future()
    fut.set_result(torch.tensor(1.0))
    assert pytree.tree_wait({"f": fut})["f"].item() == 1.0


@pytest.mark.parametrize("eps_root", [0.0, 1e-8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_apply_equals_update_then_add(dtype, eps_root):
    """The optimizers' fused path (apply_scaled) computes what update() defines."""
    impl = transform.scale_by_adam(0.8, 0.95, 1e-6, eps_root=eps_root)
    assert impl.properties.apply_scaled is not None
    torch.manual_seed(0)
    p1 = [torch.randn(5, 3, dtype=dtype), torch.randn(7, dtype=dtype)]
    p2 = [p.clone() for p in p1]
    p3 = [p.clone() for p in p1]
    s1, s2, s3 = impl.init(p1), impl.init(p2), impl.init(p3)
    for _ in range(10):
        g = [torch.randn_like(p) for p in p1]
        _, s1 = impl.properties.apply_scaled(g, s1, params=p1, factor=-0.01, inplace=True)
        p3, s3 = impl.properties.apply_scaled(g, s3, params=p3, factor=-0.01, inplace=False)
        u, s2 = impl.update(g, s2, params=p2, inplace=True)
        for p, d in zip(p2, u):
            p.add_(d, alpha=-0.01)
    tol = dict(rtol=1e-5, atol=1e-7) if dtype == torch.float32 else dict(rtol=1e-12, atol=0)
    for a, b, c in zip(p1, p2, p3):
        torch.testing.assert_close(a, b, **tol)
        torch.testing.assert_close(c, b, **tol)
    for s in (s1, s2, s3):
        assert [int(c) for c in s.count] == [10, 10]  # one counter per parameter
    for x, y in zip(s3.nu, s2.nu):
        torch.testing.assert_close(x, y, **tol)


def test_fused_apply_gives_way_when_step_counters_differ():
    """apply_scaled reads one step value; with counters that differ it declines (None) and
    leaves the state untouched, and update() computes each parameter at its own step."""
    impl = transform.scale_by_adam()
    p = [torch.ones(3), torch.ones(2)]
    state = impl.init(p)
    impl.update([torch.ones(3), None], state, params=p)  # the second parameter skips a step
    assert [int(c) for c in state.count] == [1, 0]
    before = [x.clone() for x in state.mu]
    assert (
        impl.properties.apply_scaled(
            [torch.ones(3), torch.ones(2)], state, params=p, factor=-1.0, inplace=True
        )
        is None
    )
    assert [int(c) for c in state.count] == [1, 0]
    torch.testing.assert_close(list(state.mu), before)
    out, state = impl.update([torch.full((3,), 3.0), torch.full((2,), 3.0)], state, params=p)
    assert [int(c) for c in state.count] == [2, 1]

    def adam_direction(gs: list[float]) -> float:  # closed form, the steps of one parameter
        mu = nu = 0.0
        for g in gs:
            mu, nu = 0.9 * mu + 0.1 * g, 0.999 * nu + 0.001 * g * g
        t = len(gs)
        return (mu / (1 - 0.9**t)) / (math.sqrt(nu / (1 - 0.999**t)) + 1e-8)

    expected = [
        torch.full((3,), adam_direction([1.0, 3.0])),
        torch.full((2,), adam_direction([3.0])),
    ]
    torch.testing.assert_close(list(out), expected)


def test_fused_apply_is_differentiable():
    """gradcheck of params + factor * adam(g) through the fused (out-of-place) path."""
    impl = transform.scale_by_adam(eps_root=1e-8)

    def fused(p, q, g):
        params = [p, q]
        state = impl.init(params)
        for _ in range(2):
            grads = [g * params[0], params[1] ** 2]
            params, state = impl.properties.apply_scaled(
                grads, state, params=params, factor=-0.1, inplace=False
            )
        return params[0].sum() + params[1].sum()

    p = torch.randn(4, dtype=torch.float64, requires_grad=True)
    q = torch.randn(1, dtype=torch.float64, requires_grad=True)  # leaves of mixed shapes
    g = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fused, (p, q, g))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("inplace", [True, False])
def test_centered_rms_variance_is_exactly_zero_where_mean_square_equals_square_mean(dtype, inplace):
    # alpha = 0: mu = g and nu = g^2, so nu - mu^2 is 0 exactly; a single fused multiply-add
    # would leave a residue of either sign and a NaN after the square root.
    g = torch.linspace(-3.0, 3.0, 997, dtype=dtype) * 1.1
    p = torch.zeros_like(g)
    opt = difopt.RMSProp(
        [torch.nn.Parameter(p.clone())], lr=0.5, alpha=0.0, centered=True, eps=1e-3
    )
    param = opt.param_groups[0]["params"][0]
    param.grad = g.clone()
    opt.step()
    torch.testing.assert_close(param.detach(), -0.5 * g / 1e-3)
    tx = difopt.transform.scale_by_stddev(alpha=0.0, eps=1e-3)
    out, _ = tx.update([g.clone()], tx.init([p]), inplace=inplace)
    torch.testing.assert_close(out[0], g / 1e-3)


def test_scale_by_amsgrad_closed_form():
    """Two steps, g = 2 then 0 (b1 = 0.9, b2 = 0.5): nu falls from 2 to 1, nu_max stays 2, and
    the second output is (mu_2 / (1 - b1^2)) / sqrt(nu_max / (1 - b2^2)) = (0.18 / 0.19) /
    sqrt(2 / 0.75)."""
    tx = difopt.transform.scale_by_amsgrad(b1=0.9, b2=0.5, eps=0.0)
    for inplace in (True, False):
        p = torch.zeros(3, dtype=torch.float64)
        state = tx.init(p)
        out, state = tx.update(torch.full_like(p, 2.0), state, inplace=inplace)
        torch.testing.assert_close(out, torch.ones_like(p))  # (0.2 / 0.1) / sqrt(2 / 0.5)
        out, state = tx.update(torch.zeros_like(p), state, inplace=inplace)
        torch.testing.assert_close(state.nu, torch.ones_like(p))
        torch.testing.assert_close(state.nu_max, torch.full_like(p, 2.0))
        expected = (0.18 / 0.19) / math.sqrt(2.0 / 0.75)
        torch.testing.assert_close(out, torch.full_like(p, expected))
        assert int(state.count) == 2


def test_amsgrad_with_use_accelerated_op_warns_once_and_runs_pure():
    """The fused Adam op has no AMSGrad variant: the optimizer warns and still computes
    AMSGrad (three steps with a shrinking gradient, where the maximum holds and AMSGrad
    differs from Adam), not a fused plain Adam."""
    registry._warned.discard("amsgrad-accelerated")
    with pytest.warns(registry.PluginWarning, match="no AMSGrad variant"):
        tx = difopt.adam(0.1, (0.9, 0.5), amsgrad=True, use_accelerated_op=True)
    p = [torch.randn(4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))]
    grads = [[torch.full((4,), v, dtype=torch.float64)] for v in (2.0, 0.5, 0.1)]

    def run(impl):
        state, params = impl.init(p), p
        for g in grads:
            updates, state = impl.update(g, state, params=params, inplace=False)
            params = difopt.apply_updates(params, updates, inplace=False)
        return params[0]

    ams = run(tx)
    torch.testing.assert_close(ams, run(difopt.adam(0.1, (0.9, 0.5), amsgrad=True)), rtol=0, atol=0)
    assert not torch.allclose(ams, run(difopt.adam(0.1, (0.9, 0.5))))
