"""Meta-gradients through 3 unrolled steps of every Meta optimizer pass gradcheck (float64)."""

from __future__ import annotations

import pytest
import torch

import difopt

# Hyper-parameters keep every update smooth at the test point: eps_root > 0 where a square
# root of a second moment is differentiated.
META = [
    (difopt.MetaSGD, dict(lr=0.1)),
    (difopt.MetaSGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)),
    (difopt.MetaAdam, dict(lr=0.1)),
    (difopt.MetaAdam, dict(lr=0.1, eps_root=1e-8, weight_decay=0.1, maximize=True)),
    (difopt.MetaAdamW, dict(lr=0.1, eps_root=1e-8)),
    (difopt.MetaAdam, dict(lr=0.1, betas=(0.9, 0.3), amsgrad=True, eps_root=1e-8)),
    (difopt.MetaAdamW, dict(lr=0.1, amsgrad=True, eps_root=1e-8, weight_decay=0.1)),
    (difopt.MetaAdam, dict(lr=0.1, weight_decay=0.1, decoupled_weight_decay=True)),
    (difopt.MetaAdamax, dict(lr=0.1)),
    (difopt.MetaRAdam, dict(lr=0.1)),
    (difopt.MetaRAdam, dict(lr=0.1, weight_decay=0.1, decoupled_weight_decay=True)),
    (difopt.MetaAdadelta, dict(lr=1.0)),
    (difopt.MetaAdagrad, dict(lr=0.1, lr_decay=0.1)),
    (difopt.MetaRMSprop, dict(lr=0.01)),
    (difopt.MetaRMSprop, dict(lr=0.01, centered=True, momentum=0.5)),
    (difopt.MetaNAdam, dict(lr=0.1)),
    (difopt.MetaLion, dict(lr=0.1, weight_decay=0.1)),
    (difopt.MetaAdan, dict(lr=0.1, weight_decay=0.1)),
    (difopt.MetaAdafactor, dict(lr=0.1, weight_decay=0.1)),
    (difopt.MetaAdafactor, dict(lr=0.5, d=1.0, eps=(1e-8, 1e-3))),
    (difopt.MetaRprop, dict(lr=0.05)),
    (difopt.MetaASGD, dict(lr=0.1, lambd=0.1, t0=1, weight_decay=0.1)),
]


def _unrolled_loss(cls, kw, w0, b0, scale):
    """Outer loss after 3 inner steps from the initial parameters (w0, b0); the inner loss
    depends on the meta-parameter ``scale``."""
    net = torch.nn.Linear(3, 2).double()
    net._parameters["weight"] = w0 * 1.0
    net._parameters["bias"] = b0 * 1.0
    opt = cls(net, **kw)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64)
    y = torch.randn(5, 2, generator=g, dtype=torch.float64)
    for _ in range(3):
        inner = ((torch.tanh(net(x)) - y) ** 2).mean() + scale * (net.weight**2).sum()
        opt.step(inner)
    return ((net(x) - y) ** 2).mean()


@pytest.mark.parametrize("cls,kw", META, ids=[f"{c.__name__}-{i}" for i, (c, _) in enumerate(META)])
def test_meta_gradient_gradcheck(cls, kw):
    g = torch.Generator().manual_seed(1)
    w0 = torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b0 = torch.randn(2, generator=g, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda w, b, s: _unrolled_loss(cls, kw, w, b, s), (w0, b0, scale), eps=1e-6, atol=1e-5
    )


def test_meta_adam_gradient_with_a_zero_gradient_parameter():
    """A parameter that never receives gradient: the meta-gradient stays finite with eps_root."""
    w0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    b0 = torch.randn(2, dtype=torch.float64, requires_grad=True)
    unused = torch.randn(4, dtype=torch.float64, requires_grad=True)

    def fn(w, b, u):
        net = torch.nn.Linear(3, 2).double()
        net._parameters["weight"] = w * 1.0
        net._parameters["bias"] = b * 1.0
        net.register_parameter("unused", torch.nn.Parameter(torch.zeros(4, dtype=torch.float64)))
        net._parameters["unused"] = u * 1.0
        opt = difopt.MetaAdam(net, lr=0.1, eps_root=1e-8)
        x = torch.ones(4, 3, dtype=torch.float64)
        for _ in range(3):
            opt.step((net(x) ** 2).mean())
        return (net(x) ** 2).mean() + net.unused.sum()

    assert torch.autograd.gradcheck(fn, (w0, b0, unused), eps=1e-6, atol=1e-5)


