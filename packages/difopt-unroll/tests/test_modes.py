"""``mode="truncated"`` and ``mode="first_order"`` equal their textbook definitions, written out
by hand as plain loops (float64, K=50, 1e-10 relative), for every policy."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import difopt
import difopt_unroll
from problems import FUNCTIONAL, OBJECT_ORIENTED, POLICIES, K, assert_close, grads_of

TRUNCATE = 10


@pytest.mark.parametrize("problem", FUNCTIONAL, ids=[p.name for p in FUNCTIONAL])
@pytest.mark.parametrize("policy", [kw for _, kw in POLICIES], ids=[n for n, _ in POLICIES])
def test_truncated_equals_cut_graph(problem: Any, policy: dict[str, Any]) -> None:
    """Truncated backprop: the state before the last k steps is a constant."""
    got, stats = problem.run(mode="truncated", truncate=TRUNCATE, **policy)
    want = problem.reference(truncate=TRUNCATE)
    assert all(g is None for g in want[: len(want) - (2 if problem.tensor_lr else 1)])
    assert_close(got, want)
    assert stats.steps_recorded == TRUNCATE


@pytest.mark.parametrize("problem", FUNCTIONAL, ids=[p.name for p in FUNCTIONAL])
@pytest.mark.parametrize("policy", [kw for _, kw in POLICIES], ids=[n for n, _ in POLICIES])
def test_first_order_equals_constant_inner_gradient(problem: Any, policy: dict[str, Any]) -> None:
    got, _ = problem.run(mode="first_order", **policy)
    assert_close(got, problem.reference(first_order=True))


def test_truncated_with_all_steps_is_exact() -> None:
    problem = FUNCTIONAL[0]
    got, _ = problem.run(mode="truncated", truncate=K, policy="sqrt")
    assert_close(got, problem.reference())


def test_first_order_sgd_is_fomaml() -> None:
    """FOMAML with SGD: theta_K = theta_0 - lr * sum(g_k) with constant g_k, so the
    meta-gradient of the initial parameters is the outer gradient at theta_K."""
    x = torch.randn(K, 8, 3, dtype=torch.float64)
    y = torch.randn(K, 8, 1, dtype=torch.float64)
    w0 = torch.randn(3, 1, dtype=torch.float64, requires_grad=True)
    tx = difopt.sgd(lr=0.1)
    step = difopt_unroll.transformation_step(lambda w, b: ((b[0] @ w - b[1]) ** 2).mean(), tx)
    out = difopt_unroll.unroll(
        step, w0, tx.init(w0), K, batches=list(zip(x, y)), mode="first_order", budget=3
    )
    final = out.params.detach().requires_grad_()
    (want,) = torch.autograd.grad((final**3).sum(), final)
    (got,) = torch.autograd.grad((out.params**3).sum(), w0)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


def _module_first_order_by_hand(problem: Any) -> list[Any]:
    """The textbook first-order loop on the module's parameters, written functionally."""
    x, y, vx, vy, net, lr, wd, _ = problem.setup()
    names = [n for n, _ in net.named_parameters()]
    p0 = list(net.parameters())
    tx = HAND_WRITTEN_TRANSFORM[problem.name](lr if problem.tensor_lr else 0.05)
    p, s = dict(zip(names, p0)), tx.init(dict(zip(names, p0)))
    losses = []
    for k in range(K):
        reg = sum((v**2).sum() for v in p.values())
        loss = F.mse_loss(functional_call(net, p, (x[k],)), y[k]) + wd * reg
        g = torch.autograd.grad(loss, list(p.values()), retain_graph=True)  # constants
        u, s = tx.update(dict(zip(names, g)), s, params=p, inplace=False)
        p = difopt.apply_updates(p, u, inplace=False)
        losses.append(loss)
    meta = F.mse_loss(functional_call(net, p, (vx,)), vy) + 0.1 * torch.stack(losses).sum()
    return grads_of(meta, problem.meta_inputs(p0, lr, wd))


