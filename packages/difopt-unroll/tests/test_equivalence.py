"""Every policy's meta-gradients equal the plain hand-written unrolled loop's (float64, K=50,
1e-10 relative): functional and MetaOptimizer forms, meta-parameters in the initial
parameters, in a tensor learning rate and in a regulariser; randomness replays exactly."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import difopt
import difopt_unroll
from problems import (
    FUNCTIONAL,
    INT_STATE_FUNCTIONAL,
    INT_STATE_OBJECT_ORIENTED,
    OBJECT_ORIENTED,
    POLICIES,
    Functional,
    K,
    ObjectOriented,
    assert_close,
)

PROBLEMS = [*FUNCTIONAL, *OBJECT_ORIENTED]


@pytest.mark.parametrize("problem", PROBLEMS, ids=[p.name for p in PROBLEMS])
@pytest.mark.parametrize("policy", [kw for _, kw in POLICIES], ids=[n for n, _ in POLICIES])
def test_policy_equals_plain_unroll(problem: Any, policy: dict[str, Any]) -> None:
    got, stats = problem.run(**policy)
    assert_close(got, problem.reference())
    assert stats.steps_recorded == K  # every step recorded exactly once


INT_STATE = [*INT_STATE_FUNCTIONAL, *INT_STATE_OBJECT_ORIENTED]


@pytest.mark.parametrize("problem", INT_STATE, ids=[p.name for p in INT_STATE])
@pytest.mark.parametrize("policy", [kw for _, kw in POLICIES], ids=[n for n, _ in POLICIES])
def test_integer_state_leaves_before_float_ones(problem: Any, policy: dict[str, Any]) -> None:
    """States whose integer counters precede floating-point moments (chains of
    transformations, several parameter groups): each cotangent reaches its own leaf."""
    got, _ = problem.run(**policy)
    assert_close(got, problem.reference())


RANDOM = [
    Functional("adam-mlp-dropout", lambda lr: difopt.adam(lr=lr), False, False, dropout=0.3),
    ObjectOriented(
        "MetaAdam-mlp-dropout", lambda n, lr: difopt.MetaAdam(n, lr=lr), False, False, 0.3
    ),
]


@pytest.mark.parametrize("problem", RANDOM, ids=[p.name for p in RANDOM])
@pytest.mark.parametrize(
    "policy", [kw for n, kw in POLICIES if n != "none"], ids=[n for n, _ in POLICIES if n != "none"]
)
def test_dropout_replays_exactly(problem: Any, policy: dict[str, Any]) -> None:
    got, _ = problem.run(**policy)
    assert_close(got, problem.reference())


def _sampled_batch_problem(policy: dict[str, Any] | None) -> list[Any]:
    """Each step samples its mini-batch from a data set with torch's global generator."""
    g = torch.Generator().manual_seed(0)
    data_x = torch.randn(100, 3, generator=g, dtype=torch.float64)
    data_y = torch.randn(100, 1, generator=g, dtype=torch.float64)
    w0 = torch.zeros(3, 1, dtype=torch.float64, requires_grad=True)
    lr = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)

    def sample(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, 100, (10,))
        return data_x[idx], data_y[idx]

    def loss(w: torch.Tensor, batch: Any) -> torch.Tensor:
        x, y = batch
        return ((x @ w - y) ** 2).mean()

    torch.manual_seed(11)
    if policy is None:  # the plain loop
        w = w0
        for k in range(K):
            (g_,) = torch.autograd.grad(loss(w, sample(k)), w, create_graph=True)
            w = w - lr * g_
    else:

        def step(w: torch.Tensor, state: Any, batch: Any) -> tuple[torch.Tensor, Any]:
            (g_,) = difopt_unroll.inner_grad(loss(w, batch), (w,))
            return w - lr * g_, state

        out = difopt_unroll.unroll(step, w0, (), K, batches=sample, meta_params=lr, **policy)
        w = out.params
    after = torch.randn(())  # the global generator continues as after the plain loop
    return [*torch.autograd.grad((w**2).sum(), [w0, lr]), after]


@pytest.mark.parametrize("policy", [kw for _, kw in POLICIES], ids=[n for n, _ in POLICIES])
def test_sampled_batches_replay_exactly(policy: dict[str, Any]) -> None:
    want = _sampled_batch_problem(None)
    got = _sampled_batch_problem(policy)
    assert_close(got[:2], want[:2])
    assert torch.equal(got[2], want[2])


def test_gradcheck_small_case() -> None:
    x = torch.randn(6, 4, 3, dtype=torch.float64)
    y = torch.randn(6, 4, 1, dtype=torch.float64)

    def f(w0: torch.Tensor, lr: torch.Tensor, wd: torch.Tensor) -> torch.Tensor:
        tx = difopt.adam(lr=lr)
        step = difopt_unroll.transformation_step(
            lambda w, b: ((b[0] @ w - b[1]) ** 2).mean() + wd * (w**2).sum(), tx
        )
        out = difopt_unroll.unroll(
            step, w0, tx.init(w0), 6, batches=list(zip(x, y)), meta_params=(lr, wd), budget=2
        )
        return (out.params**2).sum() + out.losses.sum()

    inputs = (
        torch.randn(3, 1, dtype=torch.float64, requires_grad=True),
        torch.tensor(0.1, dtype=torch.float64, requires_grad=True),
        torch.tensor(0.05, dtype=torch.float64, requires_grad=True),
    )
    assert torch.autograd.gradcheck(f, inputs)


def test_module_is_left_on_the_graph_like_the_plain_loop() -> None:
    """After unroll_module, the module holds the final parameters (non-leaf, on the graph)
    and the optimizer the final state, as after the plain loop of MetaOptimizer.step; a
    second unroll continues from there, with the meta-gradients of the plain loop run on."""
    problem = OBJECT_ORIENTED[0]
    x, y, vx, vy, net, lr, wd, opt = problem.setup()
    p0 = list(net.parameters())
    for k in range(K + 5):  # the plain loop: K steps, then 5 more on the first 5 batches
        opt.step(problem.inner_loss(net, (x[k % K], y[k % K]), wd))
        if k == K - 1:
            after_first = [p.detach().clone() for p in net.parameters()]
    last = torch.stack([problem.inner_loss(net, (x[k], y[k]), wd) for k in range(5)]).sum()
    want = list(torch.autograd.grad(last, [*p0, wd]))

    x, y, vx, vy, net, lr, wd, opt = problem.setup()
    p0 = list(net.parameters())
    out = difopt_unroll.unroll_module(
        opt,
        lambda b: problem.inner_loss(net, b, wd),
        K,
        batches=list(zip(x, y)),
        meta_params=wd,
        policy="sqrt",
    )
    assert all(p.grad_fn is not None for p in net.parameters())
    assert tuple(net.parameters()) == out.params
    assert opt.state_groups is out.state
    assert_close([p.detach() for p in out.params], after_first)
    difopt_unroll.unroll_module(
        opt,
        lambda b: problem.inner_loss(net, b, wd),
        5,
        batches=list(zip(x, y))[:5],
        meta_params=wd,
        budget=2,
    )
    last = torch.stack([problem.inner_loss(net, (x[k], y[k]), wd) for k in range(5)]).sum()
    assert_close(list(torch.autograd.grad(last, [*p0, wd])), want)
