"""Distributed MAML meta-iteration: 2 RPC workers vs 1, in one run (difopt-distributed).

One call = one meta-iteration's forward and backward: ``--tasks`` (8) sine-regression
tasks, each adapted by ``--inner-steps`` (5) differentiable SGD steps (``difopt.sgd``,
``inplace=False``) of an MLP 1 -> ``--hidden`` (128) -> 128 -> 1 on ``--k-shot`` (50) support
points, the query losses summed, and distributed autograd back to the meta-parameters on
rank 0. CPU, float32, every process with one intra-op thread and, unless ``--no-bind-cpus``,
bound to its own core (``auto_init_rpc(bind_cpus=True)``: one process per core).

The script starts its own world of two processes on 127.0.0.1 (torchrun's environment
variables, a free port), rank 0 measures. Contenders, interleaved:

* ``2 workers, eager``: ``remote_sync_call(..., backward="eager")`` with a partitioner that
  splits the tasks over ranks 0 and 1 (4 each) and sends the meta-parameters whole; each
  worker returns its loss with its meta-gradient, one round trip per call;
* ``1 worker, eager`` (baseline): the same call with every task sent to rank 0;
* ``2 workers, distributed`` / ``1 worker, distributed``: the same calls with TorchOpt's
  ``backward="distributed"`` (the workers keep their graphs; distributed autograd sends the
  gradients back through them in a second round trip);
* ``local``, for reference: the same function called in rank 0 without RPC.

Check: both 2-worker meta-gradients equal the local one (relative L2 error <= 1e-4).

Scaling model (Amdahl): with ``r`` = time(2 workers) / time(1 worker), the serial fraction
is ``s = 2r - 1`` (RPC, reduction, backward on rank 0, imbalance) and W workers (W <=
tasks, one task each at W = 8) give a speed-up of ``1 / (s + (1 - s) / W)``; the script
prints it for 8 workers.

**Target: 2 workers / 1 worker <= 0.625 (speed-up >= 1.6x)**, reported for both modes.

    python benchmarks/distributed_maml.py            # full size
    python benchmarks/distributed_maml.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench  # noqa: E402

NAME = "distributed_maml"
BASELINE = "one"
MODES = {"": "eager", "d_": "distributed"}  # contender-name prefix -> backward=
TARGET = 0.625
WORLD_SIZE = 2
LAUNCH_TIMEOUT_S = 900


def forward(params: list[Any], x: Any) -> Any:
    import torch

    w1, b1, w2, b2, w3, b3 = params
    h = torch.relu(x @ w1.T + b1)
    h = torch.relu(h @ w2.T + b2)
    return h @ w3.T + b3


def task_loss_sum(params, x_s, y_s, x_q, y_q, inner_lr: float, inner_steps: int):
    """Runs on a worker: adapt to each task of the slice, sum the query losses."""
    import torch

    import difopt

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


def _partitioner(workers: list[int]) -> Callable[..., list]:
    import difopt_distributed as dd

    split = dd.dim_partitioner(0, workers=workers)

    def partition(params, *tensors, **kwargs):
        return [(rank, (params, *a), kw) for rank, a, kw in split(*tensors, **kwargs)]

    return partition


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch() -> int:
    """Start the two ranks of the world (this script again, with torchrun's variables)."""
    port = _free_port()
    procs = []
    try:
        for rank in range(WORLD_SIZE):
            env = dict(os.environ)
            env.update(
                RANK=str(rank),
                WORLD_SIZE=str(WORLD_SIZE),
                LOCAL_RANK=str(rank),
                LOCAL_WORLD_SIZE=str(WORLD_SIZE),
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(port),
                OMP_NUM_THREADS="1",
                PYTHONWARNINGS="ignore",
            )
            procs.append(subprocess.Popen([sys.executable, __file__, *sys.argv[1:]], env=env))
        codes = []
        for p in procs:
            try:
                codes.append(p.wait(timeout=LAUNCH_TIMEOUT_S))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(p.wait())
        return max(codes, key=abs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def measure(args: Any) -> None:
    import torch

    import difopt_distributed as dd

    _bench.quick_note(args.quick)
    g = torch.Generator().manual_seed(0)
    h = args.hidden
    shapes = [(h, 1), (h,), (h, h), (h,), (1, h), (1,)]
    params = [(torch.randn(s, generator=g) / s[-1] ** 0.5).requires_grad_() for s in shapes]
    k, n = args.k_shot, args.tasks
    amp = torch.rand(n, 1, 1, generator=g) * 4.9 + 0.1
    phase = torch.rand(n, 1, 1, generator=g) * torch.pi
    x = torch.rand(n, 2 * k, 1, generator=g) * 10 - 5
    y = amp * torch.sin(x - phase)
    batch = (x[:, :k], y[:, :k], x[:, k:], y[:, k:])
    kwargs = {"inner_lr": 0.01, "inner_steps": args.inner_steps}

    def distributed(workers: list[int], backward: str) -> Callable[[], list]:
        part = _partitioner(workers)

        def run() -> list:
            with dd.autograd.context() as ctx:
                total = dd.remote_sync_call(
                    task_loss_sum,
                    args=(params, *batch),
                    kwargs=kwargs,
                    partitioner=part,
                    reducer=dd.sum_reducer,
                    backward=backward,
                )
                return list(dd.autograd.grad(ctx, total / n, params))

        return run

    def local() -> list:
        total = task_loss_sum(params, *batch, **kwargs)
        return list(torch.autograd.grad(total / n, params))

    contenders: dict[str, Callable[[], list]] = {}
    labels: dict[str, str] = {}
    for prefix, mode in MODES.items():
        contenders[prefix + "two"] = distributed([0, 1], mode)
        contenders[prefix + "one"] = distributed([0], mode)
        labels[prefix + "two"] = f"2 workers, {mode}"
        labels[prefix + "one"] = f"1 worker, {mode}"
    contenders["local"] = local
    labels["local"] = "local (no RPC)"

    want = local()
    den = sum(float(b.pow(2).sum()) for b in want) ** 0.5
    rel = 0.0
    for prefix in MODES:
        got = contenders[prefix + "two"]()
        num = sum(float((a - b).pow(2).sum()) for a, b in zip(got, want)) ** 0.5
        rel = max(rel, num / den)
    check_ok = rel <= 1e-4
    print(f"CPUs of this process: {sorted(os.sched_getaffinity(0))} (bind_cpus={args.bind_cpus})")
    print(
        f"check: 2-worker meta-gradients (both modes) vs local, largest relative L2 error "
        f"{rel:.2e} (<= 1e-4): {'OK' if check_ok else 'FAILED'}\n"
    )

    repeats = args.repeats or (3 if args.quick else 15)
    warmup = args.warmup or 1
    times = _bench.interleaved(contenders, repeats, number=args.number, warmup=warmup)
    entries = _bench.contender_rows(list(labels), times, {}, BASELINE, labels)
    _bench.print_contenders(entries, BASELINE, "per meta-iteration")

    targets = []
    r: dict[str, float] | None = None
    for prefix, mode in MODES.items():
        ratio = _bench.ratio(times, prefix + "two", prefix + BASELINE)
        targets.append(_bench.target(f"2 workers / 1 worker, {mode}", ratio, TARGET))
        if prefix == "":
            r = ratio
    _bench.print_targets(targets)
    model: dict[str, Any] = {}
    if r is not None:
        s = min(max(2 * r["value"] - 1, 0.0), 1.0)
        predicted = {w: 1 / (s + (1 - s) / w) for w in (2, 4, 8)}
        model = {"serial_fraction": s, "predicted_speedup": predicted}
        print(
            f"\nspeed-up 2 workers vs 1, eager: {1 / r['value']:.2f}x; serial fraction "
            f"s = 2r - 1 = {s:.3f}; Amdahl predicts {predicted[4]:.2f}x on 4 workers and "
            f"{predicted[8]:.2f}x on 8 (one task each)"
        )
    _bench.write_json(
        NAME,
        {
            "quick": args.quick,
            "config": {
                "tasks": n,
                "inner_steps": args.inner_steps,
                "hidden": h,
                "k_shot": k,
                "world_size": WORLD_SIZE,
                "threads_per_process": args.threads,
                "bind_cpus": args.bind_cpus,
                "repeats": repeats,
                "number": args.number,
            },
            "environment": _bench.environment(args.threads),
            "check": {"relative_l2_error": rel, "ok": check_ok},
            "contenders": entries,
            "targets": targets,
            "scaling_model": model,
        },
        args.out,
    )


def main() -> int:
    p = _bench.parser(__doc__.splitlines()[0])
    p.set_defaults(threads=1)
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--inner-steps", type=int, default=5)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--k-shot", type=int, default=50)
    p.add_argument("--number", type=int, default=2, help="meta-iterations per repetition")
    p.add_argument(
        "--bind-cpus",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="bind each process to its own share of the CPUs (default: on)",
    )
    args = p.parse_args()
    if args.quick:
        args.hidden, args.k_shot, args.inner_steps = 64, 20, 3
    if "RANK" not in os.environ:
        return launch()

    _bench.set_threads(args.threads)
    import difopt_distributed as dd

    @dd.auto_init_rpc(bind_cpus=args.bind_cpus)
    def run() -> None:
        if dd.get_rank() == 0:
            measure(args)

    run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