def test_meta_step_is_differentiable_and_matches_classic_values():
    """MetaAdam's parameter values equal the classic Adam's after the same steps."""
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1).double()
    ref = torch.nn.Linear(3, 1).double()
    ref.load_state_dict(net.state_dict())
    x = torch.randn(8, 3, dtype=torch.float64)
    meta = difopt.MetaAdam(net, lr=0.05)
    classic = torch.optim.Adam(ref.parameters(), lr=0.05)
    for _ in range(5):
        meta.step((net(x) ** 2).mean())
        classic.zero_grad()
        (ref(x) ** 2).mean().backward()
        classic.step()
    assert net.weight.grad_fn is not None
    torch.testing.assert_close(net.weight, ref.weight, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "cls",
    [difopt.MetaAdam, difopt.MetaRMSprop, difopt.MetaAdagrad, difopt.MetaNAdam, difopt.MetaRAdam],
)
def test_meta_gradients_stay_finite_where_a_second_moment_is_zero(cls):
    """Dead ReLU units give exactly-zero gradients; the meta-gradient must not be NaN.

    For Adam the oracle is the same run with eps_root=1e-30, whose square root is smooth at
    0 and whose values are the same to double precision.
    """
    x = torch.linspace(-5, 5, 10, dtype=torch.float64)[:, None]
    y = torch.sin(x)

    def meta_grads(kw):
        torch.manual_seed(0)
        net = torch.nn.Sequential(
            torch.nn.Linear(1, 40), torch.nn.ReLU(), torch.nn.Linear(40, 1)
        ).double()
        with torch.no_grad():
            net[0].bias[:5] = -100.0  # five dead units: their gradients are exactly zero
        init = list(net.parameters())
        opt = cls(net, lr=0.01, **kw)
        for _ in range(3):
            opt.step(((net(x) - y) ** 2).mean())
        return torch.autograd.grad(((net(x) - y) ** 2).mean(), init)

    grads = meta_grads({})
    assert all(torch.isfinite(g).all() for g in grads)
    if cls is difopt.MetaAdam:
        reference = meta_grads({"eps_root": 1e-30})
        for g, r in zip(grads, reference):
            torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("eps_root", [0.0, 1e-3])
def test_meta_adam_second_order_gradients(eps_root):
    """gradgradcheck through 2 MetaAdam steps: second-order meta-gradients are exact too."""
    g = torch.Generator().manual_seed(2)
    w0 = torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b0 = torch.randn(2, generator=g, dtype=torch.float64, requires_grad=True)

    def fn(w, b):
        net = torch.nn.Linear(3, 2).double()
        net._parameters["weight"] = w * 1.0
        net._parameters["bias"] = b * 1.0
        opt = difopt.MetaAdam(net, lr=0.1, eps_root=eps_root)
        x = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(4, 3)
        for _ in range(2):
            opt.step((torch.tanh(net(x)) ** 2).mean())
        return (net(x) ** 2).mean()

    assert torch.autograd.gradgradcheck(fn, (w0, b0), eps=1e-6, atol=1e-4)


