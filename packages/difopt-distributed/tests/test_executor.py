"""The LIFO pool that runs eager calls on workers (in-process, no RPC)."""

from __future__ import annotations

import threading
import time

import pytest

from difopt_distributed._executor import LifoPool


def _name() -> str:
    return threading.current_thread().name


def test_sequential_tasks_stay_on_one_thread() -> None:
    pool = LifoPool("t-seq")
    names = [pool.submit(_name).wait() for _ in range(20)]
    assert set(names) == {"t-seq-1"}
    assert pool.threads == 1


def test_the_most_recently_idle_thread_runs_the_next_task() -> None:
    pool = LifoPool("t-lifo", keep_idle=4)
    gate = threading.Event()
    # three overlapping tasks: three threads
    futs = [pool.submit(lambda: (gate.wait(10), _name())[1]) for _ in range(3)]
    gate.set()
    assert sorted(f.wait() for f in futs) == ["t-lifo-1", "t-lifo-2", "t-lifo-3"]
    # a thread parks before it hands over its result: all three are idle now
    assert len(pool._idle) == 3
    last_parked = pool._idle[-1].name
    assert pool.submit(_name).wait() == last_parked
    assert pool.threads == 3


def test_threads_beyond_keep_idle_end_and_tasks_beyond_max_wait() -> None:
    pool = LifoPool("t-max", max_threads=2, keep_idle=1)
    gate = threading.Event()
    started = []

    def slow(i: int) -> int:
        started.append(i)
        gate.wait(10)
        return i

    futs = [pool.submit(lambda i=i: slow(i)) for i in range(5)]
    deadline = time.monotonic() + 5
    while len(started) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # a third thread, if there were one, would have started by now
    assert sorted(started) == [0, 1] and pool.threads == 2  # the rest wait their turn
    gate.set()
    assert [f.wait() for f in futs] == [0, 1, 2, 3, 4]
    deadline = time.monotonic() + 5
    while pool.threads > 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.threads == 1  # keep_idle=1: the other thread ended


def test_an_exception_reaches_the_future() -> None:
    pool = LifoPool("t-err")

    def boom() -> None:
        raise KeyError("lost")

    with pytest.raises(KeyError, match="lost"):
        pool.submit(boom).wait()
    assert pool.submit(lambda: 7).wait() == 7  # the thread survived


def test_bad_sizes() -> None:
    with pytest.raises(ValueError, match="max_threads must be >= 1"):
        LifoPool("x", max_threads=0)
    with pytest.raises(ValueError, match="keep_idle >= 0"):
        LifoPool("x", keep_idle=-1)
