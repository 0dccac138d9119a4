"""Zero-order gradient of an MLP objective: vmap-batched vs per-sample loop vs TorchOpt 0.7.3.

One call = the forward value and one ``torch.autograd.grad`` through a ``zero_order``-decorated
objective: the evolution-strategies estimate with ``--samples`` perturbations (256) of the
parameters of an MLP 64 -> 128 -> 10 (ReLU, 9,610 parameters, a tuple of 4 tensors), whose
objective is the mean squared error on a batch of 32, CPU, float32. Noise is
``torch.distributions.Normal(0, 1)``, ``sigma = 0.01``.

Contenders:

* ``difopt_zeroorder.zero_order(..., vectorize=True)``: all perturbed points evaluated in one
  ``torch.func.vmap`` call;
* ``difopt_zeroorder.zero_order(...)`` (default, ``vectorize=False``): a Python loop, one
  evaluation per perturbation, as TorchOpt does;
* ``torchopt.diff.zero_order.zero_order(...)`` (TorchOpt 0.7.3), if installed, in its own
  (loop) mode;
* for reference, not a contender: drawing the ``samples x parameters`` Gaussian values alone
  (one ``normal_`` per parameter tensor). Every estimator must draw them, in either mode, and
  PyTorch's CPU ``normal_`` runs on one thread, so this floor bounds the vectorized/loop
  ratio: the ratio can only approach 1/3 when evaluating the objective costs well above the
  noise.

Before timing, the vectorized and the loop estimates are checked to be equal for the same
seed (they draw the same noise). With ``--method antithetic`` each call evaluates the MLP
``2 * samples`` times. TorchOpt's ``'forward'`` method computes a different quantity (its
baseline is overwritten inside the sample loop and it scales by ``sigma`` instead of
``1/sigma``), so compare it for time only.

Targets: vectorized <= 1/3 x loop (3x faster), and vectorized <= 1.0 x TorchOpt.

    python benchmarks/zero_order_mlp.py            # full size
    python benchmarks/zero_order_mlp.py --quick    # smoke run
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench  # noqa: E402

NAME = "zero_order_mlp"
BASELINE = "difopt-vmap"
TARGETS = {"difopt-loop": 1 / 3, "torchopt-loop": 1.0}


def main() -> None:
    p = _bench.parser(__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=256, help="perturbations per estimate")
    p.add_argument("--method", choices=["naive", "forward", "antithetic"], default="naive")
    p.add_argument("--in-dim", type=int, default=64)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--sigma", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.quick:
        args.samples, args.hidden = min(args.samples, 32), min(args.hidden, 32)
    repeats = args.repeats or (3 if args.quick else 15)
    warmup = args.warmup if args.warmup is not None else 1

    import torch

    _bench.set_threads(args.threads)
    import difopt_zeroorder

    _bench.quick_note(args.quick)
    gen = torch.Generator().manual_seed(args.seed)
    shapes = [
        (args.in_dim, args.hidden),
        (args.hidden,),
        (args.hidden, args.classes),
        (args.classes,),
    ]
    params = tuple(
        (torch.randn(s, generator=gen) / (s[0] ** 0.5 if len(s) == 2 else 1.0)).requires_grad_()
        for s in shapes
    )
    n_params = sum(q.numel() for q in params)
    x = torch.randn(args.batch, args.in_dim, generator=gen)
    y = torch.randn(args.batch, args.classes, generator=gen)
    normal = torch.distributions.Normal(0.0, 1.0)

    def objective(ps: tuple[torch.Tensor, ...], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w1, b1, w2, b2 = ps
        return ((torch.relu(x @ w1 + b1) @ w2 + b2 - y) ** 2).mean()

    print(
        f"zero-order gradient, method {args.method!r}, {args.samples} samples, MLP "
        f"{args.in_dim} -> {args.hidden} -> {args.classes} ({n_params} parameters), batch "
        f"{args.batch}, CPU, threads={torch.get_num_threads()}, {repeats} interleaved "
        f"repetitions, warm-up {warmup}\n"
    )

    def contender(decorated: Callable[..., torch.Tensor]) -> Callable[[], Any]:
        def run() -> Any:
            return torch.autograd.grad(decorated(params, x, y), params)

        return run

    def ours(vectorize: bool, generator: int | None = None) -> Callable[..., torch.Tensor]:
        return difopt_zeroorder.zero_order(
            normal,
            args.method,
            argnums=0,
            num_samples=args.samples,
            sigma=args.sigma,
            vectorize=vectorize,
            generator=generator,
        )(objective)

    check = [contender(ours(v, generator=args.seed))() for v in (True, False)]
    worst = max(float((a - b).abs().max() / (b.abs().max() + 1e-12)) for a, b in zip(*check))
    print(f"vectorized vs loop estimate, same seed: max relative difference {worst:.2e}\n")

    labels = {
        "difopt-vmap": "difopt zero_order(vectorize=True)",
        "difopt-loop": "difopt zero_order (per-sample loop)",
        "torchopt-loop": "torchopt.diff.zero_order (TorchOpt 0.7.3)",
        "noise-only": "reference: drawing the noise alone",
    }
    contenders = {
        "difopt-vmap": contender(ours(True)),
        "difopt-loop": contender(ours(False)),
    }
    noise_shapes = [(args.samples, *q.shape) for q in params]
    contenders["noise-only"] = lambda: [torch.empty(s).normal_() for s in noise_shapes]
    status: dict[str, str] = {}
    torchopt, why = _bench.try_import("torchopt")
    if torchopt is None:
        status["torchopt-loop"] = why or "skipped"
    else:
        contenders["torchopt-loop"] = contender(
            torchopt.diff.zero_order.zero_order(
                normal, args.method, argnums=0, num_samples=args.samples, sigma=args.sigma
            )(objective)
        )
    errors: dict[str, str] = {}
    times = _bench.interleaved(contenders, repeats, warmup=warmup, errors=errors)
    status.update(errors)
    entries = _bench.contender_rows(list(labels), times, status, BASELINE, labels)
    _bench.print_contenders(entries, BASELINE, "per call")

    targets = []
    for peer, limit in TARGETS.items():
        name = f"{labels[BASELINE]} / {labels[peer]}"
        targets.append(
            _bench.target(name, _bench.ratio(times, BASELINE, peer), limit, status.get(peer, ""))
        )
    _bench.print_targets(targets)
    _bench.write_json(
        NAME,
        {
            "quick": args.quick,
            "config": {
                "method": args.method,
                "samples": args.samples,
                "parameters": n_params,
                "mlp": [args.in_dim, args.hidden, args.classes],
                "batch": args.batch,
                "sigma": args.sigma,
                "repeats": repeats,
                "warmup": warmup,
            },
            "vectorized_vs_loop_max_rel_diff": worst,
            "environment": _bench.environment(args.threads),
            "contenders": entries,
            "targets": targets,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
