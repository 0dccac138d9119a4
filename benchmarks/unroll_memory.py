"""Long unrolls in bounded memory (difopt-unroll): peak memory and time of checkpointed
meta-gradients against the plain unroll, TorchOpt 0.7.3 and higher 0.2.1.

One meta-gradient = a fresh differentiable Adam on an MLP 64 -> 512 -> 512 -> 512 -> 10 (ReLU,
0.56M parameters, float32, CPU), K inner steps on K support batches of 64 (cross-entropy), the
loss on a query batch, and its gradient with respect to the initial parameters.

Contenders at K = ``--steps`` (100):

* ``plain``: the plain loop ``difopt.MetaAdam(net, ...).step(loss)`` K times (the baseline);
* ``sqrt``: ``difopt_unroll.unroll_module(MetaAdam(...), ..., policy="sqrt")``;
* ``torchopt``: ``torchopt.MetaAdam`` (0.7.3), the same plain loop, if installed;
* ``higher``: ``higher.innerloop_ctx`` with ``torch.optim.Adam`` (0.2.1), if installed. Its
  Adam adds eps before the bias correction (see ``maml_meta.py``), so its meta-gradient
  differs slightly: it is timed and measured, not checked.

and at K = ``--long-steps`` (1000): ``binomial``, ``unroll_module(..., budget=--budget)``
(Revolve, ``--budget`` stored steps), whose peak must stay within a stated memory budget:
``BINOMIAL_BUDGET`` (0.25) times the plain unroll's measured peak at K = ``--steps``. The plain
unroll's memory is linear in K, so at K = 1000 it needs about ten times its K = 100 peak
(printed as an extrapolation, labelled so; measuring it needs more memory than a shared
machine should be asked for). The binomial policy also runs once at K = ``--steps`` to check
its meta-gradient against the plain unroll's.

Memory: every run is a fresh subprocess (one contender, one K); after building the model,
the data and a warm-up meta-gradient at K = 2, it resets the process's peak resident set size
(``/proc/self/clear_refs``), computes one meta-gradient, and reports the peak RSS minus the
RSS before it: the same method for every contender. Time: the wall time of a second
meta-gradient in the same process (allocator and kernels warm); repetitions are interleaved
across contenders (one subprocess each) and ratios are medians of per-repetition ratios.
Threads: 1 by default (``--threads``): on a shared 2-core machine two OpenMP threads per
process oversubscribe the cores and the timings become meaningless.

Check (a target: a mismatch FAILs): the ``sqrt`` and ``binomial`` meta-gradients at
K = ``--steps`` equal the plain unroll's, relative L2 error <= ``CHECK_RTOL`` = 1e-6. Why that
means "equal" in float32: a checkpointed unroll recomputes each step with the same kernels on
the same values in the same order (one thread, a fixed seed), so its values are bitwise the
plain unroll's (the error measured is 0); only the order in which autograd accumulates a few
sums may differ, a few units in the last place (float32 epsilon 1.2e-7; 1e-6 is about 8 of
them), whereas a wrong or lost cotangent changes the meta-gradient at order 1.

Targets: sqrt / plain peak memory <= 0.25; sqrt / plain time <= 1.5; the two meta-gradient
checks <= 1e-6; binomial peak at K = ``--long-steps`` / plain peak at K = ``--steps`` <= 0.25
(the binomial run's memory budget).

    python benchmarks/unroll_memory.py            # full size (minutes)
    python benchmarks/unroll_memory.py --quick    # smoke run
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench  # noqa: E402

NAME = "unroll_memory"
MEMORY_TARGET = 0.25
TIME_TARGET = 1.5
CHECK_RTOL = 1e-6
BINOMIAL_BUDGET = 0.25
LR, EPS, EPS_ROOT = 1e-3, 1e-4, 1e-12


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def worker(name: str, steps: int, budget: int, hidden: int, batch: int, out: str) -> None:
    """Run one contender once in this (fresh) process and write its measurement to ``out``."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    import difopt
    import difopt_unroll

    torch.manual_seed(0)
    dims = [64, hidden, hidden, hidden, 10]
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    net = nn.Sequential(*layers[:-1])
    xs, ys = torch.randn(steps, batch, 64), torch.randint(0, 10, (steps, batch))
    xq, yq = torch.randn(batch, 64), torch.randint(0, 10, (batch,))
    params0 = list(net.parameters())

    initial = [(m, n, q) for m in net.modules() for n, q in m._parameters.items() if q is not None]

    def restore() -> None:  # back to the initial (leaf) parameters after a meta-gradient
        for m, n, q in initial:
            m._parameters[n] = q

    def meta_gradient(k: int) -> list[torch.Tensor]:
        if name in ("plain", "torchopt"):
            lib: Any = difopt if name == "plain" else __import__("torchopt")
            opt = lib.MetaAdam(net, lr=LR, eps=EPS, eps_root=EPS_ROOT)
            for i in range(k):
                opt.step(F.cross_entropy(net(xs[i]), ys[i]))
            loss = F.cross_entropy(net(xq), yq)
        elif name == "higher":
            import higher

            inner = torch.optim.Adam(net.parameters(), lr=LR, eps=EPS)
            with higher.innerloop_ctx(net, inner, copy_initial_weights=False) as (fnet, diffopt):
                for i in range(k):
                    diffopt.step(F.cross_entropy(fnet(xs[i]), ys[i]))
                loss = F.cross_entropy(fnet(xq), yq)
        else:
            opt = difopt.MetaAdam(net, lr=LR, eps=EPS, eps_root=EPS_ROOT)
            kwargs: dict[str, Any] = (
                {"policy": "sqrt"} if name == "sqrt" else {"policy": "binomial", "budget": budget}
            )
            difopt_unroll.unroll_module(
                opt,
                lambda b: F.cross_entropy(net(b[0]), b[1]),
                k,
                batches=lambda i: (xs[i], ys[i]),
                **kwargs,
            )
            loss = F.cross_entropy(net(xq), yq)
        grads = list(torch.autograd.grad(loss, params0))
        del loss
        restore()
        return grads

    meta_gradient(2)  # warm-up: kernels, allocator, lazy imports
    import gc

    gc.collect()
    base = _rss_mib()
    exact_peak = _reset_peak()
    first = time.perf_counter()
    grads = meta_gradient(steps)  # memory: the first full-size run in this process
    first = time.perf_counter() - first
    peak = _peak_mib() if exact_peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    del grads
    gc.collect()
    t0 = time.perf_counter()
    grads = meta_gradient(steps)  # time: the second one (warm allocator and kernels)
    seconds = time.perf_counter() - t0
    torch.save(grads, out + ".pt")
    Path(out).write_text(
        json.dumps(
            {
                "seconds": seconds,
                "first_run_seconds": first,
                "peak_mib": peak - base,
                "rss_before_mib": base,
                "peak_reset": exact_peak,
            }
        )
    )


