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
    lambda: difopt.asgd(lr=0.05, lambd=0.1, t0=1),
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
    "make_impl",
    OPTIMIZERS,
    ids=["sgd", "adam", "rmsprop", "adamw", "radam", "nadam", "adan", "asgd"],
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


def _batched(tree, n=2):
    return difopt.pytree.tree_map(lambda t: torch.stack([t] * n), tree)


def test_vmap_over_a_state_whose_counters_differ_between_parameters():
    """After a step without the second parameter's gradient its counter lags; a vmapped
    update must give each parameter its own bias correction, as the eager update does."""
    tx = difopt.adam(0.1)
    gen = torch.Generator().manual_seed(0)
    p = (torch.randn(3, generator=gen), torch.randn(2, generator=gen))
    state = tx.init(p)
    _, state = tx.update((torch.randn(3, generator=gen), None), state, params=p, inplace=False)
    g = (torch.randn(3, generator=gen), torch.randn(2, generator=gen))
    expected, _ = tx.update(g, state, params=p, inplace=False)
    out, _ = torch.func.vmap(lambda g, s, p: tx.update(g, s, params=p, inplace=False))(
        _batched(g), _batched(state), _batched(p)
    )
    for o, e in zip(out, expected):
        torch.testing.assert_close(o[0], e)
        torch.testing.assert_close(o[1], e)


def test_vmap_over_states_at_different_steps():
    """Members of the batch at different steps (every parameter alike): each member gets its
    own bias correction."""
    tx = difopt.adam(0.1)
    gen = torch.Generator().manual_seed(1)
    p = (torch.randn(3, generator=gen), torch.randn(2, generator=gen))
    states = [tx.init(p)]
    _, advanced = tx.update(
        (torch.randn(3, generator=gen), torch.randn(2, generator=gen)),
        states[0],
        params=p,
        inplace=False,
    )
    states.append(advanced)
    g = (torch.randn(3, generator=gen), torch.randn(2, generator=gen))
    _assert_vmapped_update_matches_separate(tx, states, g, p)


def _assert_vmapped_update_matches_separate(tx, states, g, p, **tolerance):
    """The update vmapped over the two ``states`` equals each member's own update."""
    expected = [tx.update(g, s, params=p, inplace=False)[0] for s in states]
    stacked = difopt.pytree.tree_map(lambda a, b: torch.stack([a, b]), *states)
    out, _ = torch.func.vmap(lambda g, s, p: tx.update(g, s, params=p, inplace=False))(
        _batched(g), stacked, _batched(p)
    )
    for i in range(2):
        for o, e in zip(out, expected[i]):
            torch.testing.assert_close(o[i], e, **tolerance)


def test_vmap_refuses_counters_that_differ_between_parameters_and_members():
    tx = difopt.adam(0.1)
    p = (torch.zeros(3), torch.zeros(2))
    fresh = tx.init(p)
    _, lagging = tx.update((torch.ones(3), None), fresh, params=p, inplace=False)
    stacked = difopt.pytree.tree_map(lambda a, b: torch.stack([a, b]), fresh, lagging)
    g = (torch.ones(3), torch.ones(2))
    with pytest.raises(ValueError, match="differ both between parameters and between"):
        torch.func.vmap(lambda g, s, p: tx.update(g, s, params=p, inplace=False))(
            _batched(g), stacked, _batched(p)
        )


@pytest.mark.parametrize("name", ["adam", "adamw", "adamax", "radam", "nadam", "adan", "asgd"])
def test_vmapped_bias_corrections_keep_float64(name):
    """Under vmap the step counter is a batched int64 tensor; ``b ** t`` computed from it
    directly is float32, which moved float64 updates by about 1e-8. Members at different
    steps must match their separate float64 updates to double precision."""
    tx = getattr(difopt, name)(0.1)
    gen = torch.Generator().manual_seed(3)

    def draw():
        return (
            torch.randn(3, generator=gen, dtype=torch.float64),
            torch.randn(2, generator=gen, dtype=torch.float64),
        )

    p = draw()
    advanced = tx.init(p)
    for _ in range(6):  # members at steps 0 and 6: RAdam rectifies the second only
        advanced = tx.update(draw(), advanced, params=p, inplace=False)[1]
    states = [tx.init(p), advanced]
    _assert_vmapped_update_matches_separate(tx, states, draw(), p, rtol=1e-13, atol=1e-15)
