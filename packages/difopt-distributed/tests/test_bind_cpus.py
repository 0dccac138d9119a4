"""bind_cpus: each process of a node bound to its own share of the CPUs."""

from __future__ import annotations

import os

import pytest

import difopt_distributed as dd
import dist_tasks as tasks
from difopt_distributed import _world

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity"), reason="CPU binding needs os.sched_setaffinity"
)


@pytest.mark.parametrize(
    ("cpus", "workers", "expected"),
    [
        (range(8), 4, [[0, 1], [2, 3], [4, 5], [6, 7]]),
        (range(7), 3, [[0, 1, 2], [3, 4], [5, 6]]),
        ([5, 1, 3, 3], 2, [[1, 3], [5]]),  # sorted, duplicates dropped, remainder first
        (range(2), 2, [[0], [1]]),
        (range(2), 5, [[0], [1], [0], [1], [0]]),  # more workers than CPUs: shared in turn
        ([4], 1, [[4]]),
    ],
)
def test_cpu_share_deals_contiguous_even_blocks(cpus, workers, expected) -> None:
    shares = [dd.cpu_share(cpus, rank, workers) for rank in range(workers)]
    assert shares == expected
    if len(set(cpus)) >= workers:  # a partition: every CPU once
        assert sorted(c for s in shares for c in s) == sorted(set(cpus))


def test_cpu_share_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="cpus is empty"):
        dd.cpu_share([], 0, 1)
    with pytest.raises(ValueError, match=r"local_rank must be in \[0, local_world_size=2\)"):
        dd.cpu_share([0, 1], 2, 2)


def test_bind_cpus_argument_and_environment_are_checked(monkeypatch) -> None:
    with pytest.raises(TypeError, match="bind_cpus must be a bool or None"):
        dd.auto_init_rpc(bind_cpus="yes")  # type: ignore[arg-type]
    monkeypatch.setenv("DIFOPT_BIND_CPUS", "maybe")
    with pytest.raises(ValueError, match="DIFOPT_BIND_CPUS must be 1/true/yes or 0/false/no"):
        _world._bind_cpus_requested(None)
    for raw, want in (("1", True), ("TRUE", True), ("0", False), ("", False), ("no", False)):
        monkeypatch.setenv("DIFOPT_BIND_CPUS", raw)
        assert _world._bind_cpus_requested(None) is want
    assert _world._bind_cpus_requested(False) is False  # the argument wins


@pytest.mark.usefixtures("world")
def test_a_worker_started_with_bind_cpus_has_every_thread_on_its_share() -> None:
    """conftest starts worker 3 of 4 with DIFOPT_BIND_CPUS=1 and the others without."""
    available = sorted(os.sched_getaffinity(0))
    (bound,) = dd.remote_sync_call(tasks.thread_cpus, partitioner=3)
    assert len(bound) > 3  # torch's and RPC's threads, not only the main one
    assert all(cpus == dd.cpu_share(available, 3, 4) for cpus in bound)
    (free,) = dd.remote_sync_call(tasks.thread_cpus, partitioner=1)
    assert all(cpus == available for cpus in free)


def test_a_failed_start_leaves_the_binding_as_it_was(monkeypatch) -> None:
    before = sorted(os.sched_getaffinity(0))
    if len(before) < 2:
        pytest.skip("needs two CPUs to see a binding")

    def fail(*args, **kwargs):
        assert sorted(os.sched_getaffinity(0)) == dd.cpu_share(before, 1, 2)  # bound here
        raise RuntimeError("could not start")

    monkeypatch.setattr(_world, "is_initialized", lambda: False)
    monkeypatch.setattr(_world, "_start", fail)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="could not start"):
        dd.init_world(bind_cpus=True)
    assert sorted(os.sched_getaffinity(0)) == before
