"""Remote calls in a real world of 4 processes: partitioners, reducers, errors, timeouts."""

from __future__ import annotations

import time

import pytest
import torch

import difopt_distributed as dd
import dist_tasks as tasks

pytestmark = pytest.mark.usefixtures("world")


def test_world_info_on_every_worker() -> None:
    infos = [dd.remote_sync_call(tasks.world_info, partitioner=r) for r in range(4)]
    assert [i[0] for i in infos] == [(r, 4, r, 4, f"worker{r}") for r in range(4)]
    assert dd.get_world_info() == dd.WorldInfo(0, 4, 0, 4)
    assert dd.get_worker_id("worker2") == 2 and dd.get_worker_id() == 0


@pytest.mark.parametrize(
    ("batch", "rows"),
    [(10, [2, 2, 2, 4]), (4, [1, 1, 1, 1]), (2, [1, 1])],
    ids=["more-rows-than-workers", "one-row-each", "fewer-rows-than-workers"],
)
def test_batch_partitioner_spreads_rows_and_broadcasts_the_rest(batch: int, rows: list[int]):
    x = torch.arange(batch * 3.0).reshape(batch, 3)
    out = dd.remote_sync_call(
        tasks.rank_and_rows, args=(x,), kwargs={"tag": "t"}, partitioner=dd.batch_partitioner
    )
    assert out == [(r, n, "t") for r, n in enumerate(rows)]


def test_exclusive_partitioner_deals_one_call_per_row_in_turn() -> None:
    x = torch.zeros(6, 2)
    out = dd.remote_sync_call(
        tasks.rank_and_rows, args=(x,), partitioner=dd.exclusive_batch_partitioner
    )
    assert out == [(r % 4, 1, "") for r in range(6)]


def test_dim_partitioner_on_another_dim_with_select() -> None:
    x = torch.arange(12.0).reshape(2, 6)
    part = dd.dim_partitioner(dim=-1, exclusive=True, keepdim=False, workers=["worker1", 3])
    out = dd.remote_sync_call(tasks.first_element, args=(x,), partitioner=part)
    assert torch.equal(torch.stack(out), x[0])


def test_rank_and_name_partitioners_send_the_whole_call() -> None:
    x = torch.ones(5, 2)
    assert dd.remote_sync_call(tasks.rank_and_rows, args=(x,), partitioner=2) == [(2, 5, "")]
    assert dd.remote_sync_call(tasks.rank_and_rows, args=(x,), partitioner="worker3") == [
        (3, 5, "")
    ]


@pytest.mark.parametrize(
    ("reducer", "expected"),
    [(dd.sum_reducer, lambda parts: sum(parts)), (dd.mean_reducer, lambda parts: sum(parts) / 4)],
    ids=["sum", "mean"],
)
def test_reducers_combine_the_partition_results(reducer, expected) -> None:
    x = torch.randn(10, 3, dtype=torch.float64)
    got = dd.remote_sync_call(tasks.weighted_rows, args=(x, 0.5), reducer=reducer)
    parts = [(0.5 * x[s]).sum(0) for s in (slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 10))]
    torch.testing.assert_close(got, expected(parts), rtol=0, atol=1e-12)


def test_reducers_work_leafwise_on_pytrees() -> None:
    x = torch.randn(8, 3)
    got = dd.remote_sync_call(tasks.pair, args=(x,), reducer=dd.sum_reducer)
    parts = [x[2 * i : 2 * i + 2] for i in range(4)]
    torch.testing.assert_close(got["sum"], x.sum(0))
    torch.testing.assert_close(got["max"], sum(p.max(0).values for p in parts))


def test_parallelize_sync_async_and_defaults() -> None:
    x = torch.randn(9, 4, dtype=torch.float64)
    torch.testing.assert_close(tasks.parallel_row_sums(x, 2.0), (2.0 * x).sum(0))
    fut = tasks.parallel_row_sums_async(x, scale=2.0)
    assert isinstance(fut, torch.futures.Future)
    torch.testing.assert_close(fut.wait(), (2.0 * x).sum(0))
    torch.testing.assert_close(
        tasks.parallel_default(x),
        torch.stack([x[0:2].sum(0), x[2:4].sum(0), x[4:6].sum(0), x[6:9].sum(0)]).mean(0),
    )
    assert dd.parallelize_sync is dd.parallelize


def test_remote_async_call_without_reducer_returns_the_list() -> None:
    fut = dd.remote_async_call(tasks.sleep_then, args=(0.0, 5), partitioner=1)
    assert fut.wait() == [5]


