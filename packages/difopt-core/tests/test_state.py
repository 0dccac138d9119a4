"""Saving and restoring optimizer state: weights_only round trip, bit-identical resume."""

from __future__ import annotations

import copy
import io

import pytest
import torch

import difopt
from core_testing import make_data, make_mlp, mse

CLASSIC = [
    (difopt.SGD, dict(lr=0.01, momentum=0.9)),
    (difopt.Adam, dict(lr=0.01)),
    (difopt.AdamW, dict(lr=0.01)),
    (difopt.Adamax, dict(lr=0.01)),
    (difopt.RAdam, dict(lr=0.01)),
    (difopt.Adadelta, dict()),
    (difopt.Adagrad, dict(lr=0.01, lr_decay=0.1)),
    (difopt.RMSprop, dict(lr=0.01, centered=True, momentum=0.9)),
    (difopt.NAdam, dict(lr=0.01)),
    (difopt.Lion, dict(lr=0.001)),
    (difopt.Adan, dict(lr=0.01, weight_decay=0.01)),
]


def _steps(model, opt, data, n):
    for _ in range(n):
        opt.zero_grad()
        mse(model, data).backward()
        opt.step()


def _roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("cls,kw", CLASSIC, ids=[c.__name__ for c, _ in CLASSIC])
def test_resume_is_bit_identical(cls, kw):
    data = make_data()
    model = make_mlp()
    opt = cls(model.parameters(), **kw)
    _steps(model, opt, data, 5)
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = _roundtrip(opt.state_dict())
    _steps(model, opt, data, 5)

    resumed = make_mlp(seed=7)
    resumed.load_state_dict(saved_model)
    opt2 = cls(resumed.parameters(), **kw)
    opt2.load_state_dict(saved_opt)
    _steps(resumed, opt2, data, 5)
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def test_state_dict_contains_only_plain_containers():
    model = make_mlp()
    opt = difopt.Adam(model.parameters(), lr=difopt.schedule.linear_schedule(1e-2, 0.0, 10))
    _steps(model, opt, make_data(), 2)
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"}
    loaded = _roundtrip(sd)
    assert isinstance(loaded["param_groups"][0]["lr"], str)  # schedules are described, not pickled
    assert len(loaded["state"][0]) == len(sd["state"][0])


def test_load_state_dict_rejects_mismatch_and_changes_nothing():
    model = make_mlp()
    opt = difopt.Adam(model.parameters(), lr=0.01)
    _steps(model, opt, make_data(), 2)
    before = [t.clone() for t in difopt.pytree.tree_leaves(opt.state_groups)]
    other = difopt.Adam(torch.nn.Linear(2, 2).double().parameters(), lr=0.01)
    with pytest.raises(ValueError, match="state_dict"):
        opt.load_state_dict(other.state_dict())
    bad = opt.state_dict()
    bad["state"][0][-1] = torch.zeros(99)
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(bad)
    after = difopt.pytree.tree_leaves(opt.state_groups)
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_meta_optimizer_state_roundtrip():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    opt = difopt.MetaAdam(net, lr=0.1)
    opt.step((net(x) ** 2).mean())
    sd = _roundtrip(opt.state_dict())
    net2 = torch.nn.Linear(3, 1).double()
    net2.load_state_dict({k: v.detach() for k, v in net.state_dict().items()})
    opt2 = difopt.MetaAdam(net2, lr=0.1)
    opt2.load_state_dict(sd)
    opt.step((net(x) ** 2).mean())
    opt2.step((net2(x) ** 2).mean())
    assert torch.equal(net.weight.detach(), net2.weight.detach())


def test_torchopt_style_sequence_of_states_is_accepted():
    model = make_mlp()
    opt = difopt.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _steps(model, opt, make_data(), 2)
    states = copy.deepcopy(tuple(opt.state_groups))
    opt2 = difopt.SGD(make_mlp().parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(states)
    for a, b in zip(
        difopt.pytree.tree_leaves(opt.state_groups), difopt.pytree.tree_leaves(opt2.state_groups)
    ):
        assert torch.equal(a, b)


def test_func_optimizer_state_dict():
    w = torch.randn(3, requires_grad=True)
    fo = difopt.FuncOptimizer(difopt.adam(0.1))
    w1 = fo.step((w**2).sum(), w)
    state = fo.state_dict()
    fo2 = difopt.FuncOptimizer(difopt.adam(0.1))
    fo2.load_state_dict(state)
    torch.testing.assert_close(fo2.step((w1**2).sum(), w1), fo.step((w1**2).sum(), w1))


def test_state_dicts_saved_by_0_1_0_load_and_step_as_then() -> None:
    """State dicts saved by difopt-core 0.1.0 before the contract redesign (written by
    tests/data/make_saved_states.py at commit 02d6743) load into today's classes, and the
    next step gives exactly the parameters 0.1.0 computed."""
    import pathlib

    from data.make_saved_states import CASES, problem, step

    path = pathlib.Path(__file__).parent / "data" / "saved_states_0.1.0.pt"
    saved = torch.load(path, weights_only=True)
    assert set(saved) == set(CASES)
    for name, (cls, kw) in CASES.items():
        net, x, y = problem()
        net.load_state_dict(saved[name]["before"])
        opt = cls(net.parameters(), **kw)
        opt.load_state_dict(saved[name]["state_dict"])
        step(net, opt, x, y, skip_bias=False)
        for key, value in net.state_dict().items():
            assert torch.equal(value, saved[name]["after"][key]), (name, key)
