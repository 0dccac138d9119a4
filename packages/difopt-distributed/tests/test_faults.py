"""Faults in worlds of their own (rank 0 and two workers, all subprocesses).

A worker that raises, a worker that exits in the middle of a call, and a driver that dies:
each ends within the timeout with the documented error, and every process exits.
"""

from __future__ import annotations

import json
import time

import pytest

from helpers import HERE, alive, free_port, reap, spawn

RPC_TIMEOUT_S = "10"  # the calls must fail well before this: a dead peer is seen at once
WORLD_DEADLINE_S = 60


def _run_world(scenario: str) -> tuple[list[tuple[int, str, bool]], list[int], float]:
    port = free_port()
    env = {"DIFOPT_RPC_TIMEOUT": RPC_TIMEOUT_S}
    started = time.monotonic()
    procs = [spawn(HERE / "fault_driver.py", 0, 3, port, scenario, **env)]
    try:
        procs += [spawn(HERE / "rpc_worker.py", r, 3, port, **env) for r in (1, 2)]
    finally:
        results = reap(procs, timeout=WORLD_DEADLINE_S)
    return results, [p.pid for p in procs], time.monotonic() - started


@pytest.fixture(scope="module")
def worker_faults():
    return _run_world("worker-faults")


def _report(results) -> dict:
    out = results[0][1]
    lines = [line for line in out.splitlines() if line.startswith("REPORT ")]
    assert lines, f"rank 0 printed no report:\n{out}"
    return json.loads(lines[-1][len("REPORT ") :])


def test_a_worker_that_raises_reaches_the_caller_as_worker_error(worker_faults) -> None:
    results, _, _ = worker_faults
    raised = _report(results)["raises"]
    assert raised["type"] == "WorkerError[ValueError]" and raised["rank"] == 1
    assert {"WorkerError", "RemoteError", "ValueError"} <= set(raised["classes"])
    assert "worker 1 (worker1) raised builtins.ValueError: raised on purpose" in raised["message"]
    assert "Remote traceback (on worker1)" in raised["message"]
    assert 'dist_tasks.py", line' in raised["message"]


def test_a_worker_that_exits_mid_call_fails_the_call_fast(worker_faults) -> None:
    results, _, _ = worker_faults
    report = _report(results)
    lost = report["exits"]
    assert lost["type"] == "WorkerLostError" and lost["rank"] == 2 and lost["timed_out"] is False
    assert "RPC to worker 2 (worker2) failed after" in lost["message"]
    assert "the worker process died or is unreachable" in lost["message"]
    assert lost["elapsed_s"] < float(RPC_TIMEOUT_S)
    assert report["survivor_answers"] == [11]


def test_eager_calls_fail_the_same_ways(worker_faults) -> None:
    results, _, _ = worker_faults
    report = _report(results)
    raised = report["raises_eager"]
    assert raised["type"] == "WorkerError[ValueError]" and raised["rank"] == 1
    assert "worker 1 (worker1) raised builtins.ValueError: eager, on purpose" in raised["message"]
    stalled = report["stalls_eager"]
    assert stalled["type"] == "WorkerLostError" and stalled["rank"] == 1
    assert stalled["timed_out"] is True
    assert "did not answer within the timeout of 1 s" in stalled["message"]
    assert 0.9 < stalled["elapsed_s"] < 3.0  # the call's timeout, not the function's sleep


def test_every_process_of_the_faulty_world_exits_without_being_killed(worker_faults) -> None:
    results, pids, elapsed = worker_faults
    (rc0, out0, killed0), (rc1, out1, killed1), (rc2, _, killed2) = results
    assert not (killed0 or killed1 or killed2), f"a process had to be killed:\n{out0}\n{out1}"
    assert (rc0, rc1, rc2) == (0, 0, 7), f"{out0}\n{out1}"
    assert "rank 1 exited cleanly" in out1
    assert not any(alive(pid) for pid in pids)
    assert elapsed < WORLD_DEADLINE_S


def test_workers_exit_when_the_driver_dies() -> None:
    results, pids, _ = _run_world("driver-dies")
    codes = [rc for rc, _, _ in results]
    killed = [k for _, _, k in results]
    assert codes[0] == 5 and not any(killed), results
    assert codes[1:] == [0, 0], results
    assert not any(alive(pid) for pid in pids)