def test_an_exception_on_a_worker_carries_its_rank_and_traceback() -> None:
    with pytest.raises(dd.WorkerError) as info:
        dd.remote_sync_call(tasks.fail, args=("bad task 7",), partitioner=2)
    err = info.value
    assert isinstance(err, ValueError)  # still caught by `except ValueError`
    assert (err.rank, err.worker_name, err.exception_type) == (2, "worker2", "builtins.ValueError")
    assert "worker 2 (worker2) raised builtins.ValueError: bad task 7" in str(err)
    assert 'dist_tasks.py", line' in err.remote_traceback and "in fail" in err.remote_traceback
    assert isinstance(err.__cause__, ValueError) and str(err.__cause__) == "bad task 7"


def test_an_exception_that_does_not_pickle_still_reports() -> None:
    with pytest.raises(
        dd.WorkerError, match=r"worker 1 \(worker1\) raised dist_tasks.Unpicklable: 1/2"
    ):
        dd.remote_sync_call(tasks.fail_unpicklable, partitioner=1)


def test_the_world_survives_a_worker_exception() -> None:
    with pytest.raises(dd.WorkerError):
        dd.remote_sync_call(tasks.fail, args=("x",), partitioner=3)
    assert dd.remote_sync_call(tasks.sleep_then, args=(0.0, 1), partitioner=3) == [1]


def test_a_stalled_worker_times_out_with_a_clear_error() -> None:
    start = time.monotonic()
    with pytest.raises(
        dd.WorkerLostError, match=r"worker 1 \(worker1\) did not answer within the timeout of 1 s"
    ) as info:
        dd.remote_sync_call(tasks.sleep_then, args=(4.0, 0), partitioner=1, timeout=1)
    assert info.value.timed_out and info.value.rank == 1
    assert time.monotonic() - start < 4.0
    # A timed-out worker is marked lost (the world then shuts down without waiting for it);
    # forget that here: the worker is alive and the session world must end gracefully.
    from difopt_distributed import _world

    _world._world.lost.clear()


def test_barrier_all_and_self() -> None:
    dd.barrier(["worker0"], timeout=5)
    dd.barrier([0])


def test_tree_as_rref_and_back() -> None:
    tree = {"a": torch.ones(2), "b": [torch.zeros(1), 3]}
    rrefs = dd.tree_as_rref(tree)
    back = dd.tree_to_here(rrefs)
    assert torch.equal(back["a"], tree["a"]) and back["b"][1] == 3
    assert dd.tree_local_value(rrefs)["b"][1] == 3
    with pytest.raises(TypeError, match="expected a tree of RRef leaves, found a int"):
        dd.tree_to_here({"x": 1})


# ----------------------------------------------------------------------------- bad input


def _wrong_rank_partitioner(x):
    return [(0, (x,), {}), (4, (x,), {})]


def test_partitioner_output_must_match_the_world_size() -> None:
    with pytest.raises(
        ValueError,
        match=r"sent partition 1 to worker 4, but the world has 4 worker\(s\): ranks must be in \[0, 4\)",
    ):
        dd.remote_sync_call(
            tasks.rank_and_rows, args=(torch.ones(2),), partitioner=_wrong_rank_partitioner
        )


@pytest.mark.parametrize(
    ("partitioner", "message"),
    [
        (lambda x: [], "returned no partitions"),
        (lambda x: [(0, (x,))], r"must be a \(rank, args, kwargs\) triple"),
        (lambda x: 3, "must return a sequence of"),
        (1.5, r"partitioner must be a worker rank \(int\), a worker name \(str\) or a callable"),
        (9, r"worker rank id=9 is out of range \[0, 4\)"),
        ("nobody", r"no worker is named id='nobody'; the workers are 'worker0', 'worker1'"),
    ],
    ids=["empty", "pair", "not-a-sequence", "float", "rank-out-of-range", "unknown-name"],
)
def test_bad_partitioners_are_rejected_before_any_call(partitioner, message) -> None:
    with pytest.raises(ValueError, match=message):
        dd.remote_sync_call(tasks.rank_and_rows, args=(torch.ones(2),), partitioner=partitioner)


def test_bad_timeout_and_function() -> None:
    with pytest.raises(ValueError, match=r"timeout must be a number of seconds >= 0"):
        dd.remote_sync_call(tasks.sleep_then, args=(0, 0), partitioner=1, timeout=-2)
    with pytest.raises(ValueError, match="define it at module level"):
        dd.remote_sync_call(lambda: 0, partitioner=1)
