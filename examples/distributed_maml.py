"""MAML on synthetic sine tasks, the tasks of each meta-batch spread over RPC workers.

Launch one process per worker with torchrun (no download; CPU)::

    torchrun --standalone --nproc-per-node 2 examples/distributed_maml.py

With one process per core, ``DIFOPT_BIND_CPUS=1`` in front of that command binds each process
to its own core (see difopt-distributed's README: faster on the 2-core machine).

Every process runs ``main``; rank 0 drives the meta-training and sends each worker its
slice of the meta-batch (``difopt.distributed.remote_sync_call`` with a partitioner that
splits the tasks and sends the meta-parameters whole). Each worker adapts its tasks with a
differentiable inner loop (``difopt.sgd``, ``inplace=False``) and returns the sum of their
query losses. The meta-gradient reaches rank 0 in one of two ways (``--backward``):

* ``eager`` (default): each worker differentiates its loss at once and sends the
  meta-gradient back with it; the result is an ordinary tensor of rank 0's graph, and
  ``loss.backward()`` fills ``.grad``. One round trip per worker and meta-iteration.
* ``distributed`` (TorchOpt's way): the workers keep their graphs, and
  ``difopt.distributed.autograd.backward`` inside a distributed autograd context sends the
  gradient through them. Needed for anything but a first derivative of a scalar loss.

``difopt.Adam`` then updates the meta-parameters. Finally the same meta-iteration is timed
on all workers and on rank 0 alone, interleaved, and the speed-up is printed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import torch

import difopt
import difopt.distributed as todist


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--meta-iters", type=int, default=30, help="meta-training iterations")
    p.add_argument("--tasks", type=int, default=8, help="tasks per meta-batch")
    p.add_argument("--inner-steps", type=int, default=5, help="differentiable inner SGD steps")
    p.add_argument("--inner-lr", type=float, default=0.01, help="inner-loop learning rate")
    p.add_argument("--outer-lr", type=float, default=1e-3, help="difopt.Adam learning rate")
    p.add_argument("--hidden", type=int, default=128, help="width of the MLP's hidden layers")
    p.add_argument("--k-shot", type=int, default=50, help="support (and query) points per task")
    p.add_argument("--timing-iters", type=int, default=5, help="timed iterations per setting")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads per process")
    p.add_argument("--seed", type=int, default=0, help="seed of the tasks and the initialization")
    p.add_argument(
        "--backward",
        choices=["eager", "distributed"],
        default="eager",
        help="how the meta-gradient comes back from the workers (see the module docstring)",
    )
    args = p.parse_args()
    for name in ("meta_iters", "tasks", "inner_steps", "hidden", "k_shot", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.timing_iters < 0:
        p.error("--timing-iters must be >= 0")
    return args


# ----------------------------------------------------------------------------- the tasks
# Module-level functions: the workers (this same script, run by torchrun) find them by name.


def init_meta_params(hidden: int, seed: int) -> list[torch.Tensor]:
    """An MLP 1 -> hidden -> hidden -> 1 as a list of leaf tensors."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(hidden, 1), (hidden,), (hidden, hidden), (hidden,), (1, hidden), (1,)]
    return [(torch.randn(s, generator=g) / s[-1] ** 0.5).requires_grad_() for s in shapes]


