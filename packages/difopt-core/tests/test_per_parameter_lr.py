"""Per-parameter learning rates (Meta-SGD): ``lr`` given as a tree of tensors in the
functional and meta forms of SGD and Adam.

Oracles: the update written out by hand for each leaf, and ``torch.autograd.gradcheck`` in
float64 for the gradients of a meta-loss with respect to the learning rates.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import difopt

B1, B2, EPS = 0.9, 0.999, 1e-8


def _params(dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "w": torch.randn(3, 2, generator=g, dtype=dtype),
        "b": torch.randn(2, generator=g, dtype=dtype),
    }


def _lrs(dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    # a full-shape rate for "w", a 0-d rate for "b", a row-broadcast rate covered below
    return {
        "w": 0.05 + 0.1 * torch.rand(3, 2, generator=g, dtype=dtype),
        "b": torch.tensor(0.3, dtype=dtype),
    }


def _grads(step: int, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(10 + step)
    return {
        "w": torch.randn(3, 2, generator=g, dtype=dtype),
        "b": torch.randn(2, generator=g, dtype=dtype),
    }


def _run(impl: difopt.GradientTransformation, params: dict, steps: int) -> dict:
    state = impl.init(params)
    for k in range(steps):
        updates, state = impl.update(_grads(k), state, params=params, inplace=False)
        params = difopt.apply_updates(params, updates, inplace=False)
    return params


def _sgd_oracle(params: dict, lrs: dict, steps: int, momentum: float = 0.0) -> dict:
    out = {}
    for name, p in params.items():
        p, buf = p.clone(), None
        for k in range(steps):
            g = _grads(k)[name].to(p.dtype)
            if momentum:
                buf = g.clone() if buf is None else momentum * buf + g
                g = buf
            p = p - lrs[name] * g
        out[name] = p
    return out


def _adam_oracle(params: dict, lrs: dict, steps: int) -> dict:
    out = {}
    for name, p in params.items():
        p, m, v = p.clone(), torch.zeros_like(p), torch.zeros_like(p)
        for k in range(steps):
            g = _grads(k)[name].to(p.dtype)
            m = B1 * m + (1 - B1) * g
            v = B2 * v + (1 - B2) * g * g
            t = k + 1
            m_hat = m / (1 - B1**t)
            v_hat = v / (1 - B2**t)
            p = p - lrs[name] * m_hat / (v_hat.sqrt() + EPS)
        out[name] = p
    return out


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_functional_sgd_matches_hand_written_update(steps: int, momentum: float) -> None:
    params, lrs = _params(), _lrs()
    got = _run(difopt.sgd(lr=lrs, momentum=momentum), params, steps)
    want = _sgd_oracle(params, lrs, steps, momentum)
    for name in params:
        torch.testing.assert_close(got[name], want[name], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("steps", [1, 3])
def test_functional_adam_matches_hand_written_update(steps: int) -> None:
    params, lrs = _params(), _lrs()
    got = _run(difopt.adam(lr=lrs), params, steps)
    want = _adam_oracle(params, lrs, steps)
    for name in params:
        torch.testing.assert_close(got[name], want[name], rtol=1e-12, atol=1e-12)


def test_broadcast_rate_per_row() -> None:
    """A (3, 1) rate for a (3, 2) parameter scales each row by its own rate."""
    params = _params()
    lrs = {"w": torch.tensor([[0.1], [0.2], [0.3]], dtype=torch.float64), "b": torch.tensor(0.5)}
    got = _run(difopt.sgd(lr=lrs), params, 1)
    g = _grads(0)
    torch.testing.assert_close(got["w"], params["w"] - lrs["w"] * g["w"], rtol=0, atol=1e-15)
    torch.testing.assert_close(got["b"], params["b"] - 0.5 * g["b"], rtol=0, atol=1e-15)


def test_in_place_edit_of_a_rate_takes_effect() -> None:
    params, lrs = _params(), _lrs()
    impl = difopt.sgd(lr=lrs)
    state = impl.init(params)
    lrs["b"].fill_(0.0)
    updates, _ = impl.update(_grads(0), state, params=params, inplace=False)
    assert torch.equal(updates["b"], torch.zeros(2, dtype=torch.float64))


def test_missing_update_leaf_stays_none() -> None:
    params, lrs = _params(), _lrs()
    impl = difopt.adam(lr=lrs)
    state = impl.init(params)
    g = _grads(0)
    updates, _ = impl.update({"w": g["w"], "b": None}, state, params=params, inplace=False)
    assert updates["b"] is None
    want = _adam_oracle({"w": params["w"]}, lrs, 1)["w"] - params["w"]
    torch.testing.assert_close(updates["w"], want, rtol=1e-12, atol=1e-12)


def test_tree_lr_declares_no_scalar_learning_rate() -> None:
    """The fused paths and a classic optimizer's lr edits read ``learning_rate``/``scale``;
    a tree must declare neither (a float still does)."""
    tree_last = difopt.sgd(lr=_lrs()).transformations[-1]
    assert tree_last.properties.learning_rate is None
    assert tree_last.properties.scale is None
    float_last = difopt.sgd(lr=0.1).transformations[-1]
    assert float_last.properties.learning_rate == 0.1


# --- the meta forms -------------------------------------------------------------------------


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(
        6, 2, generator=g, dtype=torch.float64
    )


def _loss(net: nn.Module) -> torch.Tensor:
    x, y = _batch()
    return (net(x) - y).pow(2).mean()


def _rates(net: nn.Module, requires_grad: bool = False) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [
        (0.05 + 0.2 * torch.rand(p.shape, generator=g, dtype=p.dtype)).requires_grad_(requires_grad)
        for p in net.parameters()
    ]


@pytest.mark.parametrize("form", ["list", "tuple", "dict"])
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_meta_step_matches_hand_written_update(name: str, form: str) -> None:
    net = _net()
    rates = _rates(net)
    start = [p.detach().clone() for p in net.parameters()]
    # the oracle: two steps by hand, gradients from autograd at the hand-computed points
    ref = _net()
    ps = [p.detach().clone().requires_grad_() for p in ref.parameters()]
    ms = [torch.zeros_like(p) for p in ps]
    vs = [torch.zeros_like(p) for p in ps]
    for t in (1, 2):
        for p, q in zip(ref.parameters(), ps):
            p.data = q.detach()
        gs = torch.autograd.grad(_loss(ref), list(ref.parameters()))
        new = []
        for i, (q, g, r) in enumerate(zip(ps, gs, rates)):
            if name == "sgd":
                new.append(q.detach() - r * g)
            else:
                ms[i] = B1 * ms[i] + (1 - B1) * g
                vs[i] = B2 * vs[i] + (1 - B2) * g * g
                m_hat, v_hat = ms[i] / (1 - B1**t), vs[i] / (1 - B2**t)
                new.append(q.detach() - r * m_hat / (v_hat.sqrt() + EPS))
        ps = new

    if form == "dict":
        lr: object = {n: r for (n, _), r in zip(net.named_parameters(), rates)}
    else:
        lr = rates if form == "list" else tuple(rates)
    cls = difopt.MetaSGD if name == "sgd" else difopt.MetaAdam
    opt = cls(net, lr=lr)
    for _ in range(2):
        opt.step(_loss(net))
    for p, want, s in zip(net.parameters(), ps, start):
        torch.testing.assert_close(p.detach(), want, rtol=1e-10, atol=1e-12)
        assert not torch.equal(p.detach(), s)


def _meta_loss(name: str, steps: int, shapes: str):
    def f(*rates: torch.Tensor) -> torch.Tensor:
        net = _net()
        cls = difopt.MetaSGD if name == "sgd" else difopt.MetaAdam
        opt = cls(net, lr=list(rates))
        for _ in range(steps):
            opt.step(_loss(net))
        x, y = _batch()
        return (net(x + 0.5) - y).pow(2).sum()

    return f


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("name", ["sgd", "adam"])
@pytest.mark.parametrize("shapes", ["full", "scalar"])
def test_meta_lr_gradients_pass_gradcheck(name: str, steps: int, shapes: str) -> None:
    net = _net()
    if shapes == "full":
        rates = _rates(net, requires_grad=True)
    else:
        rates = [
            torch.tensor(0.1 + 0.05 * i, dtype=torch.float64).requires_grad_() for i in range(4)
        ]
    f = _meta_loss(name, steps, shapes)
    assert torch.autograd.gradcheck(f, tuple(rates), eps=1e-6, atol=1e-6, rtol=1e-5)
    grads = torch.autograd.grad(f(*rates), rates)
    assert all(g.abs().sum() > 0 for g in grads)


def test_meta_module_with_frozen_parameter() -> None:
    """Rates are given for the parameters that require grad only (in their order)."""
    net = _net()
    net[0].bias.requires_grad_(False)
    rates = [torch.tensor(0.1, dtype=torch.float64) for _ in range(3)]
    bias = net[0].bias.detach().clone()
    opt = difopt.MetaSGD(net, lr=rates)
    opt.step(_loss(net))
    assert torch.equal(net[0].bias, bias)
    names = {n: torch.tensor(0.1) for n, p in net.named_parameters() if p.requires_grad}
    difopt.MetaSGD(_net_frozen(), lr=names)


def _net_frozen() -> nn.Module:
    net = _net()
    net[0].bias.requires_grad_(False)
    return net


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lr, match",
    [
        ({"w": torch.tensor(0.1)}, "does not match the structure"),
        ({"w": torch.ones(3, dtype=torch.float64), "b": torch.tensor(0.1)}, "does not broadcast"),
        ({"w": torch.ones(3, 2, dtype=torch.float32), "b": torch.tensor(0.1)}, "dtype"),
    ],
    ids=["structure", "broadcast", "dtype"],
)
@pytest.mark.parametrize("alias", ["sgd", "adam"])
def test_functional_tree_that_does_not_fit_the_params(alias: str, lr: object, match: str) -> None:
    impl = getattr(difopt, alias)(lr=lr)
    with pytest.raises(ValueError, match=f"'lr'.*{match}"):
        impl.init(_params())


@pytest.mark.parametrize(
    "lr, match",
    [
        ([torch.tensor(-0.1)], "negative or non-finite"),
        ([torch.tensor(math.nan)], "negative or non-finite"),
        ([torch.ones(2), -torch.ones(2)], "leaf 1 .*negative"),
        ([0.1, torch.tensor(0.1)], "leaf 0 .*floating-point tensor"),
        ([torch.tensor(1)], "floating-point tensor"),
        ([], "empty tree"),
        ({"a": None}, "floating-point tensor"),
    ],
    ids=["negative", "nan", "negative-elem", "float-leaf", "int-leaf", "empty", "none-leaf"],
)
@pytest.mark.parametrize("alias", ["sgd", "adam"])
def test_invalid_tree_values(alias: str, lr: object, match: str) -> None:
    with pytest.raises(ValueError, match=f"Invalid value for 'lr': .*{match}"):
        getattr(difopt, alias)(lr=lr)


def test_update_checks_the_tree_too() -> None:
    impl = difopt.sgd(lr=[torch.tensor(0.1), torch.tensor(0.1)])
    state = impl.init([torch.ones(2), torch.ones(3)])
    with pytest.raises(ValueError, match="'lr'.*does not match"):
        impl.update([torch.ones(2)], state)


@pytest.mark.parametrize("cls", [difopt.SGD, difopt.Adam])
@pytest.mark.parametrize(
    "lr", [[torch.tensor(0.1)], {"weight": torch.tensor(0.1)}, torch.ones(3)], ids=str
)
def test_classic_form_refuses_a_tree(cls: type, lr: object) -> None:
    p = nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="Invalid value for 'lr'.*per parameter group"):
        cls([p], lr=lr)


def test_other_aliases_refuse_a_tree() -> None:
    with pytest.raises(ValueError, match="Invalid value for 'lr'"):
        difopt.rmsprop(lr=[torch.tensor(0.1)])


def test_meta_list_of_wrong_length() -> None:
    with pytest.raises(ValueError, match="'lr': 3 per-parameter learning rates for the 4"):
        difopt.MetaSGD(_net(), lr=[torch.tensor(0.1)] * 3)


def test_meta_dict_with_wrong_names() -> None:
    net = _net()
    lr = {n: torch.tensor(0.1) for n, _ in net.named_parameters()}
    lr["2.weigth"] = lr.pop("2.weight")
    with pytest.raises(
        ValueError, match=r"'lr'.*missing \['2.weight'\], unexpected \['2.weigth'\]"
    ):
        difopt.MetaAdam(net, lr=lr)


def test_meta_rate_that_does_not_broadcast() -> None:
    net = _net()
    rates = [torch.tensor(0.1, dtype=torch.float64) for _ in range(4)]
    rates[2] = torch.ones(2, dtype=torch.float64)  # the (2, 3) weight of the last layer
    with pytest.raises(ValueError, match="'lr': leaf 2 has shape \\(2,\\), which does not"):
        difopt.MetaSGD(net, lr=rates)
