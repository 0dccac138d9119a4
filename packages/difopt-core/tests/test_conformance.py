"""Conformance suite: contracts every registered optimizer must keep, in all three forms.

The table is the ``difopt.optimizers`` entry-point group itself (core's aliases and any
installed plugin's), so an optimizer added later is tested here without being listed. Values
are checked against the optimizer's own forms and against invariants (a zero learning rate
moves nothing, a functional update mutates nothing, a resumed run is bit-identical, a
parameter without gradient is left alone, a meta step passes gradcheck); the comparisons with
independent oracles (torch.optim, closed forms) live in the optimizer-specific tests.

The problem has two matrices and a bias vector (matrices only for Muon), in float64.
"""

from __future__ import annotations

import copy
import inspect
import pickle
import warnings

import optree
import pytest
import torch

import difopt
from difopt import registry
from difopt.optim import classic_class, meta_class
from difopt.pytree import NAMESPACE

GROUP = "difopt.optimizers"
# Hyper-parameters other than the defaults, where a default would make a check vacuous or a
# required argument has no default (any optimizer not listed gets lr=1e-2 if lr is required).
KWARGS = {
    "sgd": dict(lr=0.1, momentum=0.9),
    "adadelta": dict(lr=1.0),
    "muon": dict(lr=0.05, ns_dtype=None),  # bfloat16 would defeat the float64 comparisons
}


# Optimizers whose lr does not bound the step, with the reason.
LR_NOT_A_BOUND = {
    "rprop": "lr is the initial per-element step size; after the first step it is clamped to "
    "step_sizes[0] > 0 (as in torch.optim.Rprop)",
}


def _loadable() -> list[str]:
    """The optimizers that load. Loading at collection must not change what test_plugins
    sees later (one-time warnings, load statuses): both are restored afterwards."""
    warned = set(registry._warned)
    out = []
    for name in sorted(registry.names(GROUP)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                registry.load(GROUP, name)
        except Exception:  # noqa: BLE001  (broken fixtures are tested by test_plugins)
            continue
        out.append(name)
    registry._warned.clear()
    registry._warned.update(warned)
    registry.discover()
    return out


NAMES = _loadable()


def alias_of(name: str):
    return registry.load(GROUP, name)


def kwargs_of(name: str, **override) -> dict:
    kw = dict(KWARGS.get(name, {}))
    lr = inspect.signature(alias_of(name)).parameters.get("lr")
    if lr is not None and lr.default is inspect.Parameter.empty:
        kw.setdefault("lr", 1e-2)
    kw.update(override)
    return kw


# Optimizers that take 2-D parameters only: the problem leaves out its bias for them.
MATRICES_ONLY = {"muon"}


def make_params(name: str) -> dict[str, torch.Tensor]:
    """Two matrices and (unless the optimizer takes matrices only) a bias vector."""
    gen = torch.Generator().manual_seed(0)
    params = {
        "w1": torch.randn(4, 3, dtype=torch.float64, generator=gen),
        "w2": torch.randn(2, 4, dtype=torch.float64, generator=gen),
        "b": torch.randn(2, dtype=torch.float64, generator=gen),
    }
    if name in MATRICES_ONLY:
        del params["b"]
    return params


X = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
Y = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))


def loss_fn(params: dict[str, torch.Tensor]) -> torch.Tensor:
    out = torch.tanh(X @ params["w1"].T) @ params["w2"].T
    if "b" in params:
        out = out + params["b"]
    return ((out - Y) ** 2).mean()