HAND_WRITTEN_TRANSFORM = {  # the functional transformation each MetaOptimizer steps with
    "MetaAdam-mlp-init-and-regulariser": lambda lr: difopt.adam(lr=lr),
    "MetaSGD-momentum-tensor-lr": lambda lr: difopt.sgd(lr=lr, momentum=0.9),
    "MetaAdam-tensor-lr": lambda lr: difopt.adam(lr=lr),
}


@pytest.mark.parametrize("problem", OBJECT_ORIENTED, ids=[p.name for p in OBJECT_ORIENTED])
@pytest.mark.parametrize("policy", [kw for _, kw in POLICIES], ids=[n for n, _ in POLICIES])
def test_module_first_order_equals_hand_written(problem: Any, policy: dict[str, Any]) -> None:
    got, _ = problem.run(mode="first_order", **policy)
    assert_close(got, _module_first_order_by_hand(problem))


def _module_truncated_by_hand(problem: Any) -> list[Any]:
    x, y, vx, vy, net, lr, wd, opt = problem.setup()
    p0 = list(net.parameters())
    losses = []
    for k in range(K):
        if k == K - TRUNCATE:  # cut the graph: parameters and optimizer state become constants
            for m in net.modules():
                for name, v in m._parameters.items():
                    if v is not None:
                        m._parameters[name] = v.detach().requires_grad_()
            opt.state_groups = difopt.pytree.tree_map(
                lambda t: t.detach() if torch.is_tensor(t) else t,
                opt.state_groups,
                namespace="difopt",
            )
            losses = [v.detach() for v in losses]
        loss = problem.inner_loss(net, (x[k], y[k]), wd)
        opt.step(loss)
        losses.append(loss)
    meta = F.mse_loss(net(vx), vy) + 0.1 * torch.stack(losses).sum()
    return grads_of(meta, problem.meta_inputs(p0, lr, wd))


@pytest.mark.parametrize("problem", OBJECT_ORIENTED, ids=[p.name for p in OBJECT_ORIENTED])
@pytest.mark.parametrize("policy", [kw for _, kw in POLICIES], ids=[n for n, _ in POLICIES])
def test_module_truncated_equals_hand_written(problem: Any, policy: dict[str, Any]) -> None:
    got, _ = problem.run(mode="truncated", truncate=TRUNCATE, **policy)
    assert_close(got, _module_truncated_by_hand(problem))


@pytest.mark.parametrize("how", ["no_grad", "truncated-without-meta-parameters"])
def test_module_left_steppable_when_nothing_is_differentiated(how: str) -> None:
    """Under ``torch.no_grad()``, or truncated with nothing requiring grad past the cut, the
    module gets fresh leaves requiring grad (as the hand-written truncated loop re-leafs them):
    the next ``MetaOptimizer.step`` works and continues the plain loop's values."""
    problem = OBJECT_ORIENTED[0]
    x, y, vx, vy, net, lr, wd, opt = problem.setup()
    wd = wd.detach()  # nothing but the parameters; the cut makes them constants
    for k in range(K):  # the plain loop, then one more step
        opt.step(problem.inner_loss(net, (x[k], y[k]), wd))
    opt.step(problem.inner_loss(net, (vx, vy), wd))
    want = [p.detach() for p in net.parameters()]

    x, y, vx, vy, net, lr, wd, opt = problem.setup()
    wd = wd.detach()
    kwargs: dict[str, Any] = {"policy": "sqrt", "batches": list(zip(x, y))}
    if how == "no_grad":
        with torch.no_grad():
            difopt_unroll.unroll_module(opt, lambda b: problem.inner_loss(net, b, wd), K, **kwargs)
    else:
        difopt_unroll.unroll_module(
            opt,
            lambda b: problem.inner_loss(net, b, wd),
            K,
            mode="truncated",
            truncate=TRUNCATE,
            **kwargs,
        )
    assert all(p.requires_grad and p.grad_fn is None for p in net.parameters())
    opt.step(problem.inner_loss(net, (vx, vy), wd))  # raised "'loss' does not require grad"
    assert_close([p.detach() for p in net.parameters()], want)
