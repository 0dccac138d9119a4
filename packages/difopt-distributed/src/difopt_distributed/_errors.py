"""Errors raised by difopt-distributed when a remote call fails."""

from __future__ import annotations

__all__ = ["RemoteError", "RpcNotInitializedError", "WorkerError", "WorkerLostError"]


class RpcNotInitializedError(RuntimeError):
    """A function that needs the RPC world was called before it was initialized."""


class RemoteError(RuntimeError):
    """A call to a remote worker failed.

    Attributes:
        rank: the world rank of the worker the call was sent to.
        worker_name: that worker's RPC name.
    """

    def __init__(self, message: str, *, rank: int, worker_name: str) -> None:
        super().__init__(message)
        self.rank = rank
        self.worker_name = worker_name


class WorkerError(RemoteError):
    """The called function raised an exception on the worker.

    When the original exception class can be imported and combined with this one, the error
    raised is a subclass of both (``except ValueError`` still catches a remote ``ValueError``)
    and ``__cause__`` is the original exception.

    Attributes:
        exception_type: qualified name of the original exception's class.
        remote_traceback: the traceback formatted on the worker.
    """

    def __init__(
        self,
        message: str,
        *,
        rank: int,
        worker_name: str,
        exception_type: str,
        remote_traceback: str,
    ) -> None:
        super().__init__(message, rank=rank, worker_name=worker_name)
        self.exception_type = exception_type
        self.remote_traceback = remote_traceback


class WorkerLostError(RemoteError):
    """The worker did not answer: its process died, its connection broke, or it timed out.

    Attributes:
        timed_out: True when the call ran past its timeout rather than failing at once.
    """

    def __init__(self, message: str, *, rank: int, worker_name: str, timed_out: bool) -> None:
        super().__init__(message, rank=rank, worker_name=worker_name)
        self.timed_out = timed_out
