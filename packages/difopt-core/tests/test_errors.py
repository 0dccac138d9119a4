"""Bad input gets a clear error naming the argument, and leaves no state changed."""

from __future__ import annotations

import math

import pytest
import torch

import difopt
from core_testing import make_data, make_mlp, mse

BAD_HYPER = [
    (difopt.adam, dict(lr=-1.0), "'lr'"),
    (difopt.adam, dict(lr=math.nan), "'lr'"),
    (difopt.sgd, dict(lr=-0.1), "'lr'"),
    (difopt.sgd, dict(lr=math.inf), "'lr'"),
    (difopt.adam, dict(betas=(1.0, 0.999)), r"'betas\[0\]'"),
    (difopt.adam, dict(betas=(0.9, -0.1)), r"'betas\[1\]'"),
    (difopt.adamw, dict(betas=(0.9,)), "'betas'"),
    (difopt.adam, dict(eps=-1e-8), "'eps'"),
    (difopt.rmsprop, dict(eps=-1.0), "'eps'"),
    (difopt.adagrad, dict(eps=-1.0), "'eps'"),
    (difopt.adam, dict(weight_decay=-0.1), "'weight_decay'"),
    (difopt.sgd, dict(lr=0.1, momentum=-0.5), "'momentum'"),
    (difopt.sgd, dict(lr=0.1, nesterov=True), "nesterov"),
    (difopt.radam, dict(betas=(0.9, 1.5)), r"'betas\[1\]'"),
    (difopt.adan, dict(betas=(0.9, 0.9)), "'betas'"),
    (difopt.adadelta, dict(rho=1.5), "'rho'"),
    (difopt.lion, dict(lr=-1.0), "'lr'"),
    (difopt.nadam, dict(momentum_decay=-1.0), "'momentum_decay'"),
    (difopt.adam, dict(use_accelerated_op="yes"), "'use_accelerated_op'"),
    (difopt.sgd, dict(lr=0.1, momentum=0.9, use_accelerated_op="yes"), "'use_accelerated_op'"),
    (difopt.rmsprop, dict(use_accelerated_op="no"), "'use_accelerated_op'"),
    (difopt.adam, dict(amsgrad="yes"), "'amsgrad'"),
    (difopt.adamw, dict(amsgrad=2), "'amsgrad'"),
    (difopt.adam, dict(decoupled_weight_decay="True"), "'decoupled_weight_decay'"),
    (difopt.radam, dict(decoupled_weight_decay="no"), "'decoupled_weight_decay'"),
    (difopt.radam, dict(weight_decay=-0.1, decoupled_weight_decay=True), "'weight_decay'"),
    (difopt.adafactor, dict(beta2_decay=0.5), "'beta2_decay'"),
    (difopt.adafactor, dict(d=0.5), "'d'"),
    (difopt.adafactor, dict(eps=(None, -1.0)), r"'eps\[1\]'"),
    (difopt.adafactor, dict(eps=1e-3), "'eps'"),
    (difopt.adafactor, dict(lr=-1.0), "'lr'"),
    (difopt.rprop, dict(etas=(1.2, 0.5)), "'etas'"),
    (difopt.rprop, dict(etas=(0.0, 1.2)), "'etas'"),
    (difopt.rprop, dict(step_sizes=(1.0, 0.1)), "'step_sizes'"),
    (difopt.rprop, dict(lr=lambda count: 0.1), "'lr'"),
]


@pytest.mark.parametrize(
    "fn,kw,name", BAD_HYPER, ids=[f"{f.__name__}-{k}" for f, k, _ in BAD_HYPER]
)
def test_bad_hyper_parameters_name_the_argument(fn, kw, name):
    with pytest.raises((ValueError, TypeError), match=name):
        fn(**kw)


def test_classic_constructor_validates_before_creating_state():
    model = make_mlp()
    with pytest.raises(ValueError, match="'lr'"):
        difopt.Adam(model.parameters(), lr=-1.0)
    with pytest.raises(TypeError, match="'params'"):
        difopt.Adam(model, lr=0.1)
    with pytest.raises(ValueError, match="unknown parameter group options"):
        difopt.Adam([{"params": model.parameters(), "learning_rate": 0.1}])


