"""Distributed autograd: meta-gradients of remote inner loops equal the one-process ones."""

from __future__ import annotations

import pytest
import torch

import difopt_distributed as dd
import dist_tasks as tasks

pytestmark = pytest.mark.usefixtures("world")

N_TASKS = 8


def _oracle(params: list[torch.Tensor], batch) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """The same tasks in this process, no RPC: loss and meta-gradient."""
    loss = tasks.task_loss_sum(params, *batch) / N_TASKS
    return loss.detach(), torch.autograd.grad(loss, params)


@pytest.mark.parametrize(
    ("partitioner", "reducer", "scale"),
    [
        (tasks.maml_partitioner, dd.sum_reducer, 1 / N_TASKS),
        (tasks.maml_partitioner, dd.mean_reducer, 4 / N_TASKS),  # 4 workers, 2 tasks each
    ],
    ids=["batch-sum", "batch-mean"],
)
def test_distributed_meta_gradient_matches_one_process(partitioner, reducer, scale) -> None:
    params = tasks.init_meta_params()
    batch = tasks.make_tasks(N_TASKS)
    want_loss, want_grads = _oracle(params, batch)
    with dd.autograd.context() as ctx:
        loss = scale * dd.remote_sync_call(
            tasks.task_loss_sum, args=(params, *batch), partitioner=partitioner, reducer=reducer
        )
        grads = dd.autograd.grad(ctx, loss, params)
    torch.testing.assert_close(loss.detach(), want_loss, rtol=0, atol=1e-6)
    assert all(g.dtype == torch.float64 for g in grads)
    for got, want in zip(grads, want_grads):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert max(g.abs().max().item() for g in want_grads) > 1e-3  # not trivially zero


def test_backward_accumulates_into_grad_of_the_meta_parameters() -> None:
    params = tasks.init_meta_params(seed=3)
    batch = tasks.make_tasks(N_TASKS, seed=4)
    _, want_grads = _oracle(params, batch)
    params[0].grad = torch.ones_like(params[0])
    with dd.autograd.context() as ctx:
        parts = dd.remote_sync_call(
            tasks.task_loss_sum, args=(params, *batch), partitioner=tasks.maml_partitioner
        )
        dd.autograd.backward(ctx, [p / N_TASKS for p in parts])  # a list of roots is summed
        stored = dd.autograd.get_gradients(ctx)
    torch.testing.assert_close(params[0].grad, want_grads[0] + 1, rtol=0, atol=1e-6)
    for p, want in zip(params[1:], want_grads[1:]):
        torch.testing.assert_close(p.grad, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(stored[params[2]], want_grads[2], rtol=0, atol=1e-6)


def test_backward_with_inputs_only_touches_those() -> None:
    params = tasks.init_meta_params(seed=5)
    batch = tasks.make_tasks(4, seed=6)
    with dd.autograd.context() as ctx:
        loss = dd.remote_sync_call(
            tasks.task_loss_sum,
            args=(params, *batch),
            partitioner=tasks.maml_partitioner,
            reducer=dd.sum_reducer,
        )
        dd.autograd.backward(ctx, loss, inputs=[params[1]])
    assert params[1].grad is not None
    assert all(p.grad is None for i, p in enumerate(params) if i != 1)


def test_grad_argument_errors() -> None:
    x = torch.ones(2, dtype=torch.float64, requires_grad=True)
    unused = torch.ones(1, requires_grad=True)
    with dd.autograd.context() as ctx:
        out = dd.remote_sync_call(tasks.weighted_rows, args=(x.unsqueeze(0), 2.0), partitioner=1)
        y = out[0].sum()
        g = dd.autograd.grad(ctx, y, [x, unused], retain_graph=True, allow_unused=True)
        assert g[1] is None
        torch.testing.assert_close(g[0], torch.full((2,), 2.0, dtype=torch.float64))
        with pytest.raises(RuntimeError, match=r"inputs\[1\] was not used"):
            dd.autograd.grad(ctx, y, [x, unused], retain_graph=True)
        with pytest.raises(RuntimeError, match="every tensor in inputs must require grad"):
            dd.autograd.grad(ctx, y, [torch.ones(1)])
        with pytest.raises(ValueError, match="inputs must name at least one tensor"):
            dd.autograd.backward(ctx, y, inputs=[])
        with pytest.raises(TypeError, match="autograd_ctx_id must be the int"):
            dd.autograd.backward(None, y)  # type: ignore[arg-type]
