"""backward='eager': workers return their loss with its gradient; checked against one process
and finite differences (float64)."""

from __future__ import annotations

import pytest
import torch

import difopt_distributed as dd
import dist_tasks as tasks

pytestmark = pytest.mark.usefixtures("world")

N_TASKS = 8


def _maml_oracle(params, batch):
    loss = tasks.task_loss_sum(params, *batch) / N_TASKS
    return loss.detach(), torch.autograd.grad(loss, params)


def _eager_loss(params, batch, reducer=dd.sum_reducer):
    return dd.remote_sync_call(
        tasks.task_loss_sum,
        args=(params, *batch),
        partitioner=tasks.maml_partitioner,
        reducer=reducer,
        backward="eager",
    )


def test_eager_meta_gradient_matches_one_process_without_a_context() -> None:
    params = tasks.init_meta_params(seed=11)
    batch = tasks.make_tasks(N_TASKS, seed=12)
    want_loss, want_grads = _maml_oracle(params, batch)
    loss = _eager_loss(params, batch) / N_TASKS
    grads = torch.autograd.grad(loss, params)  # plain autograd: the graph is local
    torch.testing.assert_close(loss.detach(), want_loss, rtol=0, atol=1e-6)
    for got, want in zip(grads, want_grads):
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert max(g.abs().max().item() for g in want_grads) > 1e-3


def test_eager_inside_a_distributed_context_and_mean_reducer() -> None:
    params = tasks.init_meta_params(seed=13)
    batch = tasks.make_tasks(N_TASKS, seed=14)
    _, want_grads = _maml_oracle(params, batch)
    with dd.autograd.context() as ctx:
        loss = _eager_loss(params, batch, reducer=dd.mean_reducer) * (4 / N_TASKS)
        dd.autograd.backward(ctx, loss)
        stored = dd.autograd.get_gradients(ctx)
    for p, want in zip(params, want_grads):
        torch.testing.assert_close(p.grad, want, rtol=0, atol=1e-6)
        torch.testing.assert_close(stored[p], want, rtol=0, atol=1e-6)


def test_eager_and_distributed_backward_agree() -> None:
    params = tasks.init_meta_params(seed=15)
    batch = tasks.make_tasks(N_TASKS, seed=16)
    eager = torch.autograd.grad(_eager_loss(params, batch), params)
    with dd.autograd.context() as ctx:
        loss = dd.remote_sync_call(
            tasks.task_loss_sum,
            args=(params, *batch),
            partitioner=tasks.maml_partitioner,
            reducer=dd.sum_reducer,
        )
        distributed = dd.autograd.grad(ctx, loss, params)
    for a, b in zip(eager, distributed):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_eager_gradcheck_against_finite_differences() -> None:
    g = torch.Generator().manual_seed(17)
    w = torch.randn(3, 2, dtype=torch.float64, generator=g, requires_grad=True)
    x = torch.randn(6, 3, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, generator=g, requires_grad=True)

    def f(w, x, b):
        # the rows of x spread over the workers; w and b go whole to each
        return dd.remote_sync_call(
            tasks.quadratic_loss,
            args=(w, x, b),
            kwargs={"scale": 0.5},
            partitioner=lambda w, x, b, scale: [
                (r, (w, x[2 * i : 2 * i + 2], b), {"scale": scale}) for i, r in enumerate([1, 2, 3])
            ],
            reducer=dd.sum_reducer,
            backward="eager",
        )

    assert torch.autograd.gradcheck(f, (w, x, b), eps=1e-6, atol=1e-7)


def test_eager_only_differentiates_what_requires_grad() -> None:
    a = torch.arange(4.0, dtype=torch.float64).requires_grad_()
    b = torch.ones(4, dtype=torch.float64, requires_grad=True)
    c = torch.ones(4, dtype=torch.float64)  # no grad wanted
    (loss,) = dd.remote_sync_call(
        tasks.loss_of_first, args=(a, b), partitioner=2, backward="eager"
    )  # a rank as partitioner: a list of one result
    ga, gb = torch.autograd.grad(loss, [a, b], allow_unused=True)
    torch.testing.assert_close(ga, 2 * a.detach())
    assert gb is None  # unused on the worker: no gradient, as in one process
    (loss_c,) = dd.remote_sync_call(
        tasks.loss_of_first, args=(c, a), partitioner=1, backward="eager"
    )
    assert not loss_c.requires_grad  # `a` requires grad but is unused, as in one process
    torch.testing.assert_close(loss_c, torch.tensor(4.0, dtype=torch.float64))