def test_fused_meta_adam_equals_composite_update():
    """MetaAdam (the fused addcdiv apply) == MetaOptimizer over a chain
    that ends in a non-constant scale, which runs the composite autograd path."""
    torch.manual_seed(0)
    x = torch.randn(6, 3, dtype=torch.float64)

    def meta_grad(make_opt):
        torch.manual_seed(1)
        net = torch.nn.Sequential(
            torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)
        ).double()
        init = list(net.parameters())
        opt = make_opt(net)
        for _ in range(3):
            opt.step((net(x) ** 2).mean())
        return torch.autograd.grad((net(x) ** 2).mean(), init)

    fused = meta_grad(lambda net: difopt.MetaAdam(net, lr=0.05))
    composite = meta_grad(
        lambda net: difopt.MetaOptimizer(
            net, difopt.adam(lr=lambda count: 0.05, moment_requires_grad=True)
        )
    )
    for a, b in zip(fused, composite):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_meta_adam_on_an_mlp_whose_third_tensor_is_short():
    """torch 2.13's backward of ``_foreach_addcdiv`` raises when the i-th tensor has i rows or
    fewer (here the (2, 4) weight, third). MetaAdam's fused step must avoid it there and keep
    using it where it works; gradcheck of the meta-gradient covers both shapes."""

    def outer(w1, b1, w2, b2):
        net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
        net = net.double()
        for module, w, b in ((net[0], w1, b1), (net[2], w2, b2)):
            module._parameters["weight"] = w * 1.0
            module._parameters["bias"] = b * 1.0
        opt = difopt.MetaAdam(net, lr=0.1, eps_root=1e-8)
        x = torch.linspace(-1, 1, 15, dtype=torch.float64).reshape(5, 3)
        for _ in range(2):
            opt.step((net(x) ** 2).mean())
        return (net(x) ** 2).mean()

    gen = torch.Generator().manual_seed(0)
    shapes = [(4, 3), (4,), (2, 4), (2,)]
    inputs = [
        torch.randn(s, dtype=torch.float64, generator=gen, requires_grad=True) for s in shapes
    ]
    assert torch.autograd.gradcheck(outer, inputs, eps=1e-6, atol=1e-5)


def test_foreach_addcdiv_backward_is_right_where_difopt_uses_it():
    from difopt.transform._kernels import foreach_addcdiv_backward_ok

    gen = torch.Generator().manual_seed(0)
    shapes = [(5, 4), (6, 3), (7,), (40, 2)]

    def make(offset=0.0):
        return [
            (torch.rand(s, dtype=torch.float64, generator=gen) + offset).requires_grad_()
            for s in shapes
        ]

    ps, num, den = make(), make(), make(1.0)
    assert foreach_addcdiv_backward_ok(ps)
    weights = [torch.randn(s, dtype=torch.float64, generator=gen) for s in shapes]
    fused = torch._foreach_addcdiv(ps, num, den, value=0.3)
    plain = [torch.addcdiv(p, n, d, value=0.3) for p, n, d in zip(ps, num, den)]
    grads = [
        torch.autograd.grad(sum((o * w).sum() for o, w in zip(out, weights)), ps + num + den)
        for out in (fused, plain)
    ]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert not foreach_addcdiv_backward_ok([torch.zeros(2), torch.zeros(2), torch.zeros(2)])
    assert not foreach_addcdiv_backward_ok([torch.zeros(())])


@pytest.mark.parametrize(
    "name",
    ["sgd", "adam", "adamw", "rmsprop", "adagrad", "nadam", "adan", "adamax", "radam", "asgd"],
)
def test_hypergradient_with_respect_to_a_tensor_learning_rate(name):
    """``lr`` as a 0-d tensor that requires grad: the loss after 3 unrolled functional steps
    differentiates with respect to it (hyper-parameter learning); gradcheck in float64."""
    gen = torch.Generator().manual_seed(0)
    p0 = torch.randn(5, generator=gen, dtype=torch.float64)
    a = torch.randn(5, 5, generator=gen, dtype=torch.float64)

    def loss(p):
        return ((a @ p).sin() ** 2).sum()

    def unrolled(lr):
        tx = getattr(difopt, name)(lr=lr)
        params = (p0.clone().requires_grad_(),)
        state = tx.init(params)
        for _ in range(3):
            g = torch.autograd.grad(loss(params[0]), params, create_graph=True)
            updates, state = tx.update(g, state, params=params, inplace=False)
            params = difopt.apply_updates(params, updates, inplace=False)
        return loss(params[0])

    lr = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(unrolled, (lr,))
    (grad,) = torch.autograd.grad(unrolled(lr), lr)
    assert grad.abs() > 0