def grads_at(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
    return dict(zip(leaves, torch.autograd.grad(loss_fn(leaves), list(leaves.values()))))


def run_functional(name: str, impl, steps: int, inplace: bool) -> dict[str, torch.Tensor]:
    params = make_params(name)
    state = impl.init(params)
    for _ in range(steps):
        updates, state = impl.update(grads_at(params), state, params=params, inplace=inplace)
        params = difopt.apply_updates(params, updates, inplace=inplace)
    return params


class Net(torch.nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        for k, v in make_params(name).items():
            self.register_parameter(k, torch.nn.Parameter(v))

    def forward(self) -> torch.Tensor:
        return loss_fn(dict(self.named_parameters()))


def run_classic(name: str, steps: int, **kw) -> list[torch.Tensor]:
    net = Net(name)
    opt = classic_class(alias_of(name))(net.parameters(), **kwargs_of(name, **kw))
    for _ in range(steps):
        opt.zero_grad()
        net().backward()
        opt.step()
    return [p.detach() for p in net.parameters()]


def leaves(tree) -> list[torch.Tensor]:
    return [x for x in difopt.pytree.tree_leaves(tree) if isinstance(x, torch.Tensor)]


def explicit(name: str) -> dict:
    """kwargs_of(name) plus the functional defaults of the hyper-parameters whose classic or
    meta default differs (TorchOpt's class defaults, e.g. Adamax's lr), so that the three
    forms run the same optimizer."""
    kw = kwargs_of(name)
    forms = getattr(alias_of(name), "__difopt_forms__", None) or {}
    sig = inspect.signature(alias_of(name)).parameters
    for key in (*forms.get("classic_defaults", {}), *forms.get("meta_defaults", {})):
        if key != "moment_requires_grad":
            kw.setdefault(key, sig[key].default)
    return kw


def test_core_optimizers_are_in_the_table():
    core = {"sgd", "adam", "adamw", "adamax", "radam", "adadelta", "adagrad", "rmsprop"}
    assert core | {"nadam", "lion", "adan", "muon", "adafactor", "rprop", "asgd"} <= set(NAMES)


each_optimizer = pytest.mark.parametrize("name", NAMES)


@each_optimizer
def test_inplace_and_functional_updates_agree(name):
    impl = alias_of(name)(**kwargs_of(name))
    a = run_functional(name, impl, 5, inplace=True)
    b = run_functional(name, impl, 5, inplace=False)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-10, atol=1e-12)
        assert not torch.equal(a[k], make_params(name)[k])  # the steps moved something


@each_optimizer
def test_functional_update_mutates_nothing(name):
    impl = alias_of(name)(**kwargs_of(name))
    params = make_params(name)
    state = impl.init(params)
    _, state = impl.update(grads_at(params), state, params=params, inplace=False)
    grads = grads_at(params)
    before = [x.clone() for x in leaves((params, grads, state))]
    impl.update(grads, state, params=params, inplace=False)
    after = leaves((params, grads, state))
    assert all(torch.equal(x, y) for x, y in zip(before, after))


@each_optimizer
def test_classic_meta_and_functional_forms_agree(name):
    kw = explicit(name)
    expected = run_functional(name, alias_of(name)(**kw), 4, inplace=True)
    classic = run_classic(name, 4, **kw)
    net = Net(name)
    meta = meta_class(alias_of(name))(net, **kw)
    for _ in range(4):
        meta.step(net())
    for e, c, m in zip(expected.values(), classic, net.parameters()):
        torch.testing.assert_close(c, e, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(m.detach(), e, rtol=1e-10, atol=1e-12)


@each_optimizer
def test_meta_steps_pass_gradcheck(name):
    """The outer loss after 2 meta steps, as a function of the initial parameters."""

    keys = list(make_params(name))

    def outer(*initial):
        net = Net(name)
        for key, value in zip(keys, initial):
            net._parameters[key] = value * 1.0
        opt = meta_class(alias_of(name))(net, **kwargs_of(name))
        for _ in range(2):
            opt.step(net())
        return net()

    inputs = tuple(v.requires_grad_() for v in make_params(name).values())
    assert torch.autograd.gradcheck(outer, inputs, eps=1e-6, atol=1e-5)


@each_optimizer
def test_zero_learning_rate_moves_nothing(name):
    if "lr" not in inspect.signature(alias_of(name)).parameters:
        pytest.skip("no learning rate")
    if name in LR_NOT_A_BOUND:
        pytest.skip(LR_NOT_A_BOUND[name])
    for p, q in zip(run_classic(name, 3, lr=0.0), make_params(name).values()):
        assert torch.equal(p, q)


@each_optimizer
def test_resumed_classic_run_is_bit_identical(name):
    cls = classic_class(alias_of(name))
    net = Net(name)
    opt = cls(net.parameters(), **kwargs_of(name))
    for step in range(5):
        if step == 3:
            saved_net, saved = copy.deepcopy(net), copy.deepcopy(opt.state_dict())
        opt.zero_grad()
        net().backward()
        opt.step()
    opt2 = cls(saved_net.parameters(), **kwargs_of(name))
    opt2.load_state_dict(saved)
    for _ in range(2):
        opt2.zero_grad()
        saved_net().backward()
        opt2.step()
    for a, b in zip(net.parameters(), saved_net.parameters()):
        assert torch.equal(a, b)


def per_parameter_parts(state, structure) -> list[list]:
    """The sub-trees of a (chained) state shaped like the parameters, flattened with None
    leaves: one list per moment, counter, statistic, ..."""
    if optree.tree_structure(state, none_is_leaf=True, namespace=NAMESPACE) == structure:
        return [optree.tree_leaves(state, none_is_leaf=True, namespace=NAMESPACE)]
    if isinstance(state, tuple):
        return [part for child in state for part in per_parameter_parts(child, structure)]
    return []


@each_optimizer
@pytest.mark.parametrize("hidden", ["w1", "w2", "b"])
def test_a_parameter_without_gradient_is_left_alone(name, hidden):
    """A missing gradient (first, middle or last leaf): its update is None and every state
    entry of that parameter is unchanged, in both modes; the others take their step."""
    params = make_params(name)
    if hidden not in params:
        pytest.skip(f"{name} has no {hidden!r} parameter here")
    impl = alias_of(name)(**kwargs_of(name))
    structure = optree.tree_structure(params, none_is_leaf=True, namespace=NAMESPACE)
    position = list(sorted(params)).index(hidden)  # optree orders dict keys
    for inplace in (False, True):
        state = impl.init(params)
        _, state = impl.update(grads_at(params), state, params=params, inplace=inplace)
        parts = per_parameter_parts(state, structure)  # none for a stateless optimizer
        before = [clone_or_none(part[position]) for part in parts]
        grads = grads_at(params)
        grads[hidden] = None
        updates, new_state = impl.update(grads, state, params=params, inplace=inplace)
        assert updates[hidden] is None
        assert all(updates[k] is not None for k in params if k != hidden)
        after = [part[position] for part in per_parameter_parts(new_state, structure)]
        for old, new in zip(before, after):
            assert (old is None and new is None) or torch.equal(old, new)


@each_optimizer
def test_a_declared_learning_rate_is_the_only_use_of_lr(name):
    """An alias whose last part declares ``learning_rate=lr`` promises that ``lr`` is used
    nowhere else: a classic optimizer then applies a scheduler's lr edit by changing that one
    factor. Checked here by building the alias with two learning rates."""
    kw = kwargs_of(name)
    lr = kw.get("lr", inspect.signature(alias_of(name)).parameters["lr"].default)
    impl = alias_of(name)(**kw)
    parts = impl.transformations
    if parts[-1].properties.learning_rate is None:
        pytest.skip(f"{name} does not declare its last part as the step of lr")
    assert parts[-1].properties.learning_rate == lr
    assert parts[-1].properties.scale == -lr
    other = alias_of(name)(**{**kw, "lr": 2.0 * lr + 1.0})
    assert other.transformations[:-1] == parts[:-1]
    assert other.transformations[-1].properties.scale == -(2.0 * lr + 1.0)


def clone_or_none(x):
    return None if x is None else x.clone()


@each_optimizer
def test_transformation_pickles_compares_and_prints(name):
    impl = alias_of(name)(**kwargs_of(name))
    again = pickle.loads(pickle.dumps(impl))
    assert again == impl
    text = repr(impl)
    assert "(" in text and "object at 0x" not in text
    # The copy computes the same step.
    a = run_functional(name, impl, 2, inplace=False)
    b = run_functional(name, again, 2, inplace=False)
    for k in a:
        assert torch.equal(a[k], b[k])


# Wrong-shaped gradients for the problem's "w2" (2, 4): one that would broadcast silently into
# the parameter and its moments, and one that cannot broadcast (it would fail half-way).
WRONG_SHAPES = {
    "broadcastable (1,)": (1,),
    "broadcastable (4,)": (4,),
    "incompatible (4, 2)": (4, 2),
}


@each_optimizer
@pytest.mark.parametrize("shape", WRONG_SHAPES)
@pytest.mark.parametrize("with_params", [True, False])
def test_a_wrong_shaped_update_is_refused_before_anything_changes(name, shape, with_params):
    """Never broadcast: ValueError naming the leaf, and the state (every leaf, in place or
    not), the parameters and the gradients exactly as they were. Without ``params`` the
    reference is the state's moments, so a stateless optimizer (or one whose update needs the
    parameters) is only checked with them."""
    impl = alias_of(name)(**kwargs_of(name))
    params = make_params(name)
    state = impl.init(params)
    _, state = impl.update(grads_at(params), state, params=params, inplace=True)
    grads = grads_at(params)
    grads["w2"] = torch.ones(WRONG_SHAPES[shape], dtype=torch.float64)
    before = [x.clone() for x in leaves((params, grads, state))]
    kwargs = dict(params=params) if with_params else {}
    for inplace in (True, False):
        try:
            impl.update(grads, state, inplace=inplace, **kwargs)
        except ValueError as error:
            needs_params = not with_params and "needs 'params'" in str(error)
            assert needs_params or "updates['w2'] has shape" in str(error), error
        else:
            # Only possible without params, for an optimizer with no per-parameter moments.
            assert not with_params, "a wrong-shaped update was accepted"
            assert not per_parameter_moments(state, params), "accepted despite the moments"
        after = leaves((params, grads, state))
        assert all(torch.equal(x, y) for x, y in zip(before, after))


def per_parameter_moments(state, params) -> bool:
    """Whether some floating-point part of the state has the parameters' shapes."""
    structure = optree.tree_structure(params, none_is_leaf=True, namespace=NAMESPACE)
    shapes = [p.shape for p in params.values()]
    return any(
        all(x is not None and x.is_floating_point() for x in part)
        and [x.shape for x in part] == shapes
        for part in per_parameter_parts(state, structure)
    )


def test_apply_updates_refuses_a_wrong_shaped_update():
    params = {"w": torch.zeros(2, 2), "b": torch.zeros(2)}
    for inplace in (True, False):
        with pytest.raises(ValueError, match=r"updates\['w'\] has shape \(2,\).*\(2, 2\)"):
            difopt.apply_updates(params, {"w": torch.ones(2), "b": torch.ones(2)}, inplace=inplace)
        assert torch.equal(params["b"], torch.zeros(2))
