"""DEQ training step on the digits: difopt's DEQ vs torchdeq 0.1.0, and vs backprop-through-solver.

The model of ``examples/deq_digits.py`` (float32, CPU): ``x = encoder(image)`` (Linear 64 ->
``--hidden``), the equilibrium ``z* = tanh(W z* + x)``, ``logits = head(z*)``, cross-entropy,
``torch.optim.Adam`` (lr 1e-3) for every contender. Every contender starts from the same
weights and trains on the same batches (``--batch-size`` images of scikit-learn's bundled
digits), the contenders interleaved step by step with the order rotated (A B C, B C A, ...).

Contenders, all with Anderson acceleration (memory ``--memory``, damping 1), relative residual
``||f(z) - z|| / ||f(z)||`` tolerance ``--tol``, at most ``--max-iter`` iterations:

* ``difopt``: ``difopt.diff.implicit.fixed_point(cell, ..., solver=Anderson(m,
  use_accelerated_op=True), backward="implicit")``; the adjoint fixed point ``u = g + J^T u``
  solved by the same Anderson solver, to ``||u - g - J^T u|| <= tol ||g||`` per sample, at
  most ``--max-iter`` iterations; every Anderson step (forward and adjoint) one call of
  difopt-accel's fused CPU kernel (the pure step, with a status line, when difopt-accel is
  not installed);
* ``difopt-pure``: the same with the pure Anderson step (about fifteen tensor operations);
* ``torchdeq``: torchdeq 0.1.0's ``get_deq(core="indexing", ift=True, f_solver="anderson",
  b_solver="anderson", ...)``, whose implicit backward is then replaced by
  ``torchdeq.grad.backward_factory(grad_type="ift", b_solver=..., b_solver_kwargs=...)`` with
  the forward solver's settings (``m``, ``lam``, tolerance, ``stop_mode="rel"``,
  ``max_iter``): ``get_deq`` 0.1.0 passes only ``max_iter``, ``tol`` and ``stop_mode`` to the
  backward solver, which would otherwise keep its default ``lam=1e-4`` while the forward solve
  uses ``--torchdeq-lam``;
* ``difopt-unrolled``: difopt's DEQ with ``backward="unrolled"``: autograd through every
  (pure) Anderson iteration (the exact derivative of the iterate).

Differences that remain: torchdeq's Anderson regularises its least squares with an absolute
``lam`` (``--torchdeq-lam``, default 1e-6, in both of its solves), difopt's with ``1e-8``
relative to the residuals' scale; torchdeq's relative residual in the backward divides by
``||J^T u + g||``, difopt's by ``||g||``; torchdeq's backward solve starts from ``u = 0``,
difopt's from ``u = g``; torchdeq stops when the whole batch has converged and returns each
sample's lowest-residual iterate, difopt freezes each sample when it converges (both evaluate
``f``, or its vector-Jacobian product, on the whole batch until the last sample is done).

Timed per step: the forward pass, the backward pass, and the whole step (forward, backward,
``optimizer.step``). Reported: medians, and ratios as medians of per-step ratios. Checked
before timing, on one batch at the initial weights: the parameter gradients of the three
contenders agree (relative difference, expected at the level of ``--tol``). After training:
each contender's test accuracy and mean number of forward evaluations of ``f`` per batch
(difopt: 1 + the iterations of the slowest sample; torchdeq: its ``nstep``, which counts
evaluations). Then, untimed, one more pass over the training batches (forward and backward,
no optimizer step) counts the vector-Jacobian products of ``f`` in each backward pass (a hook
on a tensor inside ``f``): for the implicit backwards, the adjoint solve's iterations plus the
one product that carries the adjoint to the parameters; for the unrolled one, one per
recorded iteration; and the memory the forward pass leaves for the backward (the distinct
storages autograd saves, the parameters excepted).

Targets: difopt step / torchdeq step <= 0.8; difopt implicit backward / unrolled backward <= 0.5.

    python benchmarks/deq_digits.py --threads 1   # 3 epochs, under a minute on a quiet core
    python benchmarks/deq_digits.py --quick    # smoke run
"""

from __future__ import annotations

import copy
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench  # noqa: E402

