"""Classic (torch.optim-style) Adam step on CPU: difopt.Adam vs torch.optim.Adam and TorchOpt.

Times ``optimizer.step()`` alone: gradients are pre-set random tensors (no backward is run),
the same values for every contender, each contender on its own copy of the parameters.
Default size: 16 tensors of 512x1024 float32 (8M parameters).

Target: difopt.Adam / torch.optim.Adam(foreach=True) <= 1.00.

    python benchmarks/adam_classic.py            # full size
    python benchmarks/adam_classic.py --quick    # smoke run
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench  # noqa: E402

NAME = "adam_classic"
BASELINE = "torch-foreach"
TARGET = 1.00


def main() -> None:
    p = _bench.parser(__doc__.splitlines()[0])
    p.add_argument("--tensors", type=int, default=16, help="number of parameter tensors")
    p.add_argument("--rows", type=int, default=512, help="rows of each tensor")
    p.add_argument("--cols", type=int, default=1024, help="columns of each tensor")
    p.add_argument("--steps", type=int, default=None, help="steps timed per repetition")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.quick:
        args.rows, args.cols = min(args.rows, 32), min(args.cols, 64)
    repeats = args.repeats or (3 if args.quick else 15)
    steps = args.steps or (2 if args.quick else 5)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)

    import torch

    _bench.set_threads(args.threads)
    import difopt

    _bench.quick_note(args.quick)
    n_params = args.tensors * args.rows * args.cols
    print(
        f"Adam step, {args.tensors} x {args.rows}x{args.cols} float32 "
        f"({n_params / 1e6:.2f}M parameters), CPU, threads={torch.get_num_threads()}, "
        f"{repeats} interleaved repetitions x {steps} steps, warm-up {warmup} steps\n"
    )

    gen = torch.Generator().manual_seed(args.seed)
    shape = (args.rows, args.cols)
    init = [torch.randn(shape, generator=gen) for _ in range(args.tensors)]
    grads = [torch.randn(shape, generator=gen) for _ in range(args.tensors)]

    def fresh() -> list[torch.Tensor]:
        ps = [torch.nn.Parameter(x.clone()) for x in init]
        for p_, g in zip(ps, grads):
            p_.grad = g.clone()
        return ps

    labels = {
        "difopt": "difopt.Adam",
        "difopt-accel": "difopt.Adam(use_accelerated_op=True)",
        "torch-foreach": "torch.optim.Adam(foreach=True)",
        "torch-fused": "torch.optim.Adam(fused=True)",
        "torchopt": "torchopt.Adam (TorchOpt 0.7.3)",
    }
    order = list(labels)
    status: dict[str, str] = {}
    params: dict[str, list[torch.Tensor]] = {}
    steps_fn = {}

    def add(name: str, make) -> None:
        try:
            ps = fresh()
            opt = make(ps)
        except Exception as exc:
            status[name] = _bench.failure(exc)
            return
        params[name] = ps
        steps_fn[name] = opt.step

    lr = args.lr
    add("difopt", lambda ps: difopt.Adam(ps, lr=lr))
    accel, why = _bench.try_import("difopt_accel")
    if accel is None:
        status["difopt-accel"] = why
    else:
        add("difopt-accel", lambda ps: difopt.Adam(ps, lr=lr, use_accelerated_op=True))
    add("torch-foreach", lambda ps: torch.optim.Adam(ps, lr=lr, foreach=True))
    add("torch-fused", lambda ps: torch.optim.Adam(ps, lr=lr, fused=True))
    torchopt, why = _bench.try_import("torchopt")
    if torchopt is None:
        status["torchopt"] = why
    else:
        add("torchopt", lambda ps: torchopt.Adam(ps, lr=lr))

    errors: dict[str, str] = {}
    times = _bench.interleaved(
        steps_fn, repeats=repeats, number=steps, warmup=warmup, errors=errors
    )
    status.update(errors)

    # Same work check: every contender took the same number of steps from the same start.
    ref = params[BASELINE] if BASELINE in times else None
    checks = []
    if ref is not None:
        for name in times:
            if name == BASELINE:
                continue
            diff = max((a - b).abs().max().item() for a, b in zip(params[name], ref))
            checks.append(
                {
                    "name": f"{name} params == {BASELINE} params",
                    "ok": diff <= 1e-5,
                    "detail": f"max abs diff {diff:.2e} after {warmup + repeats * steps} steps",
                }
            )

    entries = _bench.contender_rows(order, times, status, BASELINE, labels)
    _bench.print_contenders(entries, BASELINE, "per step")
    print("\nSame result check (parameters after all steps, tolerance 1e-5):")
    for c in checks:
        print(f"  {c['name']}: {'yes' if c['ok'] else 'NO'} ({c['detail']})")

    r = _bench.ratio(times, "difopt", BASELINE)
    missing = status.get("difopt") or status.get(BASELINE) or ""
    targets = [_bench.target(f"difopt/{BASELINE}", r, TARGET, missing)]
    # difopt-accel's target: its fused step against torch's own fused kernel.
    missing = status.get("difopt-accel") or status.get("torch-fused") or ""
    r = _bench.ratio(times, "difopt-accel", "torch-fused")
    targets.append(_bench.target("difopt-accel/torch-fused", r, TARGET, missing))
    _bench.print_targets(targets)

    _bench.write_json(
        NAME,
        {
            "quick": args.quick,
            "config": {
                "tensors": args.tensors,
                "rows": args.rows,
                "cols": args.cols,
                "parameters": n_params,
                "repeats": repeats,
                "steps": steps,
                "warmup": warmup,
                "lr": args.lr,
                "seed": args.seed,
            },
            "env": _bench.environment(torch.get_num_threads()),
            "unit": "seconds per step",
            "contenders": entries,
            "checks": checks,
            "targets": targets,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
