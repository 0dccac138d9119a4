"""Parameters without a gradient: ``None`` update leaves (``autograd.grad(allow_unused=True)``).

Contract: the parameter and its per-parameter state (moments, traces, step counter) stay as
they are and the update leaf stays ``None``. The oracle is torch.optim, which skips
parameters whose ``.grad`` is None and counts steps per parameter.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import difopt

# (difopt alias, torch.optim class, shared keyword arguments)
CASES = {
    "sgd-momentum-wd": (difopt.sgd, torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.1)),
    "adam-wd": (difopt.adam, torch.optim.Adam, dict(lr=0.01, weight_decay=0.1)),
    "adamw": (difopt.adamw, torch.optim.AdamW, dict(lr=0.01, weight_decay=0.1)),
    "rmsprop-centered": (difopt.rmsprop, torch.optim.RMSprop, dict(lr=0.01, centered=True)),
    "adagrad": (difopt.adagrad, torch.optim.Adagrad, dict(lr=0.1)),
}


class WithUnused(torch.nn.Module):
    """A regressor with a parameter and a sub-module the loss never touches."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.used = torch.nn.Linear(4, 2).double()
        self.unused = torch.nn.Linear(3, 3).double()
        self.scale = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x) * self.scale


def _data(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(8, 4, generator=g, dtype=torch.float64), torch.randn(
        8, 2, generator=g, dtype=torch.float64
    )


def _torch_reference(cls, kwargs, steps: int) -> list[torch.Tensor]:
    net = WithUnused()
    opt = cls(net.parameters(), **kwargs)
    for step in range(steps):
        x, y = _data(step)
        opt.zero_grad()
        F.mse_loss(net(x), y).backward()
        opt.step()
    return [p.detach() for p in net.parameters()]


@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "functional"])
@pytest.mark.parametrize("case", CASES)
def test_functional_update_with_unused_parameters_matches_torch_optim(case, inplace):
    alias, cls, kwargs = CASES[case]
    net = WithUnused()
    params = tuple(p.detach().clone().requires_grad_() for p in net.parameters())
    names = [n for n, _ in net.named_parameters()]
    tx = alias(**kwargs)
    state = tx.init(params)
    for step in range(5):
        x, y = _data(step)
        out = torch.func.functional_call(net, dict(zip(names, params)), (x,))
        grads = torch.autograd.grad(F.mse_loss(out, y), params, allow_unused=True)
        assert sum(g is None for g in grads) == 2  # unused.weight, unused.bias
        updates, state = tx.update(grads, state, params=params, inplace=inplace)
        assert [u is None for u in updates] == [g is None for g in grads]
        params = difopt.apply_updates(params, updates, inplace=inplace)
    expected = _torch_reference(cls, kwargs, 5)
    torch.testing.assert_close([p.detach() for p in params], expected)


@pytest.mark.parametrize("case", CASES)
def test_classic_optimizer_leaves_parameters_without_grad_and_their_state_alone(case):
    alias, cls, kwargs = CASES[case]
    net = WithUnused()
    names = [n for n, _ in net.named_parameters()]
    unused = [i for i, n in enumerate(names) if n.startswith("unused")]
    opt = difopt.optim._forms.classic_class(alias)(net.parameters(), **kwargs)
    before = [
        [x.clone() for x in f] for f in _per_parameter_fields(opt.state_groups[0], len(names))
    ]
    assert before, "the optimizer keeps per-parameter state"
    for step in range(5):
        x, y = _data(step)
        opt.zero_grad()
        F.mse_loss(net(x), y).backward()
        opt.step()
    expected = _torch_reference(cls, kwargs, 5)
    torch.testing.assert_close([p.detach() for p in net.parameters()], expected)
    after = _per_parameter_fields(opt.state_groups[0], len(names))
    for old, new in zip(before, after):
        for i in range(len(names)):
            if i in unused:
                torch.testing.assert_close(new[i], old[i], rtol=0, atol=0)
            else:
                assert not torch.equal(new[i], old[i])


