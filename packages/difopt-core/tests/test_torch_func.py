"""Functional updates (inplace=False) under torch.func.vmap and torch.func.grad."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, grad, vmap

import difopt

N_TASKS = 8
INNER_STEPS = 3


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
    ).double()


def _tasks():
    g = torch.Generator().manual_seed(3)
    xs = torch.randn(N_TASKS, 10, 2, generator=g, dtype=torch.float64)
    ws = torch.randn(N_TASKS, 2, 1, generator=g, dtype=torch.float64)
    return xs, xs @ ws


OPTIMIZERS = [
    lambda: difopt.sgd(lr=0.1, momentum=0.9),
    lambda: difopt.adam(lr=0.05, eps_root=1e-10),
    lambda: difopt.rmsprop(lr=0.01, centered=True),
    lambda: difopt.adamw(lr=0.05),
    lambda: difopt.radam(lr=0.05),
    lambda: difopt.nadam(lr=0.05),
    lambda: difopt.adan(lr=0.05),
]


def _adapt(model, params, impl, x, y):
    def loss_fn(p):
        return ((functional_call(model, p, (x,)) - y) ** 2).mean()

    state = impl.init(params)
    for _ in range(INNER_STEPS):
        grads = grad(loss_fn)(params)
        updates, state = impl.update(grads, state, params=params, inplace=False)
        params = difopt.apply_updates(params, updates, inplace=False)
    return params


@pytest.mark.parametrize(
    "make_impl", OPTIMIZERS, ids=["sgd", "adam", "rmsprop", "adamw", "radam", "nadam", "adan"]
)
def test_vmap_over_tasks_matches_separate_runs(make_impl):
    model = _model()
    params = {k: v.detach() for k, v in model.named_parameters()}
    xs, ys = _tasks()
    impl = make_impl()
    batched = vmap(lambda x, y: _adapt(model, params, impl, x, y))(xs, ys)
    for i in range(N_TASKS):
        single = _adapt(model, params, make_impl(), xs[i], ys[i])
        for k in params:
            torch.testing.assert_close(batched[k][i], single[k], rtol=1e-10, atol=1e-12)


def test_grad_through_functional_updates_matches_autograd():
    """torch.func.grad of an outer loss through 3 inner Adam steps equals torch.autograd."""
    model = _model()
    params = {k: v.detach() for k, v in model.named_parameters()}
    xs, ys = _tasks()

    def outer(p):
        adapted = _adapt(model, p, difopt.adam(lr=0.05, eps_root=1e-10), xs[0], ys[0])
        return ((functional_call(model, adapted, (xs[1],)) - ys[1]) ** 2).mean()

    via_func = grad(outer)(params)
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    via_autograd = torch.autograd.grad(outer(leaves), list(leaves.values()))
    for (_k, a), b in zip(via_func.items(), via_autograd):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_maml_meta_gradient_with_vmap_and_grad():
    """A full MAML meta-gradient: vmap over tasks of grad through the inner loop."""
    model = _model()
    params = {k: v.detach() for k, v in model.named_parameters()}
    xs, ys = _tasks()

    def task_loss(p, x, y):
        adapted = _adapt(model, p, difopt.sgd(lr=0.1), x, y)
        return ((functional_call(model, adapted, (x,)) - y) ** 2).mean()

    per_task = vmap(grad(task_loss), in_dims=(None, 0, 0))(params, xs, ys)
    for i in (0, N_TASKS - 1):
        leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
        expected = torch.autograd.grad(task_loss(leaves, xs[i], ys[i]), list(leaves.values()))
        for (_k, a), b in zip(per_task.items(), expected):
            torch.testing.assert_close(a[i], b, rtol=1e-9, atol=1e-12)
