"""Implicit backward of ridge regression: difopt's custom_root vs TorchOpt 0.7.3's custom_root.

The inner problem is ridge regression on ``--samples`` x ``--features`` data (10,000 x 2,000,
float64, CPU)::

    theta*(lam) = argmin_theta  1/(2n) |X theta - y|^2 + lam/2 |theta|^2

with optimality condition ``F(theta, lam) = X^T (X theta - y) / n + lam theta = 0``, written
once and given to both libraries' ``custom_root(F, argnums=1, solve=solve_cg(...))`` with the
same ``solve_cg`` options (``rtol``, ``atol=0``, ``maxiter``). The outer loss is the mean
squared error on a validation set; its gradient ``g`` at ``theta*`` is the cotangent.

What is timed is the **implicit backward alone**: ``torch.autograd.grad(theta*, lam, g)``, from
the computed solution to the meta-gradient with respect to the ridge strength ``lam`` (one CG
solve of ``(X^T X / n + lam I) u = -g`` with VJPs of ``F``, then one VJP of ``F`` in ``lam``).
The forward solve (a Cholesky factorization, the user's code) runs once per contender, before
timing; each timed call back-propagates through the same retained graph.

Before timing, both meta-gradients are compared with each other (relative difference <= 1e-6)
and with the closed form ``dL/dlam = -g^T (X^T X / n + lam I)^{-1} theta*`` (dense solve); the
number of products with ``A^T`` each library's CG made is counted and printed (the settings
are identical, so the counts should be too). A hand-written CG on an explicit operator
(``u -> X^T (X u) / n + lam u``, no autograd, the same number of iterations) is timed for
reference: it is the floor both libraries approach.

Target: difopt custom_root backward <= 0.8 x TorchOpt 0.7.3 custom_root backward.

    python benchmarks/implicit_ridge.py            # full size
    python benchmarks/implicit_ridge.py --quick    # smoke run
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench  # noqa: E402

NAME = "implicit_ridge"
BASELINE = "difopt"
TARGET = 0.8
AGREEMENT = 1e-6  # relative difference of the two meta-gradients, and to the closed form


def main() -> None:
    p = _bench.parser(__doc__.splitlines()[0])
    p.add_argument("--features", type=int, default=2000)
    p.add_argument("--samples", type=int, default=10000, help="training samples")
    p.add_argument("--val-samples", type=int, default=2000, help="validation samples")
    p.add_argument("--ridge", type=float, default=0.1, help="ridge strength lam")
    p.add_argument("--rtol", type=float, default=1e-10, help="solve_cg rtol (both libraries)")
    p.add_argument("--maxiter", type=int, default=1000, help="solve_cg maxiter (both libraries)")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.quick:
        args.features, args.samples = min(args.features, 200), min(args.samples, 1000)
        args.val_samples = min(args.val_samples, 200)
    repeats = args.repeats or (3 if args.quick else 11)
    warmup = args.warmup if args.warmup is not None else 1

    import warnings

    import torch

    # TorchOpt 0.7.3 calls functorch.vjp, which warns (FutureWarning) on every backward.
    warnings.filterwarnings("ignore", message=r".*functorch\.vjp.*", category=FutureWarning)
    _bench.set_threads(args.threads)
    import difopt

    _bench.quick_note(args.quick)
    dtype = getattr(torch, args.dtype)
    n, d = args.samples, args.features
    gen = torch.Generator().manual_seed(args.seed)
    w_true = torch.randn(d, generator=gen, dtype=dtype) / d**0.5
    x = torch.randn(n, d, generator=gen, dtype=dtype)
    y = x @ w_true + 0.5 * torch.randn(n, generator=gen, dtype=dtype)
    xv = torch.randn(args.val_samples, d, generator=gen, dtype=dtype)
    yv = xv @ w_true + 0.5 * torch.randn(args.val_samples, generator=gen, dtype=dtype)
    lam_value = args.ridge

    # ---- the user's side: optimality condition, forward solve, closed form (not timed)
    def optimality(
        theta: torch.Tensor, lam: torch.Tensor, x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        return x.T @ (x @ theta - y) / x.shape[0] + lam * theta

    hessian = x.T @ x / n + lam_value * torch.eye(d, dtype=dtype)
    chol = torch.linalg.cholesky(hessian)
    theta_star = torch.cholesky_solve((x.T @ y / n).unsqueeze(-1), chol).squeeze(-1)
    g = xv.T @ (xv @ theta_star - yv) / args.val_samples  # d L_val / d theta at theta*
    closed_form = float(-(g @ torch.cholesky_solve(theta_star.unsqueeze(-1), chol).squeeze(-1)))
    eigs = torch.linalg.eigvalsh(hessian)
    condition = float(eigs[-1] / eigs[0])
    del hessian, chol, eigs

    def ridge_solver(
        theta0: torch.Tensor, lam: torch.Tensor, x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        # The forward solve is the user's code and is excluded from the comparison: it was done
        # once above (Cholesky); returning it keeps both contenders' forward identical.
        return theta_star.clone()

    cg_options = {"rtol": args.rtol, "atol": 0.0, "maxiter": args.maxiter}
    print(
        f"ridge regression: {n} samples x {d} features ({args.dtype}), validation "
        f"{args.val_samples}, lam {lam_value} (condition number of X^T X/n + lam I: "
        f"{condition:.1f}), solve_cg(rtol={args.rtol:g}, atol=0, maxiter={args.maxiter}) in both "
        f"libraries, CPU, threads={torch.get_num_threads()}, {repeats} interleaved "
        f"repetitions, warm-up {warmup}\n"
    )

    def counting(solve: Callable[..., Any], counter: list[int]) -> Callable[..., Any]:
        """The same solver, counting its products with A^T (check run only, never timed)."""

        def counted_solve(matvec: Callable[[Any], Any], b: Any) -> Any:
            def counted_matvec(v: Any) -> Any:
                counter[0] += 1
                return matvec(v)

            return solve(counted_matvec, b)

        return counted_solve

    def backward_of(library: Any, count: list[int] | None = None) -> Callable[[], torch.Tensor]:
        """Build the graph once (forward, untimed); each call runs the implicit backward."""
        solve = library.linear_solve.solve_cg(**cg_options)
        if count is not None:
            solve = counting(solve, count)
        solver = library.diff.implicit.custom_root(optimality, argnums=1, solve=solve)(ridge_solver)
        lam = torch.tensor(lam_value, dtype=dtype, requires_grad=True)
        theta = solver(torch.zeros(d, dtype=dtype), lam, x, y)

        def run() -> torch.Tensor:
            return torch.autograd.grad(theta, lam, g, retain_graph=True)[0]

        return run

    def hand_written() -> Callable[[], torch.Tensor]:
        """Reference floor: plain CG on ``u -> X^T (X u) / n + lam u``, no autograd, no checks.

        Same stopping rule as the libraries' ``cg`` (``|r| <= rtol |b|``, at most ``maxiter``).
        """
        lam = lam_value
        threshold = (args.rtol * float(g.norm())) ** 2

        def run() -> torch.Tensor:
            r = -g
            u = torch.zeros_like(r)
            p, rr = r, torch.dot(r, r)
            k = 0
            while float(rr) > threshold and k < args.maxiter:
                ap = x.T @ (x @ p) / n + lam * p
                alpha = rr / torch.dot(p, ap)
                u = u + alpha * p
                r = r - alpha * ap
                rr_next = torch.dot(r, r)
                p = r + (rr_next / rr) * p
                rr = rr_next
                k += 1
            return torch.dot(theta_star, u)  # B^T u with B = dF/dlam = theta*

        return run

    labels = {
        "difopt": "difopt custom_root(solve=solve_cg)",
        "torchopt": "torchopt.diff.implicit.custom_root (TorchOpt 0.7.3)",
        "hand-written": "reference: hand-written CG, explicit operator",
    }
    status: dict[str, str] = {}
    torchopt, why = _bench.try_import("torchopt")
    libraries: dict[str, Any] = {"difopt": difopt}
    if torchopt is None:
        status["torchopt"] = why or "skipped"
    else:
        libraries["torchopt"] = torchopt

    # ---- correctness: each meta-gradient vs the closed form and vs each other
    results: dict[str, float] = {}
    matvecs: dict[str, int] = {}
    for name, library in libraries.items():
        counter = [0]
        try:
            results[name] = float(backward_of(library, counter)())
        except Exception as exc:
            status[name] = _bench.failure(exc)
            continue
        matvecs[name] = counter[0]

    def rel(a: float, b: float) -> float:
        return abs(a - b) / max(abs(b), 1e-300)

    checks = []
    for name, value in results.items():
        err = rel(value, closed_form)
        checks.append(
            {
                "name": f"{name} meta-gradient == closed form",
                "ok": err <= AGREEMENT,
                "detail": f"{value:.12e} vs {closed_form:.12e}, relative difference {err:.2e}",
            }
        )
    if "difopt" in results and "torchopt" in results:
        err = rel(results["difopt"], results["torchopt"])
        checks.append(
            {
                "name": "difopt meta-gradient == torchopt meta-gradient",
                "ok": err <= AGREEMENT,
                "detail": f"relative difference {err:.2e}",
            }
        )

    contenders: dict[str, Callable[[], Any]] = {
        name: backward_of(lib) for name, lib in libraries.items() if name in results
    }
    contenders["hand-written"] = hand_written()
    errors: dict[str, str] = {}
    times = _bench.interleaved(contenders, repeats, warmup=warmup, errors=errors)
    status.update(errors)
    entries = _bench.contender_rows(list(labels), times, status, BASELINE, labels)
    _bench.print_contenders(entries, BASELINE, "per backward")

    print(
        "\nproducts with A^T per backward (CG iterations, plus one for the initial residual "
        "b - A x0 where the solver computes it): "
        + ", ".join(f"{k} {v}" for k, v in matvecs.items())
    )
    print(f"meta-gradient d L_val / d lam (closed form {closed_form:.12e}):")
    for c in checks:
        print(f"  {c['name']}: {'yes' if c['ok'] else 'NO'} ({c['detail']})")

    r = _bench.ratio(times, "difopt", "torchopt")
    missing = status.get("difopt") or status.get("torchopt") or ""
    targets = [_bench.target("difopt custom_root / TorchOpt custom_root", r, TARGET, missing)]
    _bench.print_targets(targets)
    _bench.write_json(
        NAME,
        {
            "quick": args.quick,
            "config": {
                "samples": n,
                "features": d,
                "val_samples": args.val_samples,
                "ridge": lam_value,
                "condition_number": condition,
                "dtype": args.dtype,
                "solve_cg": cg_options,
                "repeats": repeats,
                "warmup": warmup,
                "seed": args.seed,
            },
            "env": _bench.environment(torch.get_num_threads()),
            "unit": "seconds per implicit backward",
            "contenders": entries,
            "cg_matvecs": matvecs,
            "meta_gradients": {**results, "closed_form": closed_form},
            "checks": checks,
            "targets": targets,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