def sample_tasks(n: int, k: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    """``n`` tasks ``y = A sin(x - phi)``: support and query sets stacked along dim 0."""
    amp = torch.rand(n, 1, 1, generator=g) * 4.9 + 0.1
    phase = torch.rand(n, 1, 1, generator=g) * torch.pi
    x = torch.rand(n, 2 * k, 1, generator=g) * 10 - 5
    y = amp * torch.sin(x - phase)
    return x[:, :k], y[:, :k], x[:, k:], y[:, k:]


def forward(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    w1, b1, w2, b2, w3, b3 = params
    h = torch.relu(x @ w1.T + b1)
    h = torch.relu(h @ w2.T + b2)
    return h @ w3.T + b3


def task_loss_sum(
    params: list[torch.Tensor],
    x_s: torch.Tensor,
    y_s: torch.Tensor,
    x_q: torch.Tensor,
    y_q: torch.Tensor,
    inner_lr: float,
    inner_steps: int,
) -> torch.Tensor:
    """On a worker: adapt to each task of this slice, return the sum of the query losses."""
    inner = difopt.sgd(inner_lr)
    total = torch.zeros(())
    for i in range(x_s.shape[0]):
        fast = params
        state = inner.init(fast)
        for _ in range(inner_steps):
            loss = torch.nn.functional.mse_loss(forward(fast, x_s[i]), y_s[i])
            grads = torch.autograd.grad(loss, fast, create_graph=True)
            updates, state = inner.update(list(grads), state, inplace=False)
            fast = difopt.apply_updates(fast, updates, inplace=False)
        total = total + torch.nn.functional.mse_loss(forward(fast, x_q[i]), y_q[i])
    return total


def tasks_partitioner(workers: list[int]) -> Callable[..., list[tuple[int, tuple, dict]]]:
    """Split the task tensors over ``workers``; send the meta-parameters whole to each."""
    split = todist.dim_partitioner(0, workers=workers)

    def partition(params: list[torch.Tensor], *task_tensors: torch.Tensor, **kwargs: Any):
        return [(rank, (params, *a), kw) for rank, a, kw in split(*task_tensors, **kwargs)]

    return partition


# ----------------------------------------------------------------------------- rank 0


def meta_step(
    params: list[torch.Tensor],
    batch: tuple[torch.Tensor, ...],
    partitioner: Callable[..., Any],
    args: argparse.Namespace,
) -> float:
    """One meta-iteration's forward and backward; leaves the meta-gradient in ``.grad``."""

    def query_loss() -> torch.Tensor:
        total = todist.remote_sync_call(
            task_loss_sum,
            args=(params, *batch),
            kwargs={"inner_lr": args.inner_lr, "inner_steps": args.inner_steps},
            partitioner=partitioner,
            reducer=todist.sum_reducer,
            backward=args.backward,
        )
        return total / args.tasks

    if args.backward == "eager":  # the gradients came back with the losses: a local graph
        loss = query_loss()
        loss.backward()
    else:
        with todist.autograd.context() as ctx:
            loss = query_loss()
            todist.autograd.backward(ctx, loss)
    return loss.item()


@todist.rank_zero_only
def train(args: argparse.Namespace) -> None:
    world = todist.get_world_size()
    everyone = tasks_partitioner(list(range(world)))
    alone = tasks_partitioner([0])
    params = init_meta_params(args.hidden, args.seed)
    outer = difopt.Adam(params, lr=args.outer_lr)
    g = torch.Generator().manual_seed(args.seed + 1)
    print(
        f"MAML on sines: {args.tasks} tasks per meta-batch over {world} worker(s), "
        f"{args.inner_steps} inner SGD steps, MLP 1-{args.hidden}-{args.hidden}-1, "
        f"{args.threads} thread(s) per worker, backward={args.backward!r}",
        flush=True,
    )
    losses: list[float] = []
    for it in range(1, args.meta_iters + 1):
        batch = sample_tasks(args.tasks, args.k_shot, g)
        outer.zero_grad()
        t0 = time.perf_counter()
        loss = meta_step(params, batch, everyone, args)
        outer.step()
        dt = time.perf_counter() - t0
        losses.append(loss)
        print(f"iter {it:4d}  query loss {loss:7.3f}  {dt * 1e3:7.1f} ms/iter", flush=True)

    if args.timing_iters == 0:
        return
    # Timing: the same meta-iteration on every worker and on rank 0 alone, interleaved so
    # that drift of a shared machine hits both alike.
    batch = sample_tasks(args.tasks, args.k_shot, g)
    times: dict[str, list[float]] = {"all": [], "one": []}
    for r in range(args.timing_iters + 1):
        order = [("all", everyone), ("one", alone)]
        for name, part in order if r % 2 == 0 else order[::-1]:
            outer.zero_grad()
            t0 = time.perf_counter()
            meta_step(params, batch, part, args)
            if r > 0:  # the first round warms up
                times[name].append(time.perf_counter() - t0)
    outer.zero_grad()
    t_all = statistics.median(times["all"])
    t_one = statistics.median(times["one"])
    print(
        f"\nper meta-iteration (median of {args.timing_iters}): {world} worker(s) "
        f"{t_all * 1e3:.1f} ms, 1 worker {t_one * 1e3:.1f} ms -> speed-up {t_one / t_all:.2f}x",
        flush=True,
    )
    q = max(len(losses) // 4, 1)
    first, last = statistics.mean(losses[:q]), statistics.mean(losses[-q:])
    trend = "fell" if last < first else "did not fall"
    print(
        f"mean query loss of the first/last {q} iteration(s): {first:.3f} -> {last:.3f} ({trend})"
    )


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    todist.auto_init_rpc()(train)(args)


if __name__ == "__main__":
    main()
