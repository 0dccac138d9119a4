"""MAML-shaped unrolled inner loop: difopt.MetaAdam vs TorchOpt's MetaAdam and `higher`.

One outer iteration = a fresh differentiable Adam on the model (moments start at zero, as
for a new task), ``--inner-steps`` differentiable steps on a support batch, the loss on a
query batch, and its backward to the model's initial parameters (the meta-gradient). The
model is an MLP 64 -> 512 -> 512 -> 512 -> 10 with ReLU, batch 25, CPU, float32.

Contenders (same model, data, hyper-parameters; each on its own copy of the model):

* ``difopt.MetaAdam(net, lr, eps_root)``;
* ``torchopt.MetaAdam(net, lr, eps_root)`` (TorchOpt 0.7.3), if installed;
* ``higher.innerloop_ctx(net, torch.optim.Adam(..., lr, eps), copy_initial_weights=False)``
  with ``diffopt.step(loss, override={"eps": [eps * sqrt(1 - beta2**t)]})`` (higher 0.2.1),
  if installed. higher's Adam divides by ``sqrt(v) + eps`` *before* the bias correction of
  ``v``, i.e. its effective eps is ``eps / sqrt(1 - beta2**t)`` (31x larger at t=1); the
  per-step override (higher's own API) makes it compute torch.optim's formula, which is what
  the other contenders compute. higher has no ``eps_root``: it masks the gradient where
  ``v == 0`` instead, which is the ``eps_root -> 0`` limit of the same formula;
* ``difopt.MetaSGD(net, lr)``: the same loop with plain SGD, so MetaAdam - MetaSGD is the
  cost of the Adam update itself;
* a hand-written unrolled Adam in plain torch (``torch.func.functional_call``): the
  independent oracle of the meta-gradient check, timed for reference.

Before timing, the meta-gradient of the first iteration of every contender is compared with
the oracle's (MetaSGD with a hand-written SGD oracle). That check runs with ``--check-eps``
(default 1e-3): with Adam's default eps=1e-8 the meta-gradient is ill-conditioned (entries
whose gradient is ~1e-8 have derivatives ~lr/eps), so float32 rounding alone moves it by
1e-2..1 between correct implementations. The agreement at the timed eps is printed too, for
information. The timed configuration uses eps=1e-8 (all libraries' default) and
``eps_root=1e-12``: with ``eps_root=0`` the meta-gradient of this problem is NaN (sqrt's
derivative at a zero second moment) in TorchOpt and the oracle alike.

Targets: difopt MetaAdam <= 0.85 x TorchOpt MetaAdam, and <= 0.85 x higher.

    python benchmarks/maml_meta.py            # full size
    python benchmarks/maml_meta.py --quick    # smoke run
"""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench  # noqa: E402

NAME = "maml_meta"
BASELINE = "difopt-adam"
TARGET = 0.85
TOLERANCE = 1e-3  # relative L2 error of the meta-gradient vs the oracle (at --check-eps)