def _per_parameter_fields(state, n: int):
    """Lists of leaves of the state fields that hold one tensor per parameter."""
    out = []
    for part in state:
        for field in getattr(part, "_fields", ()):
            leaves = difopt.pytree.tree_leaves(getattr(part, field))
            if len(leaves) == n:
                out.append(leaves)
    return out


def test_moments_of_a_parameter_skipped_for_a_step_are_unchanged():
    w = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    v = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt = difopt.Adam([w, v], lr=0.1)
    w.grad, v.grad = torch.full((3,), 2.0, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    opt.step()
    mu_v = opt.state_groups[0][1].mu[1].clone()
    v_before = v.detach().clone()
    v.grad = None
    w.grad = torch.ones(3, dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(opt.state_groups[0][1].mu[1], mu_v)
    torch.testing.assert_close(v.detach(), v_before)
    assert [int(c) for c in opt.state_groups[0][1].count] == [2, 1]  # per parameter


def test_meta_optimizer_keeps_unused_parameters_and_differentiates_the_rest():
    net = WithUnused()
    unused_weight = net.unused.weight
    opt = difopt.MetaSGD(net, lr=0.1, momentum=0.9, weight_decay=0.1)
    init = dict(net.named_parameters())
    x, y = _data(0)
    opt.step(F.mse_loss(net(x), y))
    assert net.unused.weight is unused_weight  # no decay, no new tensor
    loss = F.mse_loss(net(x), y)
    grads = torch.autograd.grad(loss, [init["used.weight"], init["scale"]])
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_func_optimizer_with_weight_decay_leaves_unused_parameters_alone():
    net = WithUnused()
    names = [n for n, _ in net.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in net.parameters())
    opt = difopt.FuncOptimizer(difopt.sgd(lr=0.1, weight_decay=0.1))
    for step in range(3):
        x, y = _data(step)
        out = torch.func.functional_call(net, dict(zip(names, params)), (x,))
        params = opt.step(F.mse_loss(out, y), params)
    expected = _torch_reference(torch.optim.SGD, dict(lr=0.1, weight_decay=0.1), 3)
    torch.testing.assert_close([p.detach() for p in params], expected)


def test_masked_and_chained_transformations_pass_missing_leaves_through():
    params = {"a": torch.ones(2), "b": torch.ones(3), "c": torch.ones(1)}
    mask = {"a": True, "b": False, "c": True}
    tx = difopt.chain(
        difopt.clip_grad_norm(1.0),
        difopt.transform.masked(difopt.transform.scale_by_adam(), mask),
        difopt.transform.scale(-0.1),
    )
    state = tx.init(params)
    grads = {"a": torch.full((2,), 3.0), "b": torch.full((3,), 4.0), "c": None}
    updates, state = tx.update(grads, state, params=params)
    assert updates["c"] is None
    # clip: norm of (3, 3, 4, 4, 4) = sqrt(66); b passes Adam by, a goes through it.
    torch.testing.assert_close(updates["b"], torch.full((3,), -0.4 / 66**0.5))
    torch.testing.assert_close(updates["a"], torch.full((2,), -0.1), rtol=1e-6, atol=1e-6)
    inner = state[1].inner_state
    torch.testing.assert_close(inner.mu[1], torch.zeros(1))  # c: untouched


def test_all_missing_updates_change_nothing():
    tx = difopt.adam(0.1)
    params = (torch.ones(2), torch.ones(3))
    state = tx.init(params)
    updates, new_state = tx.update((None, None), state, params=params)
    assert updates == (None, None)
    assert new_state is state


def test_a_plain_stateful_transformation_in_a_chain_sees_complete_trees():
    """Third-party transformations without difopt's decorator get the missing leaves hidden."""
    seen = []

    def init(params):
        return difopt.pytree.tree_map(torch.zeros_like, params)

    def update(updates, state, *, params=None, inplace=True):
        seen.append(updates)
        new_state = difopt.pytree.tree_map(lambda s, u: s + u, state, updates)
        return updates, new_state

    tx = difopt.chain(difopt.base.GradientTransformation(init, update), difopt.transform.scale(2.0))
    params = [torch.ones(2), torch.ones(3)]
    state = tx.init(params)
    updates, state = tx.update([None, torch.ones(3)], state, params=params)
    assert updates[0] is None
    torch.testing.assert_close(updates[1], torch.full((3,), 2.0))
    torch.testing.assert_close(state[0][0], torch.zeros(2))
    torch.testing.assert_close(state[0][1], torch.ones(3))


def test_apply_updates_skips_missing_leaves():
    params = {"a": torch.ones(2, requires_grad=True), "b": torch.ones(1, requires_grad=True)}
    new = difopt.apply_updates(params, {"a": torch.ones(2), "b": None}, inplace=False)
    assert new["b"] is params["b"]
    torch.testing.assert_close(new["a"], torch.full((2,), 2.0))
    with pytest.raises(ValueError, match="does not match"):
        difopt.apply_updates(params, {"a": torch.ones(2)})


# ----------------------------------------------------------- parameters used on some steps only

# Every optimizer whose update depends on the step number (bias corrections, NAdam's momentum
# schedule, the first step of a momentum buffer), with torch.optim's equivalent.
STEP_CASES = {
    "adam": (difopt.adam, torch.optim.Adam, dict(lr=0.05)),
    "adam-wd": (difopt.adam, torch.optim.Adam, dict(lr=0.05, weight_decay=0.1)),
    "adamw": (difopt.adamw, torch.optim.AdamW, dict(lr=0.05, weight_decay=0.1)),
    "amsgrad": (difopt.adam, torch.optim.Adam, dict(lr=0.05, betas=(0.9, 0.6), amsgrad=True)),
    "adamax": (difopt.adamax, torch.optim.Adamax, dict(lr=0.05, eps=1e-8)),
    "radam": (difopt.radam, torch.optim.RAdam, dict(lr=0.05)),
    "nadam": (difopt.nadam, torch.optim.NAdam, dict(lr=0.05)),
    "sgd-momentum": (difopt.sgd, torch.optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.5)),
    "sgd-nesterov": (difopt.sgd, torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
    "adafactor": (difopt.adafactor, torch.optim.Adafactor, dict(lr=0.05, weight_decay=0.1)),
    "asgd": (difopt.asgd, torch.optim.ASGD, dict(lr=0.05, lambd=0.1, alpha=0.5, t0=1)),
}
LATE_STEPS = (2, 3, 5, 6)  # steps on which the late head takes part (of 8)


class LateHead(torch.nn.Module):
    """A regressor with a second head that joins the loss on some steps only."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.body = torch.nn.Linear(4, 2).double()
        self.late = torch.nn.Linear(4, 2).double()

    def forward(self, x: torch.Tensor, step: int) -> torch.Tensor:
        out = self.body(x)
        return out + self.late(x) if step in LATE_STEPS else out


def _late_reference(cls, kwargs, steps: int) -> list[torch.Tensor]:
    net = LateHead()
    opt = cls(net.parameters(), **kwargs)
    for step in range(steps):
        x, y = _data(step)
        opt.zero_grad(set_to_none=True)
        F.mse_loss(net(x, step), y).backward()
        opt.step()
    return [p.detach() for p in net.parameters()]


@pytest.mark.parametrize("case", STEP_CASES)
def test_classic_optimizer_counts_steps_per_parameter_like_torch_optim(case):
    alias, cls, kwargs = STEP_CASES[case]
    net = LateHead()
    opt = difopt.optim._forms.classic_class(alias)(net.parameters(), **kwargs)
    for step in range(8):
        x, y = _data(step)
        opt.zero_grad()
        F.mse_loss(net(x, step), y).backward()
        opt.step()
    torch.testing.assert_close(
        [p.detach() for p in net.parameters()], _late_reference(cls, kwargs, 8)
    )


@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "functional"])
@pytest.mark.parametrize("case", STEP_CASES)
def test_functional_update_counts_steps_per_parameter_like_torch_optim(case, inplace):
    alias, cls, kwargs = STEP_CASES[case]
    net = LateHead()
    params = tuple(p.detach().clone().requires_grad_() for p in net.parameters())
    names = [n for n, _ in net.named_parameters()]
    tx = alias(**kwargs)
    state = tx.init(params)
    for step in range(8):
        x, y = _data(step)
        out = torch.func.functional_call(net, dict(zip(names, params)), (x, step))
        grads = torch.autograd.grad(F.mse_loss(out, y), params, allow_unused=True)
        updates, state = tx.update(grads, state, params=params, inplace=inplace)
        params = difopt.apply_updates(params, updates, inplace=inplace)
    torch.testing.assert_close([p.detach() for p in params], _late_reference(cls, kwargs, 8))
    (counts,) = [difopt.pytree.tree_leaves(s.count) for s in state if "count" in s._fields]
    late = sum(1 for s in range(8) if s in LATE_STEPS)
    assert [int(c) for c in counts] == [8, 8, late, late]


@pytest.mark.parametrize("case", STEP_CASES)
def test_meta_optimizer_counts_steps_per_parameter_like_torch_optim(case):
    alias, cls, kwargs = STEP_CASES[case]
    net = LateHead()
    opt = difopt.optim._forms.meta_class(alias)(net, **kwargs)
    for step in range(8):
        x, y = _data(step)
        opt.step(F.mse_loss(net(x, step), y))
    expected = _late_reference(cls, kwargs, 8)
    torch.testing.assert_close([p.detach() for p in net.parameters()], expected)


@pytest.mark.parametrize("alias", [difopt.adam, difopt.nadam, difopt.sgd], ids=lambda a: a.__name__)
def test_meta_gradient_through_steps_with_differing_counters_passes_gradcheck(alias):
    """Differentiable steps where the late head's counters lag the body's (the update is then
    computed once per step value): float64 gradcheck against finite differences."""
    kwargs = {
        "adam": dict(lr=0.05, eps_root=1e-8),
        "nadam": dict(lr=0.05),
        "sgd": dict(lr=0.1, momentum=0.9),
    }[alias.__name__]
    tx = alias(**kwargs, moment_requires_grad=True)
    x, y = _data(0)

    def loss_after_steps(w_body: torch.Tensor, w_late: torch.Tensor) -> torch.Tensor:
        params = (w_body, w_late)
        state = tx.init(params)
        for step in range(4):
            xs, ys = _data(step)
            out = xs @ params[0].T + (xs @ params[1].T if step in LATE_STEPS else 0.0)
            grads = torch.autograd.grad(
                F.mse_loss(out, ys), params, create_graph=True, allow_unused=True
            )
            updates, state = tx.update(grads, state, params=params, inplace=False)
            params = difopt.apply_updates(params, updates, inplace=False)
        return F.mse_loss(x @ params[0].T + x @ params[1].T, y)

    g = torch.Generator().manual_seed(3)
    w_body = torch.randn(2, 4, dtype=torch.float64, generator=g, requires_grad=True)
    w_late = torch.randn(2, 4, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(loss_after_steps, (w_body, w_late))


def test_parameters_as_a_list_with_gradients_as_a_tuple():
    """``torch.autograd.grad`` returns a tuple for a list of parameters: the state built from
    the list still has its missing leaves left alone."""
    params = [torch.ones(3, dtype=torch.float64), torch.ones(2, dtype=torch.float64)]
    tx = difopt.adam(lr=0.1)
    state = tx.init(params)
    updates, state = tx.update((torch.ones(3, dtype=torch.float64), None), state, params=params)
    assert updates[1] is None
    (adam_state,) = [s for s in state if "count" in s._fields]
    assert isinstance(adam_state.mu, list) and isinstance(adam_state.count, list)
    assert [int(c) for c in adam_state.count] == [1, 0]
    torch.testing.assert_close(adam_state.mu[1], torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(updates[0], torch.full((3,), -0.1, dtype=torch.float64))
