"""Remote calls: partition the arguments over workers, call, reduce the results."""

from __future__ import annotations

import functools
import importlib
import os
import pickle
import threading
import time
import traceback
from typing import Any, Callable, Iterable, Sequence, Tuple, TypeVar, Union

import optree
import torch
import torch.distributed.rpc as rpc

from difopt.pytree import NAMESPACE
from difopt_distributed import _executor, _pack, _world
from difopt_distributed._errors import WorkerError, WorkerLostError

__all__ = [
    "TensorDimensionPartitioner",
    "batch_partitioner",
    "dim_partitioner",
    "exclusive_batch_partitioner",
    "mean_reducer",
    "parallelize",
    "parallelize_async",
    "parallelize_sync",
    "remote_async_call",
    "remote_sync_call",
    "sum_reducer",
]

T = TypeVar("T")
U = TypeVar("U")
Args = Tuple[Any, ...]
KwArgs = dict
Partition = Tuple[int, Union[Args, None], Union[KwArgs, None]]
PartitionFunction = Callable[..., Sequence[Partition]]
Partitioner = Union[int, str, PartitionFunction]

UNSET_RPC_TIMEOUT: float = rpc.api.UNSET_RPC_TIMEOUT
BACKWARD_MODES = ("distributed", "eager")

# ----------------------------------------------------------------------------- partitioners


class TensorDimensionPartitioner:
    """Split every tensor of a call's arguments along one dimension, one slice per call.

    Tensors (anywhere in the ``args`` / ``kwargs`` pytree) are sliced along ``dim``; other
    values are sent whole to every call. All tensors must have the same size along ``dim``.
    Calling the partitioner returns ``[(rank, args, kwargs), ...]``, one entry per RPC.

    Args:
        dim: the dimension to split (negative counts from the end).
        exclusive: True: one call per index along ``dim`` (calls are dealt to the workers in
            turn). False: ``min(size, num_workers)`` calls of contiguous slices, the last one
            taking the remainder.
        keepdim: True keeps ``dim`` in every slice; False selects (drops ``dim``), which is
            only possible with ``exclusive=True``.
        workers: ranks or names of the workers to use; None for every worker of the world.

    Raises:
        ValueError: ``keepdim=False`` without ``exclusive=True``, or an empty ``workers``.
        TypeError: ``dim`` is not an int.
    """

    def __init__(
        self,
        dim: int,
        *,
        exclusive: bool = False,
        keepdim: bool = True,
        workers: Sequence[int | str] | None = None,
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"dim must be an int, got {type(dim).__name__}")
        if not keepdim and not exclusive:
            raise ValueError("keepdim=False needs exclusive=True (one call per index)")
        if workers is not None:
            workers = list(workers)
            if not workers:
                raise ValueError("workers must name at least one worker, or be None for all")
        self.dim = dim
        self.exclusive = exclusive
        self.keepdim = keepdim
        self.workers = workers

    def __repr__(self) -> str:
        return (
            f"TensorDimensionPartitioner(dim={self.dim}, exclusive={self.exclusive}, "
            f"keepdim={self.keepdim}, workers={self.workers!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            functools.partial(
                TensorDimensionPartitioner,
                exclusive=self.exclusive,
                keepdim=self.keepdim,
                workers=self.workers,
            ),
            (self.dim,),
        )

    def _ranks(self) -> list[int]:
        if self.workers is None:
            return list(range(_world.get_world_size()))
        return [_world.get_worker_id(w) for w in self.workers]

    def __call__(self, *args: Any, **kwargs: Any) -> list[Partition]:
        """Partition ``args`` and ``kwargs``; see the class docstring."""
        ranks = self._ranks()
        leaves: list[Any]
        leaves, spec = optree.tree_flatten((args, kwargs), namespace=NAMESPACE)  # type: ignore[arg-type]
        size: int | None = None
        for leaf in leaves:
            if isinstance(leaf, torch.Tensor):
                if not -leaf.dim() <= self.dim < leaf.dim():
                    raise ValueError(
                        f"dim={self.dim} is out of range for an argument of shape "
                        f"{tuple(leaf.shape)}"
                    )
                n = leaf.shape[self.dim]
                if size is None:
                    size = n
                elif n != size:
                    raise ValueError(
                        f"every tensor argument must have the same size along dim={self.dim}: "
                        f"got {size} and {n} (shape {tuple(leaf.shape)})"
                    )
        if size is None:  # nothing to split: one call, on this worker
            return [(_world.get_world_rank(), args, dict(kwargs))]
        if size == 0:
            raise ValueError(f"cannot partition tensors of size 0 along dim={self.dim}")

        index: list[int | slice]
        if self.exclusive:
            index = [i if not self.keepdim else slice(i, i + 1) for i in range(size)]
        else:
            parts = min(size, len(ranks))
            step = size // parts
            bounds = [i * step for i in range(parts)] + [size]
            index = [slice(bounds[i], bounds[i + 1]) for i in range(parts)]

        def take(leaf: Any, where: int | slice) -> Any:
            if not isinstance(leaf, torch.Tensor):
                return leaf
            if isinstance(where, int):
                return leaf.select(self.dim, where)
            return leaf.narrow(self.dim, where.start, where.stop - where.start)

        out: list[Partition] = []
        for i, where in enumerate(index):
            call_args, call_kwargs = optree.tree_unflatten(spec, [take(x, where) for x in leaves])
            out.append((ranks[i % len(ranks)], tuple(call_args), dict(call_kwargs)))
        return out


