"""Rank 0 of a fault-test world: provokes a fault, prints what it observed as JSON.

Usage: ``python fault_driver.py SCENARIO`` with the torchrun-style environment of
:func:`helpers.world_env`. Scenarios:

``worker-faults``
    worker 1 raises, then worker 2 exits in the middle of a call, then worker 1 raises and
    stalls past the call's timeout in ``backward="eager"`` calls; rank 0 records the
    errors, checks that worker 1 still answers, and ends normally.
``driver-dies``
    rank 0 exits abruptly while the workers wait for it.
"""

import json
import os
import sys
import time

import torch

torch.set_num_threads(1)

import difopt_distributed as dd  # noqa: E402
import dist_tasks as tasks  # noqa: E402


def _describe(exc: BaseException, started: float) -> dict:
    return {
        "type": type(exc).__name__,
        "classes": [c.__name__ for c in type(exc).__mro__],
        "rank": getattr(exc, "rank", None),
        "message": str(exc),
        "elapsed_s": time.monotonic() - started,
        "timed_out": getattr(exc, "timed_out", None),
    }


@dd.auto_init_rpc()
def main(scenario: str) -> dict:
    report: dict = {}
    if scenario == "driver-dies":
        time.sleep(0.5)
        os._exit(5)
    started = time.monotonic()
    try:
        dd.remote_sync_call(tasks.fail, args=("raised on purpose",), partitioner=1)
    except Exception as exc:  # noqa: BLE001
        report["raises"] = _describe(exc, started)
    started = time.monotonic()
    try:
        dd.remote_sync_call(tasks.exit_process, args=(0.5,), partitioner=2)
    except Exception as exc:  # noqa: BLE001
        report["exits"] = _describe(exc, started)
    # backward="eager" runs on the workers' own threads: the same errors
    started = time.monotonic()
    try:
        dd.remote_sync_call(
            tasks.fail, args=("eager, on purpose",), partitioner=1, backward="eager"
        )
    except Exception as exc:  # noqa: BLE001
        report["raises_eager"] = _describe(exc, started)
    started = time.monotonic()
    try:
        dd.remote_sync_call(
            tasks.sleep_then, args=(3.0, 0), partitioner=1, backward="eager", timeout=1.0
        )
    except Exception as exc:  # noqa: BLE001
        report["stalls_eager"] = _describe(exc, started)
    report["survivor_answers"] = dd.remote_sync_call(tasks.sleep_then, args=(0, 11), partitioner=1)
    return report


if __name__ == "__main__":
    result = main(sys.argv[1])
    print("REPORT " + json.dumps(result), flush=True)