NAME = "deq_digits"
STEP_TARGET = 0.8
BACKWARD_TARGET = 0.5


def main() -> None:
    p = _bench.parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--memory", type=int, default=6, help="Anderson memory (torchdeq's default)")
    p.add_argument("--tol", type=float, default=1e-4, help="relative residual tolerance")
    p.add_argument("--max-iter", type=int, default=40)
    p.add_argument(
        "--torchdeq-lam",
        type=float,
        default=1e-6,
        help="torchdeq's absolute Anderson regularisation, in its forward and backward solves "
        "(its default is 1e-4)",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.quick:
        args.epochs = 1
    _bench.set_threads(args.threads)
    _bench.quick_note(args.quick)

    import torch
    from sklearn.datasets import load_digits
    from torch import nn

    import difopt

    implicit = difopt.diff.implicit
    torch.manual_seed(args.seed)
    digits = load_digits()
    images = torch.tensor(digits.data, dtype=torch.float32)
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(args.seed))
    n_train = int(0.8 * len(labels))
    train, test = order[:n_train], order[n_train:]
    images = (images - images[train].mean(0)) / (images[train].std(0) + 1.0)
    x_train, y_train, x_test, y_test = images[train], labels[train], images[test], labels[test]
    if args.quick:
        x_train, y_train = x_train[:256], y_train[:256]

    class Cell(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.W = nn.Linear(args.hidden, args.hidden, bias=False)
            with torch.no_grad():
                self.W.weight.mul_(0.5)

            self.vjps: list[int] | None = None  # set: count the VJPs through f (untimed)

        def _count(self, grad: torch.Tensor) -> None:
            assert self.vjps is not None
            self.vjps[-1] += 1

        def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            h = self.W(z)
            if self.vjps is not None and h.requires_grad:
                h.register_hook(self._count)
            return torch.tanh(h + x)

    class Model(nn.Module):
        """Encoder, equilibrium, head; ``solve(cell, x) -> (z, f evaluations for the batch)``."""

        def __init__(self, solve: Callable[[nn.Module, torch.Tensor], Any]) -> None:
            super().__init__()
            self.encoder = nn.Linear(64, args.hidden)
            self.cell = Cell()
            self.head = nn.Linear(args.hidden, 10)
            self.solve = solve
            self.iterations: list[float] = []

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            z, iters = self.solve(self.cell, self.encoder(images))
            self.iterations.append(iters)
            return self.head(z)

    common = dict(tol=args.tol, max_iter=args.max_iter, stop_mode="rel")
    status: dict[str, str] = {}
    accel, why = _bench.try_import("difopt_accel")
    if accel is None:
        status["difopt"] = f"runs the pure Anderson step: {why}"

    def difopt_solve(backward: str, fused: bool) -> Callable[[nn.Module, torch.Tensor], Any]:
        solver = implicit.Anderson(m=args.memory, use_accelerated_op=fused)

        def solve(cell: nn.Module, x: torch.Tensor) -> Any:
            z, info = implicit.fixed_point(
                cell, torch.zeros_like(x), x, solver=solver, backward=backward, batched=True,
                **common,
            )  # fmt: skip
            return z, int(info.iterations.max()) + 1  # f evaluations for the batch

        return solve

    solves: dict[str, Callable[[nn.Module, torch.Tensor], Any]] = {
        "difopt": difopt_solve("implicit", fused=accel is not None),
        "difopt-pure": difopt_solve("implicit", fused=False),
        # On the graph every Anderson step is the pure one (the fused kernel has no autograd).
        "difopt-unrolled": difopt_solve("unrolled", fused=False),
    }
    torchdeq, why = _bench.try_import("torchdeq")
    if torchdeq is None:
        status["torchdeq"] = (why or "").replace(
            "pip install torchdeq", "pip install torchdeq==0.1.0"
        )
    else:
        deq = torchdeq.get_deq(
            core="indexing", ift=True, f_solver="anderson", b_solver="anderson",
            f_max_iter=args.max_iter, b_max_iter=args.max_iter, f_tol=args.tol, b_tol=args.tol,
            f_stop_mode="rel", b_stop_mode="rel",
        )  # fmt: skip
        # get_deq 0.1.0 gives its backward solver only max_iter, tol and stop_mode (so it
        # would keep lam=1e-4): rebuild the implicit backward with the forward's settings.
        from torchdeq.grad import backward_factory

        deq.produce_grad[-1] = backward_factory(
            grad_type="ift",
            hook_ift=False,
            b_solver=deq.b_solver,
            b_solver_kwargs=dict(
                max_iter=args.max_iter, tol=args.tol, stop_mode="rel", m=args.memory,
                lam=args.torchdeq_lam,
            ),
        )  # fmt: skip

        def torchdeq_solve(cell: nn.Module, x: torch.Tensor) -> Any:
            z_out, info = deq(
                lambda z: cell(z, x),
                torch.zeros_like(x),
                solver_kwargs={"m": args.memory, "lam": args.torchdeq_lam},
            )
            return z_out[-1], float(info["nstep"].max())  # f evaluations for the batch

        solves["torchdeq"] = torchdeq_solve

    base = Model(solves["difopt"])
    models = {name: copy.deepcopy(base) for name in solves}
    for name, model in models.items():
        model.solve = solves[name]
    optimizers = {n: torch.optim.Adam(m.parameters(), lr=1e-3) for n, m in models.items()}
    names = list(models)

    # Check: the gradients agree at the initial weights, on one batch.
    grads = {}
    for name in list(names):
        model = models[name]
        try:
            loss = nn.functional.cross_entropy(model(x_train[:64]), y_train[:64])
            grads[name] = torch.autograd.grad(loss, list(model.parameters()))
        except Exception as exc:  # a peer that cannot run on this torch
            status[name] = _bench.failure(exc)
            names.remove(name)
        model.iterations.clear()

    def rel(a: Any, b: Any) -> float:
        num = sum(float((x - y).detach().norm() ** 2) for x, y in zip(a, b)) ** 0.5
        return num / sum(float(y.detach().norm() ** 2) for y in b) ** 0.5

    checks = {}
    for name in names:
        if name != "difopt-unrolled":
            checks[f"{name} grad vs difopt-unrolled"] = rel(grads[name], grads["difopt-unrolled"])
    print(f"Gradient check at the initial weights (tol {args.tol:g}, relative difference):")
    for k, v in checks.items():
        print(f"  {k}: {v:.2e}")

    parts = ("forward", "backward", "step")
    times: dict[str, dict[str, list[float]]] = {part: {n: [] for n in names} for part in parts}

    def train_step(name: str, idx: torch.Tensor) -> None:
        model, opt = models[name], optimizers[name]
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            t1 = time.perf_counter()
            opt.zero_grad()
            loss.backward()
            t2 = time.perf_counter()
            opt.step()
            t3 = time.perf_counter()
        finally:
            gc.enable()
        times["forward"][name].append(t1 - t0)
        times["backward"][name].append(t2 - t1)
        times["step"][name].append(t3 - t0)

    step = 0
    for epoch in range(args.epochs):
        perm = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(epoch))
        for i in range(0, len(perm) - args.batch_size + 1, args.batch_size):
            idx = perm[i : i + args.batch_size]
            first = step % len(names)  # rotate who goes first
            for name in names[first:] + names[:first]:
                train_step(name, idx)
            step += 1
    warm = min(2, step - 1)  # the first steps allocate: not timed
    for part in parts:
        for name in names:
            times[part][name] = times[part][name][warm:]

    # How far apart the contenders' weights ended (they start equal and see the same batches).
    for name in names:
        if name != "difopt":
            after = list(models[name].parameters())
            checks[f"{name} weights vs difopt after training"] = rel(
                after, list(models["difopt"].parameters())
            )
    print(
        "Weights after training, relative difference to difopt's: "
        + ", ".join(f"{k.split()[0]} {v:.1e}" for k, v in checks.items() if "after" in k)
    )

    # Untimed: the vector-Jacobian products of f in each backward pass, on the training batches.
    backward_vjps: dict[str, float] = {}
    perm = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(args.epochs))
    batches = [
        perm[i : i + args.batch_size]
        for i in range(0, len(perm) - args.batch_size + 1, args.batch_size)
    ]
    # And the memory the forward pass keeps for the backward: the bytes of the distinct
    # storages autograd saves (the parameters excepted), per batch.
    saved_kib: dict[str, float] = {}

    def forward_saving(model: nn.Module, idx: torch.Tensor) -> tuple[torch.Tensor, float]:
        """The loss on the batch, and the KiB that autograd saved for its backward."""
        weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
        storages: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            if storage.data_ptr() not in weights:
                storages[storage.data_ptr()] = storage.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
        return loss, sum(storages.values()) / 1024

    for name in names:
        model = models[name]
        model.cell.vjps = []
        kib = []
        for idx in batches:
            loss, saved = forward_saving(model, idx)
            kib.append(saved)
            model.cell.vjps.append(0)
            model.zero_grad()
            loss.backward()
        backward_vjps[name] = statistics.mean(model.cell.vjps)
        saved_kib[name] = statistics.mean(kib)
        model.cell.vjps = None
        model.zero_grad()

    accuracy, iterations = {}, {}
    for name in names:
        model = models[name]
        train_iters = model.iterations[:step]
        with torch.no_grad():
            model.eval()
            accuracy[name] = float((model(x_test).argmax(1) == y_test).float().mean())
        iterations[name] = statistics.mean(train_iters)

    print(
        f"\n{step} training steps of {args.batch_size} images, {args.threads} thread(s), "
        f"Anderson m={args.memory}, tol {args.tol:g} (relative), max_iter {args.max_iter}\n"
    )
    rows = []
    for name in names:
        rows.append(
            [name]
            + [_bench.fmt_time(statistics.median(times[part][name])) for part in parts]
            + [f"{iterations[name]:.1f}", f"{backward_vjps[name]:.1f}"]
            + [f"{saved_kib[name]:.0f}", f"{accuracy[name]:.3f}"]
        )
    for name, why in status.items():
        rows.append([name, why])
    header = [
        "contender", "forward", "backward", "step", "f evals/batch", "backward VJPs/batch",
        "saved KiB/batch", "test acc",
    ]  # fmt: skip
    print(_bench.table(rows, header))

    ratios = {}
    if "torchdeq" in names:
        for part in parts:
            ratios[f"difopt / torchdeq {part}"] = _bench.ratio(times[part], "difopt", "torchdeq")
    ratios["difopt implicit / unrolled backward"] = _bench.ratio(
        times["backward"], "difopt", "difopt-unrolled"
    )
    ratios["difopt-pure implicit / unrolled backward"] = _bench.ratio(
        times["backward"], "difopt-pure", "difopt-unrolled"
    )
    if "torchdeq" in names:
        ratios["difopt-pure / torchdeq step"] = _bench.ratio(
            times["step"], "difopt-pure", "torchdeq"
        )
    ratios["difopt implicit / unrolled step"] = _bench.ratio(
        times["step"], "difopt", "difopt-unrolled"
    )
    print("\nRatios (median of per-step ratios):")
    for k, r in ratios.items():
        if r is not None:
            print(f"  {k}: {r['value']:.2f}")
    targets = [
        _bench.target(
            "difopt step / torchdeq step",
            ratios.get("difopt / torchdeq step"),
            STEP_TARGET,
            status.get("torchdeq", ""),
        ),
        _bench.target(
            "difopt implicit backward / unrolled backward",
            ratios["difopt implicit / unrolled backward"],
            BACKWARD_TARGET,
        ),
    ]
    _bench.print_targets(targets)
    _bench.write_json(
        NAME,
        {
            "quick": args.quick,
            "config": {k: v for k, v in vars(args).items() if k != "out"},
            "environment": {
                **_bench.environment(args.threads),
                "torchdeq": _bench.dist_version("torchdeq"),
            },
            "checks": checks,
            "accuracy": accuracy,
            "forward_iterations": iterations,
            "backward_vjps": backward_vjps,
            "saved_for_backward_kib": saved_kib,
            "contenders": {
                part: {n: _bench.summary(times[part][n]) for n in names} for part in parts
            },
            "status": status,
            "ratios": ratios,
            "targets": targets,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
