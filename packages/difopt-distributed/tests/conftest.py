"""Fixtures: one RPC world per test session (this process is rank 0, three workers).

Worlds take seconds to start on a loaded machine, so the tests that can share one do. Each
test also runs under a deadline: past it, the stacks are dumped and the run exits (the
workers then exit with their parent, see ``rpc_worker.py``).
"""

from __future__ import annotations

import faulthandler
import os
import sys
import warnings
from collections.abc import Iterator

import pytest
import torch

import difopt_distributed as dd
from helpers import WORKER, free_port, reap, spawn, world_env

TEST_DEADLINE_S = 150
WORKERS = 3
WORLD_SIZE = WORKERS + 1
RPC_TIMEOUT_S = 20.0


@pytest.fixture(autouse=True)
def _deadline() -> Iterator[None]:
    faulthandler.dump_traceback_later(TEST_DEADLINE_S, exit=True, file=sys.stderr)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="session")
def world() -> Iterator[dd.WorldInfo]:
    """Start a world of 4: this process as rank 0 (the caller) and 3 worker processes."""
    torch.set_num_threads(1)
    port = free_port()
    # The last worker binds itself to its share of the CPUs (DIFOPT_BIND_CPUS, read by
    # auto_init_rpc), for test_bind_cpus.py; the others run unbound. Worker 2 runs without
    # OMP_NUM_THREADS (its threads come from torch.set_num_threads alone), for
    # test_threads.py.
    procs = [
        spawn(
            WORKER,
            rank,
            WORLD_SIZE,
            port,
            DIFOPT_RPC_TIMEOUT=str(RPC_TIMEOUT_S),
            DIFOPT_BIND_CPUS="1" if rank == WORLD_SIZE - 1 else "0",
            OMP_NUM_THREADS=None if rank == 2 else "1",
        )
        for rank in range(1, WORLD_SIZE)
    ]
    saved = dict(os.environ)
    started = False
    try:
        os.environ.update(world_env(0, WORLD_SIZE, port))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's own ProcessGroupGloo notice
            info = dd.init_world(rpc_timeout=RPC_TIMEOUT_S)
        started = True
        os.environ.clear()
        os.environ.update(saved)
        yield info
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if started:
            dd.shutdown(timeout=15)
        results = reap(procs, timeout=30 if started else 1)
    bad = [(rc, out) for rc, out, killed in results if rc != 0 or killed]
    assert not bad, f"workers did not exit cleanly: {bad}"
