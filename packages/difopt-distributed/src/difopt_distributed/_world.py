"""The RPC world: who am I, starting and stopping RPC, rank-gated functions.

World facts come from the environment ``torchrun`` sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) until RPC is started,
and from the running world afterwards.

Shutdown protocol: every rank ends in :func:`shutdown`. Rank 0 (the driver in the usual
``torchrun`` program) completes a future when it gets there; every other rank first waits for
that future through an RPC, which fails at once if rank 0's process dies, so an idle worker
never outlives its driver. When every worker is alive the world then shuts down gracefully
(outstanding work and remote references are flushed); when a worker was lost, the survivors
meet at a barrier among themselves and shut down locally, so nobody waits for the dead.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import threading
import warnings
from typing import Any, Callable, Iterable, NamedTuple, TypeVar

import torch
import torch.distributed.rpc as rpc
from torch.distributed.elastic.multiprocessing.errors import record

from difopt_distributed._errors import RpcNotInitializedError

__all__ = [
    "DEFAULT_RPC_TIMEOUT",
    "WorldInfo",
    "auto_init_rpc",
    "barrier",
    "default_worker_name_format",
    "get_local_rank",
    "get_local_world_size",
    "get_rank",
    "get_worker_id",
    "get_world_info",
    "get_world_rank",
    "get_world_size",
    "init_world",
    "is_initialized",
    "not_on_rank",
    "on_rank",
    "rank_non_zero_only",
    "rank_zero_only",
    "shutdown",
]

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_RPC_TIMEOUT = 30.0
"""Seconds an RPC may take before it fails (``DIFOPT_RPC_TIMEOUT`` overrides it)."""

TIMEOUT_ENV = "DIFOPT_RPC_TIMEOUT"

DEFAULT_TRANSPORTS: tuple[str, ...] = ("uv",)
"""TensorPipe transports of the default backend options (``DIFOPT_RPC_TRANSPORTS`` overrides).