def test_eager_same_tensor_twice_sums_its_gradients() -> None:
    w = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    (loss,) = dd.remote_sync_call(tasks.loss_of_first, args=(w, w), partitioner=1, backward="eager")
    (g,) = torch.autograd.grad(3 * loss, [w])
    torch.testing.assert_close(g, 6 * w.detach())


def test_eager_result_without_graph_needs_no_gradient() -> None:
    x = torch.ones(3, requires_grad=True)
    (out,) = dd.remote_sync_call(tasks.detached_loss, args=(x,), partitioner=1, backward="eager")
    assert not out.requires_grad
    assert out.item() == 3.0
    with torch.no_grad():
        (out,) = dd.remote_sync_call(
            tasks.loss_of_first, args=(x, x), partitioner=1, backward="eager"
        )
    assert not out.requires_grad
    assert out.item() == 3.0


def test_eager_is_first_order_only() -> None:
    w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    (loss,) = dd.remote_sync_call(tasks.loss_of_first, args=(w, w), partitioner=1, backward="eager")
    with pytest.raises(RuntimeError, match="differentiable once.*backward='distributed'"):
        torch.autograd.grad(loss, [w], create_graph=True)
    (g,) = torch.autograd.grad(loss, [w])  # the graph is intact after the refusal
    torch.testing.assert_close(g, 2 * w.detach())


def test_eager_rejects_a_result_that_is_not_a_loss() -> None:
    x = torch.ones(3, requires_grad=True)
    with pytest.raises(dd.WorkerError, match=r"one real floating-point scalar.*shape \(3,\)") as e:
        dd.remote_sync_call(tasks.not_a_loss, args=(x,), partitioner=1, backward="eager")
    assert isinstance(e.value, ValueError) and e.value.rank == 1


def test_eager_decorator() -> None:
    x = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(18))
    w = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    w_rows = w.unsqueeze(0).expand(7, 3, 2)  # the batch partitioner splits every tensor
    loss = tasks.parallel_eager_loss(x, w_rows)
    (g,) = torch.autograd.grad(loss, [w])
    torch.testing.assert_close(g, 2 * x.T @ (x @ w.detach()), rtol=0, atol=1e-10)


def test_backward_argument_is_checked_before_any_call() -> None:
    with pytest.raises(ValueError, match=r"backward must be one of 'distributed', 'eager'"):
        dd.remote_sync_call(tasks.weighted_rows, args=(torch.ones(2, 2), 1.0), backward="local")
    with pytest.raises(ValueError, match="backward must be one of"):
        dd.parallelize(backward="eagerly")


def test_sync_eager_runs_this_process_share_in_the_calling_thread() -> None:
    import threading

    w = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    scratch = torch.ones(3)
    tasks.CALLS_HERE.clear()
    (loss,) = dd.remote_sync_call(
        tasks.recorded_loss,
        args=(w, scratch),
        kwargs={"scale": 3.0},
        partitioner=0,
        backward="eager",
    )
    assert tasks.CALLS_HERE == [threading.get_ident()]  # no RPC to itself
    assert torch.equal(scratch, torch.ones(3))  # it doubled a copy, as over RPC
    (g,) = torch.autograd.grad(loss, [w])
    torch.testing.assert_close(g, torch.tensor([6.0, 12.0], dtype=torch.float64))
    # the async call sends every partition by RPC: an RPC thread of this process runs it
    tasks.CALLS_HERE.clear()
    fut = dd.remote_async_call(
        tasks.recorded_loss, args=(w, scratch), partitioner=0, backward="eager"
    )
    (loss,) = fut.wait()
    assert len(tasks.CALLS_HERE) == 1 and tasks.CALLS_HERE[0] != threading.get_ident()
    assert torch.equal(scratch, torch.ones(3))
    torch.testing.assert_close(loss.detach(), torch.tensor(5.0, dtype=torch.float64))


def test_eager_errors_here_and_there_name_the_rank() -> None:
    w = torch.ones(2, requires_grad=True)
    parts = [(0, (w,), {}), (2, (w,), {})]
    for failing in (0, 2):
        with pytest.raises(dd.WorkerError, match=f"worker {failing} .*no task on rank") as e:
            dd.remote_sync_call(
                tasks.fail_on,
                args=(failing, w),
                partitioner=lambda rank, w: [(r, (rank, w), {}) for r, _, _ in parts],
                backward="eager",
            )
        assert e.value.rank == failing and isinstance(e.value, KeyError)