def spawn(name: str, steps: int, args: Any, tmp: str, tag: str) -> dict[str, Any]:
    out = os.path.join(tmp, f"{name}-{steps}-{tag}.json")
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        name,
        "--steps",
        str(steps),
        "--budget",
        str(args.budget),
        "--hidden",
        str(args.hidden),
        "--batch",
        str(args.batch),
        "--threads",
        str(args.threads),
        "--worker-out",
        out,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"failed ({tail[:160]})"}
    result = json.loads(Path(out).read_text())
    result["grads"] = out + ".pt"
    return result


def rel_error(a_path: str, b_path: str) -> float:
    import torch

    a, b = torch.load(a_path), torch.load(b_path)
    num = sum(float((x - y).pow(2).sum()) for x, y in zip(a, b))
    den = sum(float(y.pow(2).sum()) for y in b)
    return (num / den) ** 0.5


def main() -> None:
    p = _bench.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100, help="K of the main comparison")
    p.add_argument("--long-steps", type=int, default=1000, help="K of the binomial run")
    p.add_argument("--budget", type=int, default=10, help="stored steps of the binomial run")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--worker", default=None, help=argparse_hidden())
    p.add_argument("--worker-out", default=None, help=argparse_hidden())
    p.set_defaults(threads=1)
    args = p.parse_args()
    if args.worker:
        _bench.set_threads(args.threads)
        worker(args.worker, args.steps, args.budget, args.hidden, args.batch, args.worker_out)
        return
    if args.quick:
        args.steps, args.long_steps, args.hidden = 16, 64, 64
    repeats = args.repeats or (1 if args.quick else 3)
    _bench.quick_note(args.quick)
    torch_peers = {}
    for peer in ("torchopt", "higher"):
        _, why = _bench.try_import(peer)
        torch_peers[peer] = why
    names = ["plain", "sqrt"] + [n for n, why in torch_peers.items() if why is None]
    print(
        f"MLP 64 -> {args.hidden} x3 -> 10, MetaAdam (lr {LR}, eps {EPS}, eps_root {EPS_ROOT}), "
        f"batch {args.batch}, K={args.steps} (binomial: K={args.long_steps}, budget "
        f"{args.budget}), CPU float32, threads={args.threads}, {repeats} interleaved "
        "repetitions, one fresh process per run; memory = peak RSS during the meta-gradient "
        "minus RSS before it\n"
    )
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in [*names, "binomial"]}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                runs[name].append(spawn(name, args.steps, args, tmp, str(r)))
        runs["binomial"].append(spawn("binomial", args.long_steps, args, tmp, "long"))
        binomial_check = spawn("binomial", args.steps, args, tmp, "check")
        errors = {n: v[0]["error"] for n, v in runs.items() if v and "error" in v[0]}
        ok = {n: v for n, v in runs.items() if v and "error" not in v[0]}
        check = None
        if "plain" in ok and "sqrt" in ok:
            check = rel_error(ok["sqrt"][0]["grads"], ok["plain"][0]["grads"])
        check_binomial = None
        if "plain" in ok and "error" not in binomial_check:
            check_binomial = rel_error(binomial_check["grads"], ok["plain"][0]["grads"])
        peer_diffs = {
            n: rel_error(ok[n][0]["grads"], ok["plain"][0]["grads"])
            for n in ("torchopt", "higher")
            if n in ok and "plain" in ok
        }

    def med(name: str, key: str) -> float:
        return statistics.median(x[key] for x in ok[name])

    rows = []
    for name in [*names, "binomial", *(n for n in torch_peers if n not in names)]:
        if name in ok:
            steps = args.long_steps if name == "binomial" else args.steps
            rows.append(
                [
                    name,
                    str(steps),
                    f"{med(name, 'peak_mib'):.0f} MiB",
                    _bench.fmt_time(med(name, "seconds")),
                ]
            )
        elif name in errors or torch_peers.get(name):
            rows.append([name, errors.get(name) or str(torch_peers.get(name))])
    print(_bench.table(rows, ["contender", "K", "peak memory", "time (median)"]))

    def paired(key: str, num: str, den: str) -> dict[str, float] | None:
        if num not in ok or den not in ok:
            return None
        values = [a[key] / b[key] for a, b in zip(ok[num], ok[den])]
        return {"value": statistics.median(values)}

    mem = paired("peak_mib", "sqrt", "plain")
    tim = paired("seconds", "sqrt", "plain")
    print()
    for label, value in (("sqrt", check), ("binomial", check_binomial)):
        if value is not None:
            verdict = "OK" if value <= CHECK_RTOL else "MISMATCH"
            print(
                f"check: {label} meta-gradient vs plain at K={args.steps}: relative L2 error "
                f"{value:.2e} ({verdict}, equal means <= {CHECK_RTOL:g})"
            )
    for n, d in peer_diffs.items():
        print(f"info: {n} meta-gradient vs difopt plain: relative L2 error {d:.2e}")
    for n in ("torchopt", "higher"):
        if n in ok and "plain" in ok:
            pm, pt = paired("peak_mib", n, "plain"), paired("seconds", n, "plain")
            assert pm is not None and pt is not None
            print(f"{n} / plain: memory {pm['value']:.2f}x, time {pt['value']:.2f}x")
    budget_ratio = None
    if "binomial" in ok and "plain" in ok:
        scale = args.long_steps / args.steps
        budget_mib = BINOMIAL_BUDGET * med("plain", "peak_mib")
        budget_ratio = {"value": med("binomial", "peak_mib") / med("plain", "peak_mib")}
        print(
            f"binomial K={args.long_steps}, {args.budget} stored steps: "
            f"{med('binomial', 'peak_mib'):.0f} MiB measured; memory budget "
            f"{budget_mib:.0f} MiB ({BINOMIAL_BUDGET:g} x the plain unroll's K={args.steps} peak)"
        )
        for n in ("plain", "torchopt", "higher"):
            if n in ok:
                print(
                    f"  extrapolated, not measured: {n} at K={args.long_steps} ~ "
                    f"{med(n, 'peak_mib') * scale:.0f} MiB (its K={args.steps} peak x {scale:g}; "
                    "an unrolled graph's memory is linear in K)"
                )

    def check_target(label: str, value: float | None, why: str) -> dict:
        r = None if value is None else {"value": value}
        return _bench.target(
            f"{label} meta-gradient vs plain (relative L2 error)", r, CHECK_RTOL, why
        )

    why_binomial = binomial_check.get("error", "") or errors.get("plain", "")
    targets = [
        _bench.target("sqrt / plain peak memory", mem, MEMORY_TARGET, errors.get("sqrt", "")),
        _bench.target("sqrt / plain time", tim, TIME_TARGET, errors.get("sqrt", "")),
        check_target("sqrt", check, errors.get("sqrt", "") or errors.get("plain", "")),
        check_target("binomial", check_binomial, why_binomial),
        _bench.target(
            f"binomial K={args.long_steps} peak / plain K={args.steps} peak (memory budget)",
            budget_ratio,
            BINOMIAL_BUDGET,
            errors.get("binomial", "") or errors.get("plain", ""),
        ),
    ]
    print()
    _bench.print_targets(targets)
    _bench.write_json(
        NAME,
        {
            "environment": _bench.environment(args.threads),
            "config": vars(args),
            "runs": {
                n: [{k: v for k, v in x.items() if k != "grads"} for x in xs]
                for n, xs in runs.items()
            },
            "check_rel_error": check,
            "check_binomial_rel_error": check_binomial,
            "binomial_check_run": {k: v for k, v in binomial_check.items() if k != "grads"},
            "peer_rel_error": peer_diffs,
            "targets": targets,
            "quick": args.quick,
        },
        args.out,
    )


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
