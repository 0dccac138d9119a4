"""A pool of threads that hands each task to the most recently idle thread (LIFO).

An RPC agent hands requests to its threads in turn, so with sequential calls each of its
threads runs one call in N, and that thread's memory (glibc keeps an arena per thread) sits
idle in between. Where the kernel reclaims idle memory (DAMON ``pageout``, proactive reclaim
of a cgroup), each call then faults its working set back in. A LIFO pool keeps sequential
calls on one thread, whose memory stays in use, and starts more threads only when calls
overlap.
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Callable

import torch

__all__ = ["LifoPool"]

Task = tuple[Callable[[], Any], torch.futures.Future]


class _Worker(threading.Thread):
    def __init__(self, pool: LifoPool, name: str, task: Task) -> None:
        super().__init__(name=name, daemon=True)
        self.pool = pool
        self.wake = threading.Event()
        self.task: Task | None = task

    def run(self) -> None:
        task = self.task
        while task is not None:
            fn, fut = task
            try:
                result, error = fn(), None
            except BaseException as exc:  # noqa: BLE001  (handed to whoever waits on fut)
                result, error = None, exc
            # Find the next task, or park, before the caller learns the result: a caller that
            # submits again as soon as it has the result then finds this thread idle.
            task, parked = self.pool._next(self)
            if error is None:
                fut.set_result(result)
            else:
                fut.set_exception(error)
            if parked:
                self.wake.wait()
                task = self.task


class LifoPool:
    """Run callables on threads of this pool, giving each to the most recently idle one.

    Args:
        name: prefix of the threads' names.
        max_threads: most threads at once; further tasks wait their turn (FIFO).
        keep_idle: idle threads kept for later tasks; one more that goes idle ends.
    """

    def __init__(self, name: str, max_threads: int = 16, keep_idle: int = 2) -> None:
        if max_threads < 1 or keep_idle < 0:
            raise ValueError(
                f"max_threads must be >= 1 and keep_idle >= 0, got {max_threads} and {keep_idle}"
            )
        self.name = name
        self.max_threads = max_threads
        self.keep_idle = keep_idle
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []  # a stack: the last one parked runs the next task
        self._pending: collections.deque[Task] = collections.deque()
        self._threads = 0
        self._started = 0

    @property
    def threads(self) -> int:
        """Threads alive now (running a task or idle)."""
        return self._threads

    def submit(self, fn: Callable[[], Any]) -> torch.futures.Future:
        """Run ``fn()`` on a thread of the pool.

        Returns:
            A future of ``fn()``'s result; it holds the exception when ``fn`` raised.
        """
        fut: torch.futures.Future = torch.futures.Future()
        task: Task = (fn, fut)
        with self._lock:
            if self._idle:
                worker = self._idle.pop()
                worker.task = task
                worker.wake.set()
            elif self._threads < self.max_threads:
                self._threads += 1
                self._started += 1
                _Worker(self, f"{self.name}-{self._started}", task).start()
            else:
                self._pending.append(task)
        return fut

    def _next(self, worker: _Worker) -> tuple[Task | None, bool]:
        """What ``worker`` does after a task: ``(task, False)`` runs a waiting task,
        ``(None, True)`` waits (parked) for the next submitted one, ``(None, False)`` ends the
        thread."""
        with self._lock:
            if self._pending:
                return self._pending.popleft(), False
            if len(self._idle) >= self.keep_idle:
                self._threads -= 1
                return None, False
            worker.task = None
            worker.wake.clear()
            self._idle.append(worker)
            return None, True