def dim_partitioner(
    dim: int = 0,
    *,
    exclusive: bool = False,
    keepdim: bool = True,
    workers: Sequence[int | str] | None = None,
) -> PartitionFunction:
    """Return a :class:`TensorDimensionPartitioner` splitting along ``dim``.

    Args:
        dim: the dimension to split.
        exclusive: one call per index (True) or one call per worker (False).
        keepdim: keep the split dimension in each slice (False needs ``exclusive=True``).
        workers: ranks or names of the workers to use; None for all.

    Returns:
        The partitioner.
    """
    return TensorDimensionPartitioner(dim, exclusive=exclusive, keepdim=keepdim, workers=workers)


batch_partitioner: PartitionFunction = dim_partitioner(dim=0, keepdim=True, exclusive=False)
"""Split along dimension 0 into ``min(batch_size, world_size)`` contiguous slices."""

exclusive_batch_partitioner: PartitionFunction = dim_partitioner(
    dim=0, keepdim=True, exclusive=True
)
"""Split along dimension 0 into one call per sample, dealt to the workers in turn."""


# ----------------------------------------------------------------------------- reducers


def _reduce(results: Iterable[Any], name: str, op: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(results, torch.Tensor):
        raise TypeError(f"{name}() takes a sequence of results, got a single tensor")
    results = list(results)
    if not results:
        raise ValueError(f"{name}() needs at least one result, got an empty sequence")
    leaves0, spec = optree.tree_flatten(results[0], namespace=NAMESPACE)
    columns = [leaves0]
    for i, r in enumerate(results[1:], start=1):
        leaves, other = optree.tree_flatten(r, namespace=NAMESPACE)
        if other != spec:
            raise ValueError(
                f"{name}() needs results of one structure: result 0 is {spec}, "
                f"result {i} is {other}"
            )
        columns.append(leaves)
    reduced = []
    for j, column in enumerate(zip(*columns)):
        if not all(isinstance(x, torch.Tensor) for x in column):
            bad = next(type(x).__name__ for x in column if not isinstance(x, torch.Tensor))
            raise TypeError(f"{name}() reduces tensors, got a {bad} at leaf {j}")
        reduced.append(op(torch.stack(column, dim=0)))
    return optree.tree_unflatten(spec, reduced)


def mean_reducer(results: Iterable[Any]) -> Any:
    """Average the results of the calls, leaf by leaf when they are pytrees of tensors.

    Args:
        results: one result per call; tensors (or pytrees of tensors) of one shape.

    Returns:
        The element-wise mean.

    Raises:
        ValueError: ``results`` is empty or the results differ in structure.
        TypeError: a result (leaf) is not a tensor.
    """
    return _reduce(results, "mean_reducer", lambda x: x.mean(dim=0))


def sum_reducer(results: Iterable[Any]) -> Any:
    """Sum the results of the calls, leaf by leaf when they are pytrees of tensors.

    Args:
        results: one result per call; tensors (or pytrees of tensors) of one shape.

    Returns:
        The element-wise sum.

    Raises:
        ValueError: ``results`` is empty or the results differ in structure.
        TypeError: a result (leaf) is not a tensor.
    """
    return _reduce(results, "sum_reducer", lambda x: x.sum(dim=0))


# ----------------------------------------------------------------------------- remote side


class _FunctionRef:
    """Pickles as (module, qualname): finds the undecorated function behind ``parallelize``.

    The module attribute of a decorated function is the decorator's wrapper, so pickling the
    function by reference would run the wrapper (another remote call) on the worker.
    """

    def __init__(self, module: str, qualname: str) -> None:
        self.module = module
        self.qualname = qualname

    def resolve(self) -> Callable[..., Any]:
        obj: Any = importlib.import_module(self.module)
        for part in self.qualname.split("."):
            obj = getattr(obj, part)
        return getattr(obj, "_difopt_remote_target", obj)


class _Failure:
    """What a worker sends back instead of a result when the function raised."""

    def __init__(self, exc: BaseException) -> None:
        self.exception_type = f"{type(exc).__module__}.{type(exc).__qualname__}"
        self.message = str(exc)
        self.remote_traceback = "".join(traceback.format_exception(exc))
        try:
            self.pickled: bytes | None = pickle.dumps(exc)
        except Exception:  # noqa: BLE001  (an exception that does not pickle still reports)
            self.pickled = None

    def original(self) -> BaseException | None:
        if self.pickled is None:
            return None
        try:
            exc = pickle.loads(self.pickled)
        except Exception:  # noqa: BLE001  (its class may not be importable here)
            return None
        return exc if isinstance(exc, BaseException) else None


def _adopt_intra_op_threads() -> None:
    """Give this RPC thread the process's intra-op thread count (torch.set_num_threads).

    torch applies the count to a thread lazily, the first time that thread reads it; element
    loops on small tensors never do, and MKL's count is per thread. On an RPC agent thread a
    remote function's matrix products would therefore run on as many MKL threads as the
    process had CPUs when it started (unless OMP_NUM_THREADS says otherwise), whatever
    torch.set_num_threads() asked, oversubscribing the cores of a machine shared by several
    worker processes (bind_cpus: one core each). Reading the count applies it.
    """
    torch.get_num_threads()


def _open_call(target: Any, call: Any) -> tuple[Callable[..., Any], Args, KwArgs]:
    """The function and the ``(args, kwargs)`` of a request, as the worker runs them."""
    func = target.resolve() if isinstance(target, _FunctionRef) else target
    args, kwargs = _pack.unpack(call)
    return func, args, kwargs


def _run_remote(target: Any, call: Any) -> Any:
    """Run on the worker: unpack ``(args, kwargs)``, call the function, pack the result.

    An exception (the function's, or one unpacking the call) goes back as a
    :class:`_Failure`.
    """
    _adopt_intra_op_threads()
    try:
        func, args, kwargs = _open_call(target, call)
        result = func(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001  (sent back to the caller, see _unwrap)
        return _Failure(exc)
    return _pack.pack(result)


def _check_backward(backward: Any) -> None:
    if backward not in BACKWARD_MODES:
        raise ValueError(
            f"backward must be one of {', '.join(map(repr, BACKWARD_MODES))}, got {backward!r}"
        )


def _check_loss(out: Any) -> torch.Tensor:
    if (
        not isinstance(out, torch.Tensor)
        or out.numel() != 1
        or not (out.is_floating_point() and not out.is_complex())
    ):
        got = (
            f"a {out.dtype} tensor of shape {tuple(out.shape)}"
            if isinstance(out, torch.Tensor)
            else f"a {type(out).__name__}"
        )
        raise ValueError(
            "with backward='eager' the function must return one real floating-point scalar "
            f"tensor (a loss, one element), which the worker differentiates; it returned {got}"
        )
    return out


def _run_remote_eager(target: Any, call: Any, wanted: list[int]) -> Any:
    """Run on the worker for ``backward='eager'``: the result and its gradient at once.

    ``wanted`` indexes the tensor leaves of ``(args, kwargs)`` to differentiate against (the
    ones that required grad in the caller; they arrive as plain tensors). Returns ``(value,
    grads)`` with ``grads`` None when the result does not depend on them differentiably.
    """
    _adopt_intra_op_threads()
    try:
        func, args, kwargs = _open_call(target, call)
        leaves: list[Any] = optree.tree_leaves((args, kwargs), namespace=NAMESPACE)  # type: ignore[arg-type]
        inputs = [leaves[i].requires_grad_() for i in wanted]
        with torch.enable_grad():
            out = _check_loss(func(*args, **kwargs))
            grads = (
                list(torch.autograd.grad(out, inputs, allow_unused=True))
                if inputs and out.requires_grad
                else None
            )
    except Exception as exc:  # noqa: BLE001  (sent back to the caller, see _unwrap)
        return _Failure(exc)
    return _pack.pack((out.detach(), grads))


# Eager calls run on a pool of this process's own, LIFO: sequential calls stay on one thread
# whose memory stays in use (see _executor). They need no distributed autograd context,
# which is what ties the calls of backward="distributed" to the RPC agent's threads.
_eager_pool = _executor.LifoPool("difopt-eager")


@rpc.functions.async_execution
def _run_remote_eager_async(target: Any, call: Any, wanted: list[int]) -> torch.futures.Future:
    """:func:`_run_remote_eager` on this worker's LIFO pool (the RPC thread returns at once)."""
    return _eager_pool.submit(functools.partial(_run_remote_eager, target, call, wanted))


# ----------------------------------------------------------------------------- caller side


class _EagerGrad(torch.autograd.Function):
    """A worker's scalar result on the caller's graph: backward scales its gradients.

    The gradients are constants on the caller's side, so the node is differentiable once:
    a backward with ``create_graph=True`` through it raises instead of giving a wrong higher
    derivative.
    """

    @staticmethod
    def forward(ctx: Any, value: torch.Tensor, grads: list[Any], *inputs: torch.Tensor) -> Any:
        ctx.grads = grads
        return value.clone()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Any:
        if torch.is_grad_enabled():  # create_graph=True
            raise RuntimeError(
                "a result of a backward='eager' remote call is differentiable once: its "
                "gradient was computed on the worker and is a constant here, so create_graph="
                "True through it would give wrong higher derivatives; use "
                "backward='distributed' for those"
            )
        g = g.reshape(())
        return (
            None,
            None,
            *(None if gr is None else gr * g.to(gr.dtype) for gr in ctx.grads),
        )


def _eager_request(args: Args, kwargs: KwArgs) -> tuple[Any, list[int], list[torch.Tensor]]:
    """What an eager call sends, before packing: its arguments without autograd, and which
    ones to differentiate against (none when grad mode is off)."""
    leaves: list[Any]
    leaves, spec = optree.tree_flatten((args, kwargs), namespace=NAMESPACE)  # type: ignore[arg-type]
    record = torch.is_grad_enabled()
    wanted: list[int] = []
    inputs: list[torch.Tensor] = []
    for i, leaf in enumerate(leaves):
        if isinstance(leaf, torch.Tensor) and leaf.requires_grad:
            if record:
                wanted.append(i)
                inputs.append(leaf)
            leaves[i] = leaf.detach()
    return optree.tree_unflatten(spec, leaves), wanted, inputs


def _yield_cpu() -> None:
    sched_yield = getattr(os, "sched_yield", None)
    if sched_yield is not None:
        sched_yield()


def _local_copy(call: Any) -> Any:
    """An eager request as this process would receive it by RPC: every tensor a copy, none
    shared with the caller (and nothing packed: it does not travel)."""
    return optree.tree_map(
        lambda x: x.clone() if isinstance(x, torch.Tensor) else x, call, namespace=NAMESPACE
    )


def _attach(inputs: list[torch.Tensor]) -> Callable[[Any], Any]:
    def finish(result: Any) -> Any:
        value, grads = result
        if grads is None or not inputs:
            return value
        with torch.enable_grad():
            return _EagerGrad.apply(value, grads, *inputs)

    return finish


_error_classes: dict[type, type] = {}


def _worker_error_class(original: type[BaseException]) -> type[WorkerError]:
    """A subclass of WorkerError and of the original class, so either ``except`` catches it."""
    if not issubclass(original, Exception) or issubclass(original, WorkerError):
        return WorkerError
    cls = _error_classes.get(original)
    if cls is None:
        try:
            cls = type(
                f"WorkerError[{original.__name__}]",
                (WorkerError, original),
                {"__module__": WorkerError.__module__, "__init__": WorkerError.__init__},
            )
        except TypeError:  # incompatible layouts (OSError family, ...)
            cls = WorkerError
        _error_classes[original] = cls
    return cls


def _raise_failure(failure: _Failure, rank: int) -> None:
    name = _world.worker_name(rank)
    original = failure.original()
    cls = _worker_error_class(type(original)) if original is not None else WorkerError
    error = cls(
        f"worker {rank} ({name}) raised {failure.exception_type}: {failure.message}\n\n"
        f"Remote traceback (on {name}):\n{failure.remote_traceback}",
        rank=rank,
        worker_name=name,
        exception_type=failure.exception_type,
        remote_traceback=failure.remote_traceback,
    )
    raise error from original


def _unwrap(fut: torch.futures.Future, rank: int, started: float, timeout: float) -> Any:
    try:
        value = fut.wait()
    except Exception as exc:
        elapsed = time.monotonic() - started
        text = str(exc)
        timed_out = "timeout" in text.lower() or "timed out" in text.lower()
        name = _world.worker_name(rank)
        _world._mark_lost(rank)
        if timed_out:
            limit = rpc.get_rpc_timeout() if timeout == UNSET_RPC_TIMEOUT else timeout
            why = f"did not answer within the timeout of {limit:g} s"
        else:
            why = f"failed after {elapsed:.1f} s: the worker process died or is unreachable"
        raise WorkerLostError(
            f"RPC to worker {rank} ({name}) {why} ({text.strip().splitlines()[0] if text else ''})",
            rank=rank,
            worker_name=name,
            timed_out=timed_out,
        ) from exc
    if isinstance(value, _Failure):
        _raise_failure(value, rank)
    return _pack.unpack(value)


def _partitions(partitioner: Any, args: Args, kwargs: KwArgs, size: int) -> list[Partition]:
    if isinstance(partitioner, (int, str)) and not isinstance(partitioner, bool):
        return [(_world.get_worker_id(partitioner), args, kwargs)]
    if not callable(partitioner):
        raise ValueError(
            "partitioner must be a worker rank (int), a worker name (str) or a callable "
            f"returning [(rank, args, kwargs), ...], got {partitioner!r}"
        )
    raw = partitioner(*args, **kwargs)
    try:
        parts = list(raw)
    except TypeError:
        raise ValueError(
            f"partitioner {partitioner!r} must return a sequence of (rank, args, kwargs), "
            f"got {type(raw).__name__}"
        ) from None
    if not parts:
        raise ValueError(f"partitioner {partitioner!r} returned no partitions")
    checked: list[Partition] = []
    for i, part in enumerate(parts):
        if not isinstance(part, (tuple, list)) or len(part) != 3:
            raise ValueError(
                f"partitioner {partitioner!r} returned {part!r} at position {i}; each entry "
                "must be a (rank, args, kwargs) triple"
            )
        rank, part_args, part_kwargs = part
        if isinstance(rank, str):
            rank = _world.get_worker_id(rank)
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < size:
            raise ValueError(
                f"partitioner {partitioner!r} sent partition {i} to worker {rank!r}, but the "
                f"world has {size} worker(s): ranks must be in [0, {size})"
            )
        if part_args is not None and not isinstance(part_args, (tuple, list)):
            raise ValueError(f"partition {i}: args must be a tuple or None, got {part_args!r}")
        if part_kwargs is not None and not isinstance(part_kwargs, dict):
            raise ValueError(f"partition {i}: kwargs must be a dict or None, got {part_kwargs!r}")
        checked.append((rank, tuple(part_args or ()), dict(part_kwargs or {})))
    return checked


def _remote_target(func: Callable[..., Any]) -> Any:
    ref = getattr(func, "_difopt_remote_ref", None)
    return ref if ref is not None else func


def remote_async_call(
    func: Callable[..., T],
    *,
    args: Args | None = None,
    kwargs: KwArgs | None = None,
    partitioner: Partitioner | None = None,
    reducer: Callable[[Iterable[T]], U] | None = None,
    timeout: float | None = UNSET_RPC_TIMEOUT,
    backward: str = "distributed",
) -> torch.futures.Future:
    """Call ``func`` on remote workers without blocking; return a future of the result.

    The partitioner turns ``(args, kwargs)`` into ``[(rank, args_i, kwargs_i), ...]``; one
    RPC is sent per entry and the future resolves to the list of results in that order, or to
    ``reducer(results)``.

    Gradients reach the tensor arguments that require grad in one of two ways (``backward``):

    * ``"distributed"`` (default, as in TorchOpt): each worker keeps the graph of its call,
      and inside ``difopt.distributed.autograd.context()`` the caller's backward sends the
      gradients through it (distributed autograd). Any result, any use of it, any order.
    * ``"eager"``: ``func`` must return a loss (one real floating-point element). The worker
      differentiates it against every tensor argument that requires grad as soon as it is
      computed, frees its graph, and sends back the value and the gradients; the caller's
      result is a node of its own local graph whose backward scales them. One round trip
      per call instead of a forward and a backward one, no distributed autograd context
      needed (one works too), and the worker's graph is not kept. First derivatives only:
      ``create_graph=True`` through the result raises. Under ``torch.no_grad()`` no gradient
      is computed.

    Args:
        func: a function importable on every worker (defined at module level).
        args: positional arguments.
        kwargs: keyword arguments.
        partitioner: a rank or worker name (the whole call goes there), or a callable
            returning ``[(rank, args, kwargs), ...]``; default :data:`batch_partitioner`.
        reducer: combines the list of results; None returns the list.
        timeout: seconds each RPC may take (0 waits forever); default the world's RPC timeout.
        backward: ``"distributed"`` or ``"eager"``, see above.

    Returns:
        A :class:`torch.futures.Future`. Its ``wait()`` raises :class:`WorkerError` (also an
        instance of the original exception class when possible) when ``func`` raised on a
        worker (with ``backward="eager"``, also when it returned anything but a loss), and
        :class:`WorkerLostError` when a worker died or timed out.

    Raises:
        RpcNotInitializedError: RPC is not running.
        ValueError: a bad partitioner, partitioner output, timeout or ``backward``.
    """
    return _start(
        func,
        args=args,
        kwargs=kwargs,
        partitioner=partitioner,
        reducer=reducer,
        timeout=timeout,
        backward=backward,
        inline_self=False,
        caller="remote_async_call()",
    )


def _start(
    func: Callable[..., Any],
    *,
    args: Args | None,
    kwargs: KwArgs | None,
    partitioner: Partitioner | None,
    reducer: Callable[..., Any] | None,
    timeout: float | None,
    backward: str,
    inline_self: bool,
    caller: str,
) -> torch.futures.Future:
    """Validate, partition and send the calls; ``inline_self`` runs the eager partitions
    addressed to this process in the calling thread once the others are sent."""
    _world._require_rpc(caller)
    if not callable(func):
        raise TypeError(f"func must be callable, got {type(func).__name__}")
    if reducer is not None and not callable(reducer):
        raise TypeError(f"reducer must be callable or None, got {type(reducer).__name__}")
    if timeout is None:
        timeout = UNSET_RPC_TIMEOUT
    elif timeout != UNSET_RPC_TIMEOUT and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0
    ):
        raise ValueError(
            f"timeout must be a number of seconds >= 0 (0: no limit) or None, got {timeout!r}"
        )
    _check_backward(backward)
    args = () if args is None else tuple(args)
    kwargs = {} if kwargs is None else dict(kwargs)
    parts = _partitions(
        batch_partitioner if partitioner is None else partitioner,
        args,
        kwargs,
        _world._current_world_size(),
    )
    target = _remote_target(func)
    if not isinstance(target, _FunctionRef):
        _check_importable(func, "remote_async_call(func=...)")
    started = time.monotonic()
    # Calls to other processes go out first: a call to this process starts running the
    # function on one of our RPC threads at once, and that thread then competes for the GIL
    # with the pickling of the remaining requests, delaying the other workers' start.
    me = _world.get_world_rank()
    order = sorted(range(len(parts)), key=lambda i: parts[i][0] == me)
    sent: dict[int, torch.futures.Future] = {}
    finish: dict[int, Callable[[Any], Any] | None] = {}
    here: list[tuple[int, Any, list[int]]] = []
    for i in order:
        rank, a, kw = parts[i]
        if backward == "eager":
            call, wanted, inputs = _eager_request(tuple(a or ()), dict(kw or {}))
            finish[i] = _attach(inputs)
            if inline_self and rank == me:
                here.append((i, call, wanted))
                continue
            request: tuple[Any, Args] = (
                _run_remote_eager_async,
                (target, _pack.pack(call), wanted),
            )
        else:
            request = (_run_remote, (target, _pack.pack((a, kw))))
            finish[i] = None
        sent[i] = rpc.rpc_async(rank, request[0], args=request[1], timeout=float(timeout))
    if here:
        if sent:
            # The requests are queued for TensorPipe's loop thread; let it write them before
            # this thread takes the core for its own share (with one core per process, the
            # other workers would otherwise start only when the scheduler preempts us).
            _yield_cpu()
        for i, call, wanted in here:
            done: torch.futures.Future = torch.futures.Future()
            done.set_result(_run_remote_eager(target, _local_copy(call), wanted))
            sent[i] = done
    futures = [(parts[i][0], sent[i], finish[i]) for i in range(len(parts))]
    return _gather(futures, reducer, started, float(timeout))


def _gather(
    futures: list[tuple[int, torch.futures.Future, Callable[[Any], Any] | None]],
    reducer: Callable[[list[Any]], Any] | None,
    started: float,
    timeout: float,
) -> torch.futures.Future:
    """One future for all calls: the (reduced) results, or the first error, raised as is.

    Errors are set with ``set_exception`` rather than raised inside ``Future.then`` callbacks,
    which torch would re-wrap in a plain RuntimeError.
    """
    out: torch.futures.Future = torch.futures.Future()
    results: list[Any] = [None] * len(futures)
    state = {"remaining": len(futures), "failed": False}
    lock = threading.Lock()

    def on_done(
        i: int, rank: int, finish: Callable[[Any], Any] | None, fut: torch.futures.Future
    ) -> None:
        try:
            value = _unwrap(fut, rank, started, timeout)
            if finish is not None:
                value = finish(value)
        except Exception as exc:  # noqa: BLE001  (handed to the caller through `out`)
            with lock:
                if state["failed"]:
                    return
                state["failed"] = True
            out.set_exception(exc)
            return
        with lock:
            if state["failed"]:
                return
            results[i] = value
            state["remaining"] -= 1
            if state["remaining"]:
                return
        try:
            final = results if reducer is None else reducer(results)
        except Exception as exc:  # noqa: BLE001  (a reducer error reaches the caller as is)
            out.set_exception(exc)
        else:
            out.set_result(final)

    for i, (rank, fut, finish) in enumerate(futures):
        fut.add_done_callback(functools.partial(on_done, i, rank, finish))
    return out


def remote_sync_call(
    func: Callable[..., T],
    *,
    args: Args | None = None,
    kwargs: KwArgs | None = None,
    partitioner: Partitioner | None = None,
    reducer: Callable[[Iterable[T]], U] | None = None,
    timeout: float | None = UNSET_RPC_TIMEOUT,
    backward: str = "distributed",
) -> Any:
    """Call ``func`` on remote workers and wait for the result.

    Same arguments as :func:`remote_async_call` (``backward="eager"``: the workers return
    their loss with its gradient, see there). With ``backward="eager"``, the partitions
    addressed to this process run in the calling thread, after the requests to the other
    workers are sent, instead of through an RPC to itself: the same result and gradients,
    without that RPC's cost. (:func:`remote_async_call` sends every partition by RPC, so that
    it returns at once.)

    Returns:
        The list of results, or ``reducer(results)``.

    Raises:
        WorkerError: ``func`` raised on a worker (the message has its rank and traceback).
        WorkerLostError: a worker died, its connection broke, or it timed out.
    """
    return _start(
        func,
        args=args,
        kwargs=kwargs,
        partitioner=partitioner,
        reducer=reducer,
        timeout=timeout,
        backward=backward,
        inline_self=backward == "eager",
        caller="remote_sync_call()",
    ).wait()


def _check_importable(func: Callable[..., Any], what: str) -> tuple[str, str]:
    qualname = getattr(func, "__qualname__", getattr(func, "__name__", "")) or ""
    module = getattr(func, "__module__", None) or ""
    if not module or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        raise ValueError(
            f"{what}: cannot send {qualname or func!r} to workers, which find a function by "
            "its module and name; define it at module level"
        )
    return module, qualname


def _decorate(
    runner: Callable[..., Any],
    partitioner: Partitioner | None,
    reducer: Callable[..., Any] | None,
    timeout: float | None,
    backward: str,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    _check_backward(backward)
    if partitioner is None:
        partitioner = batch_partitioner
        if reducer is None:
            reducer = mean_reducer

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(func):
            raise TypeError(f"can only parallelize a callable, got {type(func).__name__}")
        module, qualname = _check_importable(func, "parallelize")

        @functools.wraps(func)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            return runner(
                wrapped,
                args=args,
                kwargs=kwargs,
                partitioner=partitioner,
                reducer=reducer,
                timeout=timeout,
                backward=backward,
            )

        wrapped._difopt_remote_target = func  # type: ignore[attr-defined]
        wrapped._difopt_remote_ref = _FunctionRef(module, qualname)  # type: ignore[attr-defined]
        return wrapped

    return decorator


def parallelize_async(
    partitioner: Partitioner | None = None,
    reducer: Callable[[Iterable[T]], U] | None = None,
    timeout: float | None = UNSET_RPC_TIMEOUT,
    backward: str = "distributed",
) -> Callable[[Callable[..., T]], Callable[..., torch.futures.Future]]:
    """Return a decorator whose calls run on the workers and return a future.

    Args:
        partitioner: as for :func:`remote_async_call`; default :data:`batch_partitioner`,
            which also makes the default reducer :func:`mean_reducer`.
        reducer: combines the list of results; None returns the list.
        timeout: seconds each RPC may take; default the world's RPC timeout.
        backward: ``"distributed"`` or ``"eager"`` (the workers return their loss with its
            gradient), see :func:`remote_async_call`.

    Returns:
        The decorator. The function must be defined at module level.

    Raises:
        ValueError: an unknown ``backward``.
    """
    return _decorate(remote_async_call, partitioner, reducer, timeout, backward)


def parallelize(
    partitioner: Partitioner | None = None,
    reducer: Callable[[Iterable[T]], U] | None = None,
    timeout: float | None = UNSET_RPC_TIMEOUT,
    backward: str = "distributed",
) -> Callable[[Callable[..., T]], Callable[..., Any]]:
    """Return a decorator whose calls run on the workers and wait for the result.

    Args:
        partitioner: as for :func:`remote_async_call`; default :data:`batch_partitioner`,
            which also makes the default reducer :func:`mean_reducer`.
        reducer: combines the list of results; None returns the list.
        timeout: seconds each RPC may take; default the world's RPC timeout.
        backward: ``"distributed"`` or ``"eager"`` (the workers return their loss with its
            gradient), see :func:`remote_async_call`.

    Returns:
        The decorator. The function must be defined at module level.

    Raises:
        ValueError: an unknown ``backward``.
    """
    return _decorate(remote_sync_call, partitioner, reducer, timeout, backward)


parallelize_sync = parallelize