@pytest.mark.parametrize("with_params", [True, False], ids=["apply", "direction"])
@pytest.mark.parametrize("c", [0.0, 1e-3], ids=["c=0", "c>0"])
def test_fused_ratio_of_root_backward_against_the_composite(c, with_params):
    """``[ps +] value * num / (sqrt(b x + c) + eps)`` with its one-pass backward (the
    differentiable steps of Adam and RMSprop): float64 gradcheck and gradgradcheck, and
    equality with autograd through the plain expression; where x is 0 (c = 0) the
    derivative in x is 0."""
    from difopt.transform._kernels import _RatioOfRoot, add_ratio_of_root

    gen = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (4,), ()]
    value, eps = -0.7, 1e-3
    b = 1.0 if with_params else 1.7  # the apply path takes x as it is

    def draw(low=0.0):
        return [
            (torch.rand(s, generator=gen, dtype=torch.float64) + low).requires_grad_()
            for s in shapes
        ]

    ps, num, xs = draw(), draw(-0.5), draw(0.1)
    n = len(shapes)

    def fused(*t):
        if with_params:
            return tuple(add_ratio_of_root(t[:n], t[n : 2 * n], t[2 * n :], c, eps, value, False))
        return _RatioOfRoot.apply(value, eps, b, c, n, 0, *t)

    def plain(*t):
        base = t[:n] if with_params else [0.0] * n
        nums, xs_ = (t[n : 2 * n], t[2 * n :]) if with_params else (t[:n], t[n:])
        return [p + value * m / ((b * x + c).sqrt() + eps) for p, m, x in zip(base, nums, xs_)]

    inputs = (*ps, *num, *xs) if with_params else (*num, *xs)
    assert torch.autograd.gradcheck(fused, inputs)
    assert torch.autograd.gradgradcheck(fused, inputs)
    weights = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    want = torch.autograd.grad(plain(*inputs), inputs, weights)
    got = torch.autograd.grad(fused(*inputs), inputs, weights)
    for a, w in zip(got, want):
        torch.testing.assert_close(a, w, rtol=1e-12, atol=1e-14)
    if c == 0.0:
        zero = [x.detach().clone() for x in xs]
        zero[0][0, 0] = 0.0
        zero = [z.requires_grad_() for z in zero]
        args = (*ps, *num, *zero) if with_params else (*num, *zero)
        grads = torch.autograd.grad(fused(*args), zero, weights)
        assert grads[0][0, 0] == 0.0 and torch.isfinite(grads[0]).all()


def test_hyper_gradient_of_a_tensor_lr_over_several_parameters():
    """d/d lr of sum(p - lr g) over three parameters is -sum(g) (closed form); torch 2.13's
    foreach multiply by a scalar tensor fails in this backward, so difopt must not use it."""
    lr = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    params = [torch.randn(n, dtype=torch.float64, requires_grad=True) for n in (3, 2, 4)]
    grads = [torch.full_like(p, float(i + 1)) for i, p in enumerate(params)]
    tx = difopt.sgd(lr)
    updates, _ = tx.update(grads, tx.init(params), params=params, inplace=False)
    new = difopt.apply_updates(params, updates, inplace=False)
    (d_lr,) = torch.autograd.grad(sum(p.sum() for p in new), lr)
    assert torch.allclose(d_lr, -sum(g.sum() for g in grads))

    def outer(lr_value):
        tx = difopt.sgd(lr_value, momentum=0.9)
        state = tx.init(params)
        ps = [p.detach() for p in params]
        for _ in range(2):
            g = [2.0 * p for p in ps]
            u, state = tx.update(g, state, params=ps, inplace=False)
            ps = difopt.apply_updates(ps, u, inplace=False)
        return sum((p**2).sum() for p in ps)

    assert torch.autograd.gradcheck(outer, (lr,))
