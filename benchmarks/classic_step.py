"""Classic (torch.optim-style) optimizer step on CPU: difopt vs torch.optim and TorchOpt.

Times ``optimizer.step()`` alone: gradients are pre-set random tensors (no backward is run),
the same values for every contender, each contender on its own copy of the parameters.
Default size: 16 tensors of 512x1024 float32 (8M parameters). ``--optimizer`` picks the rule:

* ``adam`` (default): Adam, lr 1e-3;
* ``sgd``: SGD with momentum 0.9, lr 1e-2;
* ``rmsprop``: RMSprop (alpha 0.99, centered with ``--centered``), lr 1e-2;
* ``amsgrad``: Adam with ``amsgrad=True``, lr 1e-3;
* ``adafactor``: Adafactor with torch's defaults (lr 1e-2);
* ``rprop``: Rprop with torch's defaults (lr 1e-2);
* ``muon``: Muon, lr 1e-2 and no weight decay (torch's arithmetic exactly, so the same-result
  check holds; see difopt-core's tests/test_muon.py), against plain torch.optim.Muon, which
  has no foreach variant.

With ``--compile`` the contenders are the steps compiled with ``torch.compile`` (inductor,
compiled during the warm-up): difopt's class against torch.optim's, with torch's eager
foreach step for reference; target: compiled difopt / compiled torch.optim <= 1.00.

Targets: difopt / torch.optim(foreach=True) <= 1.00 (plain torch.optim for Muon); difopt with
use_accelerated_op=True / torch.optim(fused=True) <= 1.00 where torch has a fused CPU kernel
(Adam, SGD), else / torch foreach (RMSprop). Optimizers without a fused difopt kernel or a
TorchOpt counterpart report those contenders as skipped.

    python benchmarks/classic_step.py                      # Adam, full size
    python benchmarks/classic_step.py --optimizer sgd      # SGD with momentum
    python benchmarks/classic_step.py --compile            # both steps torch.compile'd
    python benchmarks/classic_step.py --quick              # smoke run
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench  # noqa: E402

BASELINE = "torch-foreach"
TARGET = 1.00


def _optimizers(name: str, lr: float, centered: bool) -> dict[str, Any]:
    """Class names and keyword arguments of ``name`` in difopt, torch.optim and TorchOpt."""
    import torch

    import difopt

    if name == "adam":
        return dict(
            title="Adam",
            difopt=difopt.Adam,
            torch=torch.optim.Adam,
            torchopt="Adam",
            kwargs=dict(lr=lr),
            torch_fused=True,
        )
    if name == "sgd":
        return dict(
            title="SGD (momentum 0.9)",
            difopt=difopt.SGD,
            torch=torch.optim.SGD,
            torchopt="SGD",
            kwargs=dict(lr=lr, momentum=0.9),
            torch_fused=True,
        )
    if name == "rmsprop":
        return dict(
            title=f"RMSprop{' (centered)' if centered else ''}",
            difopt=difopt.RMSProp,
            torch=torch.optim.RMSprop,
            torchopt="RMSProp",
            kwargs=dict(lr=lr, centered=centered),
            torch_fused=False,
        )
    # Optimizers TorchOpt 0.7.3 does not have and difopt-accel does not fuse.
    others = {
        "amsgrad": ("Adam (amsgrad)", difopt.Adam, torch.optim.Adam, dict(amsgrad=True), True),
        "adafactor": ("Adafactor", difopt.Adafactor, torch.optim.Adafactor, {}, True),
        "rprop": ("Rprop", difopt.Rprop, torch.optim.Rprop, {}, True),
        "muon": ("Muon", difopt.Muon, torch.optim.Muon, dict(weight_decay=0.0), False),
    }
    title, ours, theirs, extra, foreach = others[name]
    return dict(
        title=title,
        difopt=ours,
        torch=theirs,
        torchopt=None,
        kwargs=dict(lr=lr, **extra),
        torch_fused=False,
        torch_foreach=foreach,
        accel=False,
    )


def _eager_contenders(
    spec: dict[str, Any],
    kw: dict[str, Any],
    foreach: dict[str, Any],
    t: str,
    add: Callable[..., None],
    status: dict[str, str],
) -> None:
    """difopt (pure and fused), torch.optim (foreach and fused) and TorchOpt, uncompiled."""
    add("difopt", lambda ps: spec["difopt"](ps, **kw))
    accel, why = _bench.try_import("difopt_accel")
    if not spec.get("accel", True):
        status["difopt-accel"] = "no fused difopt-accel kernel for this optimizer"
    elif accel is None:
        status["difopt-accel"] = why or "skipped"
    else:
        add("difopt-accel", lambda ps: spec["difopt"](ps, use_accelerated_op=True, **kw))
    add("torch-foreach", lambda ps: spec["torch"](ps, **foreach, **kw))
    if spec["torch_fused"]:
        add("torch-fused", lambda ps: spec["torch"](ps, fused=True, **kw))
    else:
        status["torch-fused"] = f"torch.optim.{t} has no fused CPU kernel"
    torchopt, why = _bench.try_import("torchopt")
    if spec["torchopt"] is None:
        status["torchopt"] = "TorchOpt 0.7.3 has no such optimizer"
    elif torchopt is None:
        status["torchopt"] = why or "skipped"
    else:
        add("torchopt", lambda ps: getattr(torchopt, spec["torchopt"])(ps, **kw))


def _eager_targets(
    times: dict[str, Any], status: dict[str, str], spec: dict[str, Any]
) -> list[dict[str, Any]]:
    r = _bench.ratio(times, "difopt", BASELINE)
    missing = status.get("difopt") or status.get(BASELINE) or ""
    targets = [_bench.target(f"difopt/{BASELINE}", r, TARGET, missing)]
    # difopt-accel's target: its fused step against torch's own fused kernel where torch has
    # one, else against torch's foreach step.
    peer = "torch-fused" if spec["torch_fused"] else BASELINE
    missing = status.get("difopt-accel") or status.get(peer) or ""
    r = _bench.ratio(times, "difopt-accel", peer)
    targets.append(_bench.target(f"difopt-accel/{peer}", r, TARGET, missing))
    return targets


def main() -> None:
    p = _bench.parser(__doc__.splitlines()[0])
    p.add_argument("--tensors", type=int, default=16, help="number of parameter tensors")
    p.add_argument("--rows", type=int, default=512, help="rows of each tensor")
    p.add_argument("--cols", type=int, default=1024, help="columns of each tensor")
    p.add_argument("--steps", type=int, default=None, help="steps timed per repetition")
    p.add_argument(
        "--optimizer",
        choices=["adam", "sgd", "rmsprop", "amsgrad", "adafactor", "rprop", "muon"],
        default="adam",
    )
    p.add_argument("--centered", action="store_true", help="rmsprop: centered variant")
    p.add_argument(
        "--compile", action="store_true", help="time torch.compile'd steps (difopt vs torch)"
    )
    p.add_argument("--lr", type=float, default=None, help="default 1e-3 (Adam), else 1e-2")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.quick:
        args.rows, args.cols = min(args.rows, 32), min(args.cols, 64)
    repeats = args.repeats or (3 if args.quick else 15)
    steps = args.steps or (2 if args.quick else 5)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)

    import torch

    _bench.set_threads(args.threads)
    import difopt  # noqa: F401  (imported before timing)

    _bench.quick_note(args.quick)
    default_lr = 1e-3 if args.optimizer in ("adam", "amsgrad") else 1e-2
    lr = args.lr if args.lr is not None else default_lr
    spec = _optimizers(args.optimizer, lr, args.centered)
    result_name = "adam_classic" if args.optimizer == "adam" else f"{args.optimizer}_classic"
    if args.centered:
        result_name += "_centered"
    if args.compile:
        result_name += "_compiled"
    n_params = args.tensors * args.rows * args.cols
    print(
        f"{spec['title']} step, {args.tensors} x {args.rows}x{args.cols} float32 "
        f"({n_params / 1e6:.2f}M parameters){', torch.compile' if args.compile else ''}, "
        f"CPU, threads={torch.get_num_threads()}, "
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

    t = spec["title"].split(" ")[0]
    labels = {
        "difopt": f"difopt.{spec['difopt'].__name__}",
        "difopt-accel": f"difopt.{spec['difopt'].__name__}(use_accelerated_op=True)",
        "torch-foreach": f"torch.optim.{t}({'foreach=True' if spec.get('torch_foreach', True) else ''})",
        "torch-fused": f"torch.optim.{t}(fused=True)",
        "torchopt": f"torchopt.{spec['torchopt']} (TorchOpt 0.7.3)",
    }
    if args.compile:
        labels = {
            "difopt-compiled": f"torch.compile(difopt.{spec['difopt'].__name__}.step)",
            "torch-compiled": f"torch.compile(torch.optim.{t}.step)",
            "torch-foreach": labels["torch-foreach"] + " (eager)",
        }
    status: dict[str, str] = {}
    params: dict[str, list[torch.Tensor]] = {}
    steps_fn: dict[str, Callable[[], Any]] = {}

    def add(key: str, make: Callable[[list[torch.Tensor]], Any], compiled: bool = False) -> None:
        try:
            ps = fresh()
            opt = make(ps)
        except Exception as exc:
            status[key] = _bench.failure(exc)
            return
        params[key] = ps
        steps_fn[key] = torch.compile(opt.step) if compiled else opt.step

    kw = spec["kwargs"]
    foreach = dict(foreach=True) if spec.get("torch_foreach", True) else {}
    if args.compile:
        add("difopt-compiled", lambda ps: spec["difopt"](ps, **kw), compiled=True)
        add("torch-compiled", lambda ps: spec["torch"](ps, **kw), compiled=True)
        add("torch-foreach", lambda ps: spec["torch"](ps, **foreach, **kw))
    else:
        _eager_contenders(spec, kw, foreach, t, add, status)

    errors: dict[str, str] = {}
    times = _bench.interleaved(
        steps_fn, repeats=repeats, number=steps, warmup=warmup, errors=errors
    )
    status.update(errors)

    # Same work check: every contender took the same number of steps from the same start.
    # Compiled steps are compared with compiled torch.optim (the same float32 arithmetic:
    # over a hundred steps both drift from the eager step by about 1e-5).
    baseline = "torch-compiled" if args.compile else BASELINE
    ref = params[baseline] if baseline in times else None
    checks = []
    if ref is not None:
        for name in times:
            if name == baseline or (args.compile and not name.endswith("-compiled")):
                continue
            diff = max((a - b).abs().max().item() for a, b in zip(params[name], ref))
            checks.append(
                {
                    "name": f"{name} params == {baseline} params",
                    "ok": diff <= 1e-5,
                    "detail": f"max abs diff {diff:.2e} after {warmup + repeats * steps} steps",
                }
            )

    entries = _bench.contender_rows(list(labels), times, status, baseline, labels)
    _bench.print_contenders(entries, baseline, "per step")
    print("\nSame result check (parameters after all steps, tolerance 1e-5):")
    for c in checks:
        print(f"  {c['name']}: {'yes' if c['ok'] else 'NO'} ({c['detail']})")

    if args.compile:
        r = _bench.ratio(times, "difopt-compiled", "torch-compiled")
        missing = status.get("difopt-compiled") or status.get("torch-compiled") or ""
        targets = [_bench.target("difopt-compiled/torch-compiled", r, TARGET, missing)]
    else:
        targets = _eager_targets(times, status, spec)
    _bench.print_targets(targets)

    _bench.write_json(
        result_name,
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
                "optimizer": args.optimizer,
                "centered": args.centered,
                "compile": args.compile,
                "lr": lr,
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