TensorPipe's own default puts its shared-memory transport (``shm``) first, whose reactor
thread busy-polls: it keeps one CPU core at 100 % in every process for the whole life of the
world, even when idle. With one process per core (the usual CPU layout) that halves the
compute of every worker. ``uv`` (TCP through libuv's event loop) sleeps when idle and costs
about 0.1 ms more per RPC on loopback. Set ``DIFOPT_RPC_TRANSPORTS=shm,uv`` (or pass
``rpc_backend_options``) to get the shared-memory transport back where spare cores exist.
"""

TRANSPORTS_ENV = "DIFOPT_RPC_TRANSPORTS"
_LEADER = 0


def default_worker_name_format(
    world_rank: int, world_size: int, local_rank: int, local_world_size: int
) -> str:
    """Name a worker ``worker<rank>``, the rank zero-padded to the width of the world size.

    Args:
        world_rank: the global rank of the worker.
        world_size: the number of workers in the world.
        local_rank: the rank of the worker on its node (unused).
        local_world_size: the number of workers on its node (unused).

    Returns:
        The worker's RPC name, e.g. ``worker03`` in a world of 16.
    """
    del local_rank, local_world_size
    return f"worker{world_rank:0{len(str(world_size))}d}"


_worker_name_format: Callable[..., str] = default_worker_name_format


class WorldInfo(NamedTuple):
    """Where this process sits in the world.

    Attributes:
        world_rank: global rank, ``0 <= world_rank < world_size``.
        world_size: number of processes in the world.
        local_rank: rank on this node.
        local_world_size: number of processes on this node.
    """

    world_rank: int
    world_size: int
    local_rank: int
    local_world_size: int

    @property
    def rank(self) -> int:
        """The global rank (same as ``world_rank``)."""
        return self.world_rank

    @property
    def worker_name(self) -> str:
        """This process's RPC worker name."""
        return _worker_name_format(
            world_rank=self.world_rank,
            world_size=self.world_size,
            local_rank=self.local_rank,
            local_world_size=self.local_world_size,
        )


@dataclasses.dataclass
class _World:
    info: WorldInfo
    names: dict[int, str]
    done: torch.futures.Future
    lost: set[int] = dataclasses.field(default_factory=set)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


_world: _World | None = None
_pending_done: torch.futures.Future | None = None
# Restores the CPU binding init_world(bind_cpus=True) changed; shutdown() calls it.
_unbind: Callable[[], None] | None = None


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(
            f"environment variable {name} must be an integer (torchrun sets it), got {raw!r}"
        ) from None


def _info_from_env() -> WorldInfo:
    info = WorldInfo(
        world_rank=_env_int("RANK", 0),
        world_size=_env_int("WORLD_SIZE", 1),
        local_rank=_env_int("LOCAL_RANK", 0),
        local_world_size=_env_int("LOCAL_WORLD_SIZE", 1),
    )
    if info.world_size < 1:
        raise ValueError(f"environment variable WORLD_SIZE must be >= 1, got {info.world_size}")
    if not 0 <= info.world_rank < info.world_size:
        raise ValueError(
            f"environment variable RANK must be in [0, WORLD_SIZE={info.world_size}), "
            f"got {info.world_rank}"
        )
    if not 0 <= info.local_rank < max(info.local_world_size, 1):
        raise ValueError(
            f"environment variable LOCAL_RANK must be in [0, LOCAL_WORLD_SIZE="
            f"{info.local_world_size}), got {info.local_rank}"
        )
    return info


def get_world_info() -> WorldInfo:
    """Return this process's place in the world.

    Inside a running RPC world this is the world's; before, it is read from the environment
    that ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``),
    defaulting to a world of one.

    Raises:
        ValueError: an environment variable is not an integer or is out of range.
    """
    world = _world
    return world.info if world is not None else _info_from_env()


def get_world_rank() -> int:
    """Return the global rank of this process."""
    return get_world_info().world_rank


get_rank = get_world_rank


def get_world_size() -> int:
    """Return the number of processes in the world."""
    return get_world_info().world_size


def get_local_rank() -> int:
    """Return the rank of this process on its node."""
    return get_world_info().local_rank


def get_local_world_size() -> int:
    """Return the number of processes on this node."""
    return get_world_info().local_world_size


def is_initialized() -> bool:
    """Whether an RPC agent is running in this process (started by difopt or by the user)."""
    return bool(rpc.is_available() and rpc.api._is_current_rpc_agent_set())


def _require_rpc(what: str) -> None:
    if not is_initialized():
        raise RpcNotInitializedError(
            f"{what} needs the RPC world, which is not initialized in this process: decorate "
            "the program's entry point with difopt.distributed.auto_init_rpc() (or call "
            "init_world()) and launch it with torchrun, e.g. "
            "`torchrun --nproc-per-node 2 script.py`"
        )


def _worker_names() -> dict[int, str]:
    world = _world
    if world is not None:
        return world.names
    agent = rpc.api._get_current_rpc_agent()
    return {w.id: w.name for w in agent.get_worker_infos()}


def _current_world_size() -> int:
    world = _world
    return world.info.world_size if world is not None else len(_worker_names())


def worker_name(rank: int) -> str:
    """The RPC name of the worker with global rank ``rank`` (RPC must be running)."""
    return _worker_names().get(rank, f"rank {rank}")


def get_worker_id(id: str | int | None = None) -> int:  # noqa: A002  (TorchOpt's name)
    """Return the global rank of a worker.

    Args:
        id: a rank (returned as is, after a range check when RPC runs), a worker name, or
            None for this process.

    Returns:
        The worker's global rank.

    Raises:
        TypeError: ``id`` is not an int, a str or None.
        ValueError: the rank is out of range or no worker has that name.
        RpcNotInitializedError: a name or None was given before RPC was started.
    """
    if isinstance(id, bool) or not isinstance(id, (int, str, type(None))):
        raise TypeError(
            f"get_worker_id(id=...) accepts a rank (int), a worker name (str) or None, "
            f"got {type(id).__name__}"
        )
    if isinstance(id, int):
        if is_initialized():
            size = _current_world_size()
            if not 0 <= id < size:
                raise ValueError(f"worker rank id={id} is out of range [0, {size})")
        elif id < 0:
            raise ValueError(f"worker rank id={id} must be >= 0")
        return id
    _require_rpc("get_worker_id()")
    if id is None:
        return rpc.get_worker_info().id
    for rank, name in _worker_names().items():
        if name == id:
            return rank
    known = ", ".join(repr(n) for _, n in sorted(_worker_names().items()))
    raise ValueError(f"no worker is named id={id!r}; the workers are {known}")


def _resolve_names(workers: Iterable[int | str] | None) -> set[str]:
    names = _worker_names()
    if workers is None:
        return set(names.values())
    return {names[get_worker_id(w)] for w in workers}


def barrier(worker_names: Iterable[int | str] | None = None, timeout: float | None = None) -> None:
    """Block until every listed worker has reached this barrier.

    Args:
        worker_names: names (or ranks) of the workers to synchronize; None for all of them.
            Every listed worker must call ``barrier`` with the same set.
        timeout: seconds to wait before failing; None uses the RPC timeout.

    Raises:
        RpcNotInitializedError: RPC is not running.
        RuntimeError: a worker did not arrive in time (unlike torch's private ``_barrier``,
            which only logs this).
    """
    _require_rpc("barrier()")
    names = _resolve_names(worker_names)
    seconds = rpc.get_rpc_timeout() if timeout is None else _check_timeout(timeout, "timeout")
    try:
        rpc.api._all_gather(None, names, timeout=seconds)
    except RuntimeError as exc:
        raise RuntimeError(
            f"barrier() among {sorted(names)} failed after at most {seconds:g} s: {exc}"
        ) from exc


def _check_timeout(value: Any, argument: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{argument} must be a positive number of seconds, got {value!r}")
    return float(value)


def _default_rpc_timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_RPC_TIMEOUT
    try:
        return _check_timeout(float(raw), f"environment variable {TIMEOUT_ENV}")
    except ValueError:
        raise ValueError(
            f"environment variable {TIMEOUT_ENV} must be a positive number of seconds, got {raw!r}"
        ) from None


def _default_transports() -> list[str]:
    raw = os.environ.get(TRANSPORTS_ENV)
    if raw is None or raw.strip() == "":
        return list(DEFAULT_TRANSPORTS)
    names = [t.strip() for t in raw.split(",") if t.strip()]
    if not names:
        raise ValueError(
            f"environment variable {TRANSPORTS_ENV} must be a comma-separated list of "
            f"TensorPipe transports (e.g. 'uv' or 'shm,uv'), got {raw!r}"
        )
    return names


BIND_CPUS_ENV = "DIFOPT_BIND_CPUS"


def _bind_cpus_requested(bind_cpus: bool | None) -> bool:
    if bind_cpus is not None:
        if not isinstance(bind_cpus, bool):
            raise TypeError(f"bind_cpus must be a bool or None, got {bind_cpus!r}")
        return bind_cpus
    raw = os.environ.get(BIND_CPUS_ENV, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ValueError(
        f"environment variable {BIND_CPUS_ENV} must be 1/true/yes or 0/false/no, got {raw!r}"
    )


def cpu_share(cpus: Iterable[int], local_rank: int, local_world_size: int) -> list[int]:
    """The CPUs that local worker ``local_rank`` of ``local_world_size`` gets out of ``cpus``.

    The CPUs are dealt in contiguous blocks as even as possible (the first ``len(cpus) %
    local_world_size`` workers get one more); with fewer CPUs than workers, worker ``i`` gets
    CPU ``i mod len(cpus)`` alone, so several workers share each CPU.
    """
    ordered = sorted(set(cpus))
    if not ordered:
        raise ValueError("cpus is empty")
    if not 0 <= local_rank < local_world_size:
        raise ValueError(
            f"local_rank must be in [0, local_world_size={local_world_size}), got {local_rank}"
        )
    n = len(ordered)
    if n < local_world_size:
        return [ordered[local_rank % n]]
    base, extra = divmod(n, local_world_size)
    start = local_rank * base + min(local_rank, extra)
    return ordered[start : start + base + (1 if local_rank < extra else 0)]


def _bind_to_cpus(info: WorldInfo) -> Callable[[], None]:
    """Bind every thread of this process to its share of the CPUs it may use now; return a
    function that restores the previous binding."""
    if not hasattr(os, "sched_setaffinity"):
        raise RuntimeError(
            "bind_cpus needs os.sched_setaffinity, which this platform does not have "
            f"(unset {BIND_CPUS_ENV} or pass bind_cpus=False)"
        )
    before = sorted(os.sched_getaffinity(0))
    share = cpu_share(before, info.local_rank, max(info.local_world_size, 1))
    _set_affinity(share)
    return lambda: _set_affinity(before)


def _set_affinity(cpus: list[int]) -> None:
    # sched_setaffinity(0, ...) binds the calling thread only: threads torch has already
    # started (OpenMP, inter-op pool, autograd) are bound one by one.
    try:
        threads = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        threads = []
    for tid in threads:
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:
            pass  # a thread that ended meanwhile
    os.sched_setaffinity(0, cpus)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@rpc.functions.async_execution
def _await_leader_done() -> torch.futures.Future:
    """Run on rank 0 for each other rank: completes when rank 0 reaches :func:`shutdown`."""
    done = _world.done if _world is not None else _pending_done
    if done is None:
        raise RuntimeError("rank 0 has no running difopt world")
    return done


def init_world(
    worker_init_fn: Callable[[], None] | None = None,
    worker_name_format: Callable[..., str] = default_worker_name_format,
    *,
    backend: rpc.BackendType | None = None,
    rpc_backend_options: rpc.RpcBackendOptions | None = None,
    rpc_timeout: float | None = None,
    bind_cpus: bool | None = None,
) -> WorldInfo:
    """Start RPC in this process from the ``torchrun`` environment.

    :func:`auto_init_rpc` does this around a function; call it directly when RPC must outlive
    one function call (then end with :func:`shutdown`).

    Args:
        worker_init_fn: called on every worker once all have joined (then all meet again).
        worker_name_format: ``f(world_rank=, world_size=, local_rank=, local_world_size=)``
            returning each worker's RPC name.
        backend: the RPC backend (default: TensorPipe).
        rpc_backend_options: options of the backend; mutually exclusive with ``rpc_timeout``.
        rpc_timeout: seconds after which an RPC fails, e.g. because its worker died;
            default ``DIFOPT_RPC_TIMEOUT`` or 30.
        bind_cpus: bind this process (all its threads) to its share of the CPUs it may use,
            split evenly between the ``LOCAL_WORLD_SIZE`` processes of the node by
            ``LOCAL_RANK`` (:func:`cpu_share`), as ``taskset``/``numactl`` would; default
            ``DIFOPT_BIND_CPUS`` (off). With one process per core this keeps the scheduler
            from stacking two workers' compute on one core (see the package README). Intra-op
            threads are not changed: set them to the share's size (torchrun sets
            ``OMP_NUM_THREADS=1`` for several processes per node).

    Returns:
        This process's :class:`WorldInfo`.

    Raises:
        RuntimeError: RPC is already running in this process, or ``MASTER_ADDR`` /
            ``MASTER_PORT`` are not set for a world of more than one process.
        ValueError: a bad environment variable or argument.
    """
    if is_initialized():
        raise RuntimeError("RPC is already initialized in this process")
    if not callable(worker_name_format):
        raise TypeError("worker_name_format must be callable")
    if worker_init_fn is not None and not callable(worker_init_fn):
        raise TypeError("worker_init_fn must be callable or None")
    if rpc_backend_options is not None and rpc_timeout is not None:
        raise ValueError(
            "pass either rpc_backend_options or rpc_timeout, not both "
            "(set the timeout in rpc_backend_options instead)"
        )
    global _unbind
    info = _info_from_env()
    unbind = _bind_to_cpus(info) if _bind_cpus_requested(bind_cpus) else None
    try:
        started = _start(
            info, worker_init_fn, worker_name_format, backend, rpc_backend_options, rpc_timeout
        )
    except BaseException:
        if unbind is not None:
            unbind()  # an error leaves the process as it found it
        raise
    _unbind = unbind
    return started


def _start(
    info: WorldInfo,
    worker_init_fn: Callable[[], None] | None,
    worker_name_format: Callable[..., str],
    backend: rpc.BackendType | None,
    rpc_backend_options: rpc.RpcBackendOptions | None,
    rpc_timeout: float | None,
) -> WorldInfo:
    global _world, _worker_name_format, _pending_done
    init_method = None
    if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        if info.world_size > 1:
            raise RuntimeError(
                "MASTER_ADDR and MASTER_PORT must be set for a world of "
                f"{info.world_size} processes; launch with torchrun, which sets them"
            )
        init_method = f"tcp://127.0.0.1:{_free_port()}"
    if rpc_backend_options is None:
        seconds = (
            _default_rpc_timeout()
            if rpc_timeout is None
            else _check_timeout(rpc_timeout, "rpc_timeout")
        )
        rpc_backend_options = rpc.TensorPipeRpcBackendOptions(
            rpc_timeout=seconds, _transports=_default_transports()
        )
        if init_method is not None:
            rpc_backend_options.init_method = init_method
    elif init_method is not None:
        rpc_backend_options.init_method = init_method

    previous_format = _worker_name_format
    _worker_name_format = worker_name_format
    name = info.worker_name
    if not isinstance(name, str) or not name:
        _worker_name_format = previous_format
        raise ValueError(f"worker_name_format must return a non-empty str, got {name!r}")
    # Rank 0 answers _await_leader_done as soon as its agent runs, before _world is set.
    _pending_done = torch.futures.Future()
    try:
        rpc.init_rpc(
            name=name,
            backend=backend,
            rank=info.world_rank,
            world_size=info.world_size,
            rpc_backend_options=rpc_backend_options,
        )
    except BaseException:
        _worker_name_format = previous_format
        _pending_done = None
        raise
    agent = rpc.api._get_current_rpc_agent()
    names = {w.id: w.name for w in agent.get_worker_infos()}
    _world = _World(info=info, names=names, done=_pending_done)
    if worker_init_fn is not None:
        barrier()
        worker_init_fn()
    barrier()
    return info


def _mark_lost(rank: int) -> None:
    world = _world
    if world is not None:
        with world.lock:
            world.lost.add(rank)


def shutdown(timeout: float | None = None) -> None:
    """Stop RPC in this process; every rank of the world must call it.

    Ranks other than 0 first wait until rank 0 gets here (or dies). Then, if every worker is
    alive, the world shuts down gracefully; if a worker was lost (a call to it failed with
    :class:`WorkerLostError`), the survivors synchronize among themselves and shut down
    locally. Failures while shutting down are reported as a :class:`RuntimeWarning`, never
    raised, so they do not hide the error that ended the program.

    Args:
        timeout: seconds each shutdown step may wait for other workers; None uses the RPC
            timeout.
    """
    global _world, _pending_done, _unbind
    if not is_initialized():
        return
    seconds = rpc.get_rpc_timeout() if timeout is None else _check_timeout(timeout, "timeout")
    world = _world
    rank = world.info.world_rank if world is not None else rpc.get_worker_info().id
    lost: set[int] = set(world.lost) if world is not None else set()
    try:
        if world is not None and rank == _LEADER:
            world.done.set_result(sorted(lost))
        elif world is not None:
            try:
                lost |= set(rpc.rpc_sync(_LEADER, _await_leader_done, timeout=0))
            except RuntimeError as exc:
                warnings.warn(
                    f"difopt.distributed: rank 0 is gone ({exc}); shutting down locally",
                    RuntimeWarning,
                    stacklevel=2,
                )
                rpc.shutdown(graceful=False)
                return
        if not lost:
            try:
                rpc.shutdown(graceful=True, timeout=seconds)
            except RuntimeError as exc:
                warnings.warn(
                    f"difopt.distributed: graceful RPC shutdown failed: {exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return
        alive = {n for r, n in _worker_names().items() if r not in lost}
        try:
            rpc.api._all_gather(None, alive, timeout=seconds)
        except RuntimeError as exc:
            warnings.warn(
                f"difopt.distributed: survivors could not meet before shutdown: {exc}",
                RuntimeWarning,
                stacklevel=2,
            )
        rpc.shutdown(graceful=False)
    finally:
        _world = None
        _pending_done = None
        if _unbind is not None:
            _unbind()  # the CPUs the process had before init_world(bind_cpus=True)
            _unbind = None


def auto_init_rpc(
    worker_init_fn: Callable[[], None] | None = None,
    worker_name_format: Callable[..., str] = default_worker_name_format,
    *,
    backend: rpc.BackendType | None = None,
    rpc_backend_options: rpc.RpcBackendOptions | None = None,
    rpc_timeout: float | None = None,
    bind_cpus: bool | None = None,
) -> Callable[[F], F]:
    """Return a decorator that runs a function inside an RPC world.

    Every process ``torchrun`` starts calls the decorated function: RPC is started from the
    ``torchrun`` environment (:func:`init_world`), the function runs, and RPC is shut down
    (:func:`shutdown`), also when the function raises. Errors are recorded for ``torchrun``'s
    error summary (``torch.distributed.elastic``'s ``record``).

    Args:
        worker_init_fn: called on every worker once all have joined.
        worker_name_format: ``f(world_rank=, world_size=, local_rank=, local_world_size=)``
            returning each worker's RPC name.
        backend: the RPC backend (default: TensorPipe).
        rpc_backend_options: options of the backend; mutually exclusive with ``rpc_timeout``.
        rpc_timeout: seconds after which an RPC fails, e.g. because its worker died;
            default ``DIFOPT_RPC_TIMEOUT`` or 30.
        bind_cpus: bind each process to its share of the node's CPUs (see
            :func:`init_world`); default ``DIFOPT_BIND_CPUS`` (off).

    Returns:
        The decorator.

    Examples:
        >>> import difopt.distributed as todist
        >>> @todist.auto_init_rpc()
        ... def main():
        ...     return todist.get_world_size()
        >>> main()  # a world of one process when not launched by torchrun
        1
    """
    if not callable(worker_name_format):
        raise TypeError("worker_name_format must be callable")
    if worker_init_fn is not None and not callable(worker_init_fn):
        raise TypeError("worker_init_fn must be callable or None")
    if bind_cpus is not None and not isinstance(bind_cpus, bool):
        raise TypeError(f"bind_cpus must be a bool or None, got {bind_cpus!r}")

    def decorator(func: F) -> F:
        @record
        @functools.wraps(func)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            init_world(
                worker_init_fn,
                worker_name_format,
                backend=backend,
                rpc_backend_options=rpc_backend_options,
                rpc_timeout=rpc_timeout,
                bind_cpus=bind_cpus,
            )
            try:
                return func(*args, **kwargs)
            finally:
                shutdown()

        return wrapped  # type: ignore[return-value]

    return decorator


def _check_ranks(ranks: tuple[Any, ...], what: str) -> frozenset[int]:
    for r in ranks:
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            raise ValueError(f"{what}() takes ranks as non-negative ints, got {r!r}")
    return frozenset(ranks)


def _gate(ranks: frozenset[int], inverse: bool) -> Callable[[F], F]:
    def decorator(func: F) -> F:
        @functools.wraps(func)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if (get_world_rank() in ranks) != inverse:
                return func(*args, **kwargs)
            return None

        return wrapped  # type: ignore[return-value]

    return decorator


def on_rank(*ranks: int) -> Callable[[F], F]:
    """Return a decorator: the function runs only on the given ranks (elsewhere returns None)."""
    return _gate(_check_ranks(ranks, "on_rank"), inverse=False)


def not_on_rank(*ranks: int) -> Callable[[F], F]:
    """Return a decorator: the function runs except on the given ranks (there returns None)."""
    return _gate(_check_ranks(ranks, "not_on_rank"), inverse=True)


def rank_zero_only(func: F) -> F:
    """Decorate ``func`` to run only on rank 0 (returning None elsewhere)."""
    return on_rank(0)(func)


def rank_non_zero_only(func: F) -> F:
    """Decorate ``func`` to run on every rank but 0 (returning None there)."""
    return not_on_rank(0)(func)
