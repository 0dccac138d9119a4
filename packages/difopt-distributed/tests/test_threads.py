"""Remote functions run with the worker process's intra-op thread count."""

from __future__ import annotations

import os

import pytest
import torch

import difopt_distributed as dd
import dist_tasks as tasks


@pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="torch built without MKL")
@pytest.mark.usefixtures("world")
def test_a_remote_function_gets_the_workers_thread_count_for_mkl_too() -> None:
    """conftest starts worker 2 without OMP_NUM_THREADS; it calls torch.set_num_threads(1).

    MKL's thread count is per thread and torch applies it to a thread lazily; an RPC thread
    whose function starts with a matrix product used to run it on every CPU MKL saw at start.
    """
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("MKL's default on one CPU is one thread: nothing to tell apart")
    for _ in range(8):  # several calls reach several of the agent's threads
        ((mkl, torch_threads),) = dd.remote_sync_call(tasks.mkl_threads_on_entry, partitioner=2)
        assert torch_threads == 1
        assert mkl == 1, f"MKL would use {mkl} threads on the RPC thread, torch.set_num_threads(1)"