def main() -> None:
    p = _bench.parser(__doc__.splitlines()[0])
    p.add_argument("--in-dim", type=int, default=64)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=3, help="number of hidden layers")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch", type=int, default=25)
    p.add_argument("--inner-steps", type=int, default=5)
    p.add_argument("--inner-lr", type=float, default=1e-2)
    p.add_argument("--eps", type=float, default=1e-8, help="Adam eps of every contender")
    p.add_argument(
        "--eps-root",
        type=float,
        default=1e-12,
        help="eps_root of difopt/TorchOpt MetaAdam and the oracle (higher's Adam "
        "has none: it masks v == 0); 0 makes this problem's meta-gradient NaN",
    )
    p.add_argument(
        "--check-eps",
        type=float,
        default=1e-3,
        help="Adam eps of the meta-gradient agreement check (well-conditioned)",
    )
    p.add_argument("--number", type=int, default=None, help="outer iterations timed per repetition")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.quick:
        args.hidden, args.batch = min(args.hidden, 32), min(args.batch, 5)
    repeats = args.repeats or (3 if args.quick else 15)
    number = args.number or (1 if args.quick else 2)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)

    import torch
    import torch.nn.functional as F
    from torch import nn

    _bench.set_threads(args.threads)
    import difopt

    _bench.quick_note(args.quick)
    torch.manual_seed(args.seed)
    dims = [args.in_dim] + [args.hidden] * args.layers + [args.classes]
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    base = nn.Sequential(*layers[:-1])
    n_params = sum(q.numel() for q in base.parameters())
    xs, ys = torch.randn(args.batch, args.in_dim), torch.randint(0, args.classes, (args.batch,))
    xq, yq = torch.randn(args.batch, args.in_dim), torch.randint(0, args.classes, (args.batch,))
    k, lr, eps_root = args.inner_steps, args.inner_lr, args.eps_root
    print(
        f"MAML outer iteration: MLP {' -> '.join(map(str, dims))} (ReLU, "
        f"{n_params / 1e6:.2f}M parameters), batch {args.batch}, {k} inner steps, "
        f"inner lr {lr}, eps {args.eps}, eps_root {eps_root}, CPU, "
        f"threads={torch.get_num_threads()}, "
        f"{repeats} interleaved repetitions x {number} iterations, warm-up {warmup}\n"
    )

    def leaf_slots(net: nn.Module) -> list[tuple[nn.Module, str, torch.Tensor]]:
        return [(m, n, q) for m in net.modules() for n, q in m._parameters.items() if q is not None]

    def take_grads(slots) -> list[torch.Tensor]:
        grads = [q.grad for _, _, q in slots]
        for _, _, q in slots:
            q.grad = None
        return grads

    def meta_optimizer_loop(make: Callable[[nn.Module], Any]) -> Callable[[], list]:
        """difopt / TorchOpt style: the optimizer replaces the module's parameters."""
        net = copy.deepcopy(base)
        slots = leaf_slots(net)

        def run() -> list[torch.Tensor]:
            opt = make(net)
            for _ in range(k):
                opt.step(F.cross_entropy(net(xs), ys))
            F.cross_entropy(net(xq), yq).backward()
            for m, n, q in slots:  # back to the initial (leaf) parameters
                m._parameters[n] = q
            return take_grads(slots)

        return run

    def higher_loop(higher: Any, eps: float) -> Callable[[], list]:
        net = copy.deepcopy(base)
        slots = leaf_slots(net)
        inner_opt = torch.optim.Adam(net.parameters(), lr=lr, eps=eps)
        b2 = inner_opt.param_groups[0]["betas"][1]
        # torch.optim's eps placement (see the module docstring), one override per step
        overrides = [{"eps": [eps * math.sqrt(1 - b2**t)]} for t in range(1, k + 1)]

        def run() -> list[torch.Tensor]:
            with higher.innerloop_ctx(net, inner_opt, copy_initial_weights=False) as (fnet, d):
                for t in range(k):
                    d.step(F.cross_entropy(fnet(xs), ys), override=overrides[t])
                F.cross_entropy(fnet(xq), yq).backward()
            return take_grads(slots)

        return run

    def oracle_loop(rule: str, eps: float = 0.0) -> Callable[[], list]:
        """Hand-written unrolled SGD/Adam on a functional call of the model (torch only)."""
        net = copy.deepcopy(base)
        names = [n for n, _ in net.named_parameters()]
        leaves = [q for _, q in net.named_parameters()]
        b1, b2 = 0.9, 0.999

        def run() -> list[torch.Tensor]:
            ps = list(leaves)
            mu = [torch.zeros_like(q) for q in ps]
            nu = [torch.zeros_like(q) for q in ps]
            for t in range(1, k + 1):
                out = torch.func.functional_call(net, dict(zip(names, ps)), (xs,))
                gs = torch.autograd.grad(F.cross_entropy(out, ys), ps, create_graph=True)
                if rule == "sgd":
                    ps = [q - lr * g for q, g in zip(ps, gs)]
                    continue
                mu = [b1 * m + (1 - b1) * g for m, g in zip(mu, gs)]
                nu = [b2 * v + (1 - b2) * g * g for v, g in zip(nu, gs)]
                bc1, bc2 = 1 - b1**t, 1 - b2**t
                ps = [
                    q - lr * (m / bc1) / (torch.sqrt(v / bc2 + eps_root) + eps)
                    for q, m, v in zip(ps, mu, nu)
                ]
            out = torch.func.functional_call(net, dict(zip(names, ps)), (xq,))
            grads = torch.autograd.grad(F.cross_entropy(out, yq), leaves)
            return list(grads)

        return run

    labels = {
        "difopt-adam": "difopt.MetaAdam",
        "torchopt-adam": "torchopt.MetaAdam (TorchOpt 0.7.3)",
        "higher-adam": "higher 0.2.1 DifferentiableAdam",
        "difopt-sgd": "difopt.MetaSGD (same loop, SGD)",
        "difopt-adam-accel": "difopt.MetaAdam(use_accelerated_op=True) (difopt-accel)",
        "torchopt-sgd": "torchopt.MetaSGD (TorchOpt 0.7.3, same loop, SGD)",
        "oracle-adam": "hand-written torch Adam (oracle)",
    }
    order = list(labels)
    status: dict[str, str] = {}
    torchopt, why = _bench.try_import("torchopt")
    if torchopt is None:
        status["torchopt-adam"] = why
        status["torchopt-sgd"] = why
    higher, why = _bench.try_import("higher")
    if higher is None:
        status["higher-adam"] = why
    accel, why = _bench.try_import("difopt_accel")
    if accel is None:
        status["difopt-adam-accel"] = why

    def build(eps: float) -> dict[str, Callable[[], list]]:
        """A fresh outer-iteration function per contender, all at Adam ``eps``."""
        runs: dict[str, Callable[[], list]] = {}
        runs["difopt-adam"] = meta_optimizer_loop(
            lambda net: difopt.MetaAdam(net, lr=lr, eps=eps, eps_root=eps_root)
        )
        if torchopt is not None:
            runs["torchopt-adam"] = meta_optimizer_loop(
                lambda net: torchopt.MetaAdam(net, lr=lr, eps=eps, eps_root=eps_root)
            )
            runs["torchopt-sgd"] = meta_optimizer_loop(lambda net: torchopt.MetaSGD(net, lr=lr))
        if accel is not None:
            runs["difopt-adam-accel"] = meta_optimizer_loop(
                lambda net: difopt.MetaAdam(
                    net, lr=lr, eps=eps, eps_root=eps_root, use_accelerated_op=True
                )
            )
        if higher is not None:
            runs["higher-adam"] = higher_loop(higher, eps)
        runs["difopt-sgd"] = meta_optimizer_loop(lambda net: difopt.MetaSGD(net, lr=lr))
        runs["oracle-adam"] = oracle_loop("adam", eps)
        return runs

    def flat(gs: list) -> torch.Tensor:
        return torch.cat([g.reshape(-1) for g in gs])

    def compare(runs: dict[str, Callable[[], list]], failed: dict[str, str]):
        """First-iteration meta-gradient of every contender vs the oracle: (name, rel, note)."""
        oracle = {"adam": flat(runs["oracle-adam"]()), "sgd": flat(oracle_loop("sgd")())}
        out = []
        for name, run in runs.items():
            if name == "oracle-adam" or name in failed:
                continue
            ref = oracle["sgd" if name.endswith("sgd") else "adam"]
            try:
                got = flat(run())
            except Exception as exc:
                failed[name] = _bench.failure(exc)
                continue
            note = ", ".join(
                f"{who} NON-FINITE"
                for who, g in (("contender", got), ("oracle", ref))
                if not bool(torch.isfinite(g).all())
            )
            rel = ((got - ref).norm() / ref.norm()).item() if not note else float("nan")
            out.append((name, rel, note))
        return out

    # ---- meta-gradient check in the well-conditioned configuration (fresh copies)
    failed: dict[str, str] = {}
    checks = []
    for name, rel, note in compare(build(args.check_eps), failed):
        rule = "sgd" if name.endswith("sgd") else "adam"
        checks.append(
            {
                "name": f"{name} meta-gradient == {rule} oracle",
                "ok": not note and rel <= TOLERANCE,
                "detail": (note or f"relative L2 error {rel:.2e}")
                + f" at eps={args.check_eps:g} (tolerance {TOLERANCE:g})",
            }
        )

    # ---- the timed configuration; its first call is compared too (information only)
    runs = build(args.eps)
    info = {name: (rel, note) for name, rel, note in compare(runs, failed)}
    for name in failed:
        runs.pop(name, None)
    status.update(failed)

    errors: dict[str, str] = {}
    times = _bench.interleaved(
        runs, repeats=repeats, number=number, warmup=max(warmup - 1, 0), errors=errors
    )
    status.update(errors)

    entries = _bench.contender_rows(order, times, status, BASELINE, labels)
    _bench.print_contenders(entries, BASELINE, "per outer iter")
    print("\nMeta-gradient agreement (first iteration, vs hand-written oracle):")
    for c in checks:
        print(f"  {c['name']}: {'yes' if c['ok'] else 'NO'} ({c['detail']})")
    print(
        f"  at the timed eps={args.eps:g} (ill-conditioned, information only): "
        + ", ".join(f"{n} {note or format(r, '.1e')}" for n, (r, note) in info.items())
    )

    import statistics

    def adam_cost(adam: str, sgd: str) -> float | None:
        """Median over repetitions of (Adam time - SGD time): the optimizer's own cost."""
        if adam not in times or sgd not in times:
            return None
        return statistics.median(a - b for a, b in zip(times[adam], times[sgd]))

    overhead = adam_cost("difopt-adam", "difopt-sgd")
    accel_overhead = adam_cost("difopt-adam-accel", "difopt-sgd")
    torchopt_overhead = adam_cost("torchopt-adam", "torchopt-sgd")
    for what, cost in (
        ("difopt MetaAdam", overhead),
        ("difopt MetaAdam (fused op)", accel_overhead),
        ("TorchOpt MetaAdam", torchopt_overhead),
    ):
        if cost is not None:
            print(
                f"\n{what} - its MetaSGD (Adam's own cost): {_bench.fmt_time(cost)} per outer "
                f"iteration, {_bench.fmt_time(cost / k)} per inner step "
                f"(median of per-repetition differences)"
            )

    targets = []
    for peer, pname in (("torchopt-adam", "TorchOpt MetaAdam"), ("higher-adam", "higher")):
        r = _bench.ratio(times, "difopt-adam", peer)
        missing = status.get("difopt-adam") or status.get(peer) or ""
        targets.append(_bench.target(f"difopt MetaAdam / {pname}", r, TARGET, missing))
    # difopt-accel's target: the fused op's Adam cost <= 1/3 of TorchOpt's pure Adam cost.
    cost_ratio = (
        {"value": accel_overhead / torchopt_overhead}
        if accel_overhead is not None and torchopt_overhead
        else None
    )
    missing = status.get("difopt-adam-accel") or status.get("torchopt-adam") or ""
    targets.append(
        _bench.target(
            "Adam cost (MetaAdam - MetaSGD): difopt fused op / TorchOpt",
            cost_ratio,
            1.0 / 3.0,
            missing,
        )
    )
    _bench.print_targets(targets)

    _bench.write_json(
        NAME,
        {
            "quick": args.quick,
            "config": {
                "dims": dims,
                "parameters": n_params,
                "batch": args.batch,
                "inner_steps": k,
                "inner_lr": lr,
                "eps": args.eps,
                "eps_root": eps_root,
                "check_eps": args.check_eps,
                "repeats": repeats,
                "number": number,
                "warmup": warmup,
                "seed": args.seed,
            },
            "env": _bench.environment(torch.get_num_threads()),
            "unit": "seconds per outer iteration",
            "contenders": entries,
            "checks": checks,
            "agreement_at_timed_eps": {n: (note or r) for n, (r, note) in info.items()},
            "adam_minus_sgd_s": overhead,
            "accel_adam_minus_sgd_s": accel_overhead,
            "torchopt_adam_minus_sgd_s": torchopt_overhead,
            "targets": targets,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
