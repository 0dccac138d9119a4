"""Classic Adam step on CPU with difopt-accel's fused kernel vs torch.optim's fused and foreach.

Times ``optimizer.step()`` alone: gradients are pre-set random tensors (no backward is run),
the same values for every contender, each contender on its own copy of the parameters.
Default size: 16 tensors of 512x1024 float32 (8M parameters), CPU, 2 threads.

Contenders:

* ``difopt.Optimizer(params, chain(difopt_accel.scale_by_adam(), scale(-lr)))``: the
  transformation's ``apply_scaled`` makes the step one fused kernel call for all tensors;
* ``difopt.Adam(params, use_accelerated_op=True)``: the same op reached through difopt-core's
  registry (``update`` only, then core adds the scaled update to the parameters);
* ``difopt.Adam(params)``: difopt's pure PyTorch path;
* ``torch.optim.Adam(fused=True)`` and ``torch.optim.Adam(foreach=True)``.

Target: fused chain / torch.optim.Adam(fused=True) <= 1.00.

    python benchmarks/accel_adam.py            # full size
    python benchmarks/accel_adam.py --quick    # smoke run
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench  # noqa: E402

NAME = "accel_adam"
BASELINE = "torch-fused"
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
        "accel-chain": "difopt.Optimizer(chain(difopt_accel.scale_by_adam(), scale(-lr)))",
        "accel-alias": "difopt.Adam(use_accelerated_op=True)",
        "difopt": "difopt.Adam (pure PyTorch)",
        "torch-fused": "torch.optim.Adam(fused=True)",
        "torch-foreach": "torch.optim.Adam(foreach=True)",
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
    accel, why = _bench.try_import("difopt_accel")
    if accel is None:
        status["accel-chain"] = status["accel-alias"] = why
    else:
        chain = difopt.chain(accel.scale_by_adam(), difopt.transform.scale(-lr))
        add("accel-chain", lambda ps: difopt.Optimizer(ps, chain))
        add("accel-alias", lambda ps: difopt.Adam(ps, lr=lr, use_accelerated_op=True))
    add("difopt", lambda ps: difopt.Adam(ps, lr=lr))
    add("torch-fused", lambda ps: torch.optim.Adam(ps, lr=lr, fused=True))
    add("torch-foreach", lambda ps: torch.optim.Adam(ps, lr=lr, foreach=True))

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

    missing = status.get("accel-chain") or status.get(BASELINE) or ""
    targets = [
        _bench.target(
            f"accel-chain/{BASELINE}", _bench.ratio(times, "accel-chain", BASELINE), TARGET, missing
        )
    ]
    print("\nFor information (no target):")
    for num in ("accel-chain", "accel-alias", "difopt"):
        for den in ("torch-fused", "torch-foreach"):
            r = _bench.ratio(times, num, den)
            if r is not None:
                print(f"  {num} / {den}: {r['value']:.3f}")
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
            "ratios": {
                f"{num}/{den}": _bench.ratio(times, num, den)
                for num in ("accel-chain", "accel-alias", "difopt")
                for den in ("torch-fused", "torch-foreach")
            },
            "targets": targets,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
