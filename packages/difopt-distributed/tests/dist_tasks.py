"""Functions the tests run on workers (importable there: tests/ is on their PYTHONPATH)."""

from __future__ import annotations

import ctypes
import os
import time

import torch

import difopt
import difopt_distributed as dd


def rank_and_rows(x: torch.Tensor, tag: str = "") -> tuple[int, int, str]:
    """Which worker ran the call, how many rows it got, and a broadcast argument."""
    return dd.get_world_rank(), int(x.shape[0]), tag


def weighted_rows(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Sum over the rows of ``scale * x``: one result shape whatever the slice size."""
    return (scale * x).sum(dim=0)


def first_element(x: torch.Tensor) -> torch.Tensor:
    """For select-partitions: ``x`` arrives without the split dimension."""
    return x.reshape(-1)[0]


def pair(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """A pytree result, for the reducers."""
    return {"sum": x.sum(dim=0), "max": x.max(dim=0).values}


def world_info() -> tuple[int, int, int, int, str]:
    """The world as a worker sees it."""
    info = dd.get_world_info()
    return (
        info.world_rank,
        info.world_size,
        info.local_rank,
        info.local_world_size,
        info.worker_name,
    )


def thread_cpus() -> list[list[int]]:
    """The CPUs each thread of this worker may run on (sorted lists, one per thread)."""
    out = []
    for tid in os.listdir("/proc/self/task"):
        try:
            out.append(sorted(os.sched_getaffinity(int(tid))))
        except ProcessLookupError:
            pass  # ended meanwhile
    return out


def mkl_threads_on_entry() -> tuple[int, int]:
    """MKL's thread count for the calling (RPC) thread before the function does anything, and
    torch.get_num_threads() (the process's setting)."""
    lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
    mkl = int(lib.mkl_get_max_threads())
    return mkl, torch.get_num_threads()


def fail(message: str) -> None:
    """Raise on the worker."""
    raise ValueError(message)


class Unpicklable(Exception):
    """An exception whose class cannot be re-created by the caller from its args."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}/{b}")
        self.lock = __import__("threading").Lock()


def fail_unpicklable() -> None:
    """Raise an exception that does not pickle."""
    raise Unpicklable(1, 2)


def sleep_then(seconds: float, value: int) -> int:
    """Stall, then answer."""
    time.sleep(seconds)
    return value


def exit_process(delay: float, code: int = 7) -> None:
    """Die in the middle of a call, without any cleanup."""
    time.sleep(delay)
    os._exit(code)


@dd.parallelize(partitioner=dd.batch_partitioner, reducer=dd.sum_reducer)
def parallel_row_sums(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``weighted_rows`` spread by the decorator."""
    return (scale * x).sum(dim=0)


@dd.parallelize_async(partitioner=dd.batch_partitioner, reducer=dd.sum_reducer)
def parallel_row_sums_async(x: torch.Tensor, scale: float) -> torch.Tensor:
    """The async twin of ``parallel_row_sums``."""
    return (scale * x).sum(dim=0)


@dd.parallelize()
def parallel_default(x: torch.Tensor) -> torch.Tensor:
    """Default partitioner and reducer (batch, mean)."""
    return x.sum(dim=0)


# ----------------------------------------------------------------------------- MAML

HIDDEN = 16


def init_meta_params(seed: int = 0, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    """An MLP 1 -> HIDDEN -> HIDDEN -> 1, as leaf tensors that require grad."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(HIDDEN, 1), (HIDDEN,), (HIDDEN, HIDDEN), (HIDDEN,), (1, HIDDEN), (1,)]
    return [
        (torch.randn(s, generator=g, dtype=dtype) / max(s[-1], 1) ** 0.5).requires_grad_()
        for s in shapes
    ]


def make_tasks(n: int, k: int = 10, seed: int = 1, dtype: torch.dtype = torch.float64):
    """``n`` sine-regression tasks: support and query sets stacked along dimension 0."""
    g = torch.Generator().manual_seed(seed)
    amp = torch.rand(n, 1, 1, generator=g, dtype=dtype) * 4.9 + 0.1
    phase = torch.rand(n, 1, 1, generator=g, dtype=dtype) * torch.pi
    xs = torch.rand(n, 2 * k, 1, generator=g, dtype=dtype) * 10 - 5
    ys = amp * torch.sin(xs - phase)
    return xs[:, :k], ys[:, :k], xs[:, k:], ys[:, k:]


def forward(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    w1, b1, w2, b2, w3, b3 = params
    h = torch.relu(x @ w1.T + b1)
    h = torch.relu(h @ w2.T + b2)
    return h @ w3.T + b3


def adapted_query_loss(params, x_s, y_s, x_q, y_q, inner_lr: float, steps: int) -> torch.Tensor:
    """One task: ``steps`` differentiable SGD steps (difopt.sgd) on the support set."""
    opt = difopt.sgd(inner_lr)
    state = opt.init(params)
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(forward(params, x_s), y_s)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        updates, state = opt.update(list(grads), state, inplace=False)
        params = difopt.apply_updates(params, updates, inplace=False)
    return torch.nn.functional.mse_loss(forward(params, x_q), y_q)


def task_loss_sum(params, x_s, y_s, x_q, y_q, inner_lr: float = 0.01, steps: int = 3):
    """Sum of the adapted query losses of the tasks in this slice of the batch."""
    return sum(
        adapted_query_loss(params, x_s[i], y_s[i], x_q[i], y_q[i], inner_lr, steps)
        for i in range(x_s.shape[0])
    )


def maml_partitioner(params, x_s, y_s, x_q, y_q, **kwargs):
    """Split the tasks over the workers; send the meta-parameters whole to each."""
    parts = dd.batch_partitioner(x_s, y_s, x_q, y_q, **kwargs)
    return [(rank, (params, *args), kw) for rank, args, kw in parts]


# ----------------------------------------------------------------------------- eager backward


def echo(tree):
    """Send the arguments back as they arrived (packing both ways)."""
    return tree


def describe(tree) -> list[tuple[str, tuple[int, ...], bool, bool, float]]:
    """What arrived: dtype, shape, requires_grad, contiguity and sum of each tensor leaf."""
    import optree

    return [
        (str(t.dtype), tuple(t.shape), t.requires_grad, t.is_contiguous(), float(t.detach().sum()))
        for t in optree.tree_leaves(tree)
        if isinstance(t, torch.Tensor)
    ]


def quadratic_loss(w: torch.Tensor, x: torch.Tensor, b: torch.Tensor, scale: float = 1.0):
    """A smooth scalar of all three tensors: ``scale * sum(tanh(x @ w + b) ** 2)``."""
    return scale * torch.tanh(x @ w + b).pow(2).sum()


def loss_of_first(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Uses ``a`` only; ``b`` gets no gradient."""
    return (a * a).sum()


def not_a_loss(x: torch.Tensor) -> torch.Tensor:
    """Returns a vector: not allowed with backward='eager'."""
    return x * 2


def detached_loss(x: torch.Tensor) -> torch.Tensor:
    """A scalar that does not depend on ``x`` differentiably."""
    return x.detach().sum()


@dd.parallelize(partitioner=dd.batch_partitioner, reducer=dd.sum_reducer, backward="eager")
def parallel_eager_loss(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``sum_i |x_i @ w_i|^2`` over the rows (``w`` given per row), eager backward."""
    return (x.unsqueeze(1) @ w).pow(2).sum()


CALLS_HERE: list[int] = []  # threads that ran `recorded_loss` in this process


def recorded_loss(w: torch.Tensor, scratch: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``scale * sum(w ** 2)``, noting the thread it ran on; doubles ``scratch`` in place
    (the caller's tensor must not see that)."""
    import threading

    CALLS_HERE.append(threading.get_ident())
    scratch.mul_(2.0)
    return scale * w.pow(2).sum()


def fail_on(rank: int, w: torch.Tensor) -> torch.Tensor:
    """Raise on worker ``rank``, return a loss elsewhere."""
    if dd.get_world_rank() == rank:
        raise KeyError(f"no task on rank {rank}")
    return w.sum()


# ----------------------------------------------------- TorchOpt's distributed MAML example


def rref_task_partitioner(net_rref, x_s, y_s, x_q, y_q):
    """One call per task, round-robin over the workers (TorchOpt's ``args_replicator``)."""
    workers = dd.get_world_size() - 1
    return [
        (1 + i % workers, (net_rref, x_s[i], y_s[i], x_q[i], y_q[i]), None)
        for i in range(x_s.shape[0])
    ]


def rref_inner_loop(net_rref, x_s, y_s, x_q, y_q):
    """TorchOpt's example: fetch the module from its RRef, adapt it with MetaSGD, and return
    the query loss."""
    net = difopt.module_clone(net_rref.to_here(), by="reference", detach_buffers=True)
    inner_opt = difopt.MetaSGD(net, lr=0.1)
    inner_opt.step(torch.nn.functional.mse_loss(net(x_s), y_s))
    return torch.nn.functional.mse_loss(net(x_q), y_q)