def test_mismatched_trees():
    params = {"a": torch.zeros(2), "b": torch.zeros(3)}
    with pytest.raises(ValueError, match="'updates'"):
        difopt.apply_updates(params, {"a": torch.ones(2)})
    assert torch.equal(params["a"], torch.zeros(2))
    impl = difopt.adam(weight_decay=0.1)
    state = impl.init(params)
    with pytest.raises(ValueError, match="'params'"):
        impl.update({"a": torch.ones(2), "b": torch.ones(3)}, state, params=[torch.zeros(2)])
    with pytest.raises(ValueError, match="'state'"):
        impl.update(params, state[:1], params=params)


def test_meta_optimizer_given_parameters():
    model = make_mlp()
    with pytest.raises(TypeError, match="'module'"):
        difopt.MetaAdam(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="'module'"):
        difopt.MetaOptimizer([torch.zeros(2, requires_grad=True)], difopt.sgd(0.1))
    with pytest.raises(ValueError, match="no parameters"):
        difopt.MetaSGD(torch.nn.ReLU(), lr=0.1)


def test_non_scalar_loss_leaves_module_and_state_unchanged():
    model, data = make_mlp(), make_data()
    opt = difopt.MetaAdam(model, lr=0.1)
    before = [p for p in model.parameters()]
    state_before = difopt.pytree.tree_leaves(opt.state_groups)
    with pytest.raises(ValueError, match="'loss' must be a scalar"):
        opt.step((model(data[0]) - data[1]) ** 2)
    with pytest.raises(ValueError, match="'loss'"):
        opt.step(torch.tensor(1.0))
    assert all(a is b for a, b in zip(before, model.parameters()))
    assert all(a is b for a, b in zip(state_before, difopt.pytree.tree_leaves(opt.state_groups)))
    with pytest.raises(ValueError, match="'loss'"):
        difopt.FuncOptimizer(difopt.sgd(0.1)).step(torch.ones(2), [torch.ones(2)])


def test_classic_step_with_bad_gradient_changes_nothing():
    model, data = make_mlp(), make_data()
    opt = difopt.Adam(model.parameters(), lr=0.1)
    mse(model, data).backward()
    opt.step()
    params_before = [p.detach().clone() for p in model.parameters()]
    state_before = [t.clone() for t in difopt.pytree.tree_leaves(opt.state_groups)]
    mse(model, data).backward()
    last = list(model.parameters())[-1]
    last.grad = torch.zeros_like(last).to_sparse()  # the first group's grads are fine
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(params_before, model.parameters()))
    assert all(
        torch.equal(a, b) for a, b in zip(state_before, difopt.pytree.tree_leaves(opt.state_groups))
    )


def test_unknown_copy_policy():
    model = make_mlp()
    with pytest.raises(ValueError, match="'by'"):
        difopt.extract_state_dict(model, by="shallow")
    with pytest.raises(ValueError, match="'by'"):
        difopt.module_clone(model, by="nope")


def test_bad_transform_arguments():
    with pytest.raises(ValueError, match="'max_norm'"):
        difopt.clip_grad_norm(-1.0)
    with pytest.raises(TypeError, match="'step_size_fn'"):
        difopt.transform.scale_by_schedule(0.1)
    with pytest.raises(TypeError, match="chain"):
        difopt.chain(difopt.adam(), "sgd")
    with pytest.raises(TypeError, match="'impl'"):
        difopt.Optimizer([torch.zeros(1, requires_grad=True)], "adam")
    with pytest.raises(ValueError, match="'decay_steps'"):
        difopt.schedule.warmup_cosine_decay(0.0, 1.0, warmup_steps=5, decay_steps=5)
    with pytest.raises(ValueError, match="'transition_steps'"):
        difopt.schedule.linear_schedule(1.0, 0.0, transition_steps=1.5)


def test_clip_error_if_nonfinite_leaves_updates_unchanged():
    impl = difopt.clip_grad_norm(1.0, error_if_nonfinite=True)
    g = [torch.tensor([math.inf, 1.0])]
    with pytest.raises(RuntimeError, match="non-finite"):
        impl.update(g, impl.init(g))
    assert g[0][1] == 1.0
