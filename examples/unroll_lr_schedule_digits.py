"""Learning a per-step learning-rate schedule through 500 inner steps with difopt-unroll.

An MLP 64-128-10 is trained on scikit-learn's bundled digits data set (8x8 images, no
download) by K = 500 steps of SGD with momentum on mini-batches of 32 sampled inside the step.
Its learning rate at step k is ``lr_k = exp(interp(k, knots, log_lr))``: a piecewise-linear
log-schedule through 11 knots. The meta-objective is the validation loss after the K steps;
its gradient with respect to the 11 knot values flows through all 500 steps (exact
meta-gradient) and is computed by ``difopt_unroll.unroll`` with a checkpoint policy
(``--policy``, default binomial with 12 stored steps), so its memory does not grow with K.
Sampling the batches with torch's random generator inside the step shows that the
recomputations replay randomness exactly.

The schedule starts flat and too small (``--init-lr``); twenty meta-steps of Adam on
``log_lr`` raise it where it helps. The script then trains fresh networks with the initial and
the learned schedules and compares their validation losses (it exits with status 1 if the
learned schedule is not better), writes ``<out>/unroll_lr_schedule_digits.png`` (the schedule
and the validation curves), and measures the peak memory of one meta-gradient with the chosen
policy and with the plain unroll (``policy="none"``), each in a fresh subprocess (peak
resident set size during the meta-gradient minus the resident size before it).

Run (about two minutes on one CPU core; `--steps 100` for a quick look)::

    python examples/unroll_lr_schedule_digits.py
    python examples/unroll_lr_schedule_digits.py --policy sqrt --meta-iters 40
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import matplotlib
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits  # type: ignore[import-untyped]
from tqdm import tqdm  # type: ignore[import-untyped]

import difopt
import difopt_unroll

matplotlib.use("Agg")  # write files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

HIDDEN = 128
BATCH = 32
KNOTS = 11


def load(seed: int) -> tuple[torch.Tensor, ...]:
    """Standardised digits, split 1200 train / 597 validation."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    mean, std = x[:1200].mean(0), x[:1200].std(0) + 1.0
    x = (x - mean) / std
    return x[:1200], y[:1200], x[1200:], y[1200:]


def init_params(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "w1": torch.randn(64, HIDDEN, generator=g) / 8.0,
        "b1": torch.zeros(HIDDEN),
        "w2": torch.randn(HIDDEN, 10, generator=g) / HIDDEN**0.5,
        "b2": torch.zeros(10),
    }


def forward(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return torch.relu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


def schedule(log_lr: torch.Tensor, steps: int) -> torch.Tensor:
    """Per-step learning rates: exp of the piecewise-linear interpolation of ``log_lr``."""
    pos = torch.linspace(0, KNOTS - 1, steps)
    lo = pos.floor().long().clamp(max=KNOTS - 2)
    frac = pos - lo
    return torch.exp(log_lr[lo] * (1 - frac) + log_lr[lo + 1] * frac)


def make_step(train_x: torch.Tensor, train_y: torch.Tensor, lrs: torch.Tensor) -> Any:
    """One inner step: sample a mini-batch, SGD-momentum direction, scale by ``lrs[k]``."""
    momentum = difopt.sgd(lr=1.0, momentum=0.9)  # updates = -(momentum buffer)

    def step(params: Any, state: Any, k: int) -> tuple[Any, Any, torch.Tensor]:
        idx = torch.randint(0, len(train_x), (BATCH,))
        loss = F.cross_entropy(forward(params, train_x[idx]), train_y[idx])
        grads = difopt_unroll.inner_grad(loss, params)
        updates, state = momentum.update(grads, state, params=params, inplace=False)
        params = {n: params[n] + lrs[k] * updates[n] for n in params}
        return params, state, loss

    return step, momentum


def meta_gradient(
    log_lr: torch.Tensor, data: tuple[torch.Tensor, ...], args: Any, seed: int
) -> tuple[torch.Tensor, float]:
    train_x, train_y, val_x, val_y = data
    lrs = schedule(log_lr, args.steps)
    step, momentum = make_step(train_x, train_y, lrs)
    params = init_params(seed)
    torch.manual_seed(seed)
    kwargs = {"policy": "sqrt"} if args.policy == "sqrt" else {"policy": args.policy}
    if args.policy == "binomial":
        kwargs["budget"] = args.budget
    out = difopt_unroll.unroll(
        step, params, momentum.init(params), args.steps, meta_params=lrs, **kwargs
    )
    val = F.cross_entropy(forward(out.params, val_x), val_y)
    (grad,) = torch.autograd.grad(val, log_lr)
    return grad, val.item()


def train_curve(
    log_lr: torch.Tensor, data: tuple[torch.Tensor, ...], steps: int, seed: int
) -> list[float]:
    """Validation loss every 10 steps of training a fresh network with the schedule."""
    train_x, train_y, val_x, val_y = data
    lrs = schedule(log_lr.detach(), steps)
    step, momentum = make_step(train_x, train_y, lrs)
    params = {n: v.requires_grad_() for n, v in init_params(seed).items()}
    state = momentum.init(params)
    torch.manual_seed(seed)
    curve = []
    for k in range(steps):
        if k % 10 == 0:
            with torch.no_grad():
                curve.append(F.cross_entropy(forward(params, val_x), val_y).item())
        params, state, _ = step(params, state, k)
        params = {n: v.detach().requires_grad_() for n, v in params.items()}
        state = difopt.pytree.tree_map(
            lambda t: t.detach() if torch.is_tensor(t) else t, state, namespace="difopt"
        )
    with torch.no_grad():
        curve.append(F.cross_entropy(forward(params, val_x), val_y).item())
    return curve


def measure_memory(args: Any, policy: str) -> float | None:
    """Peak memory (MiB) of one meta-gradient with ``policy``, in a fresh subprocess."""
    cmd = [
        sys.executable,
        __file__,
        "--measure-memory",
        policy,
        *("--steps", str(args.steps), "--budget", str(args.budget)),
        *("--threads", str(args.threads)),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(f"memory measurement with policy={policy!r} failed:\n{proc.stderr[-2000:]}")
        return None
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["peak_mib"])


def _status(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def memory_worker(args: Any) -> None:
    data = load(args.seed)
    log_lr = torch.full((KNOTS,), float(torch.tensor(args.init_lr).log()), requires_grad=True)
    small = argparse.Namespace(**{**vars(args), "steps": 3})
    meta_gradient(log_lr, data, small, args.seed)  # warm-up
    base = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak resident set size
        f.write("5")
    meta_gradient(log_lr, data, args, args.seed)
    print(json.dumps({"peak_mib": _status("VmHWM") - base}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=500, help="inner steps K")
    p.add_argument("--meta-iters", type=int, default=20, help="meta-training iterations")
    p.add_argument("--meta-lr", type=float, default=0.1, help="Adam lr on the log-schedule")
    p.add_argument("--init-lr", type=float, default=0.005, help="initial flat learning rate")
    p.add_argument("--policy", choices=["binomial", "sqrt", "none"], default="binomial")
    p.add_argument("--budget", type=int, default=12, help="stored steps (binomial policy)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    p.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    p.add_argument("--measure-memory", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.measure_memory:
        args.policy = args.measure_memory
        memory_worker(args)
        return 0

    data = load(args.seed)
    init = torch.full((KNOTS,), float(torch.tensor(args.init_lr).log()))
    log_lr = init.clone().requires_grad_()
    meta_opt = difopt.Adam([log_lr], lr=args.meta_lr)
    bar = tqdm(range(args.meta_iters), desc=f"meta-training (K={args.steps}, {args.policy})")
    for it in bar:
        grad, val = meta_gradient(log_lr, data, args, seed=1000 + it)
        log_lr.grad = grad
        meta_opt.step()
        bar.set_postfix(val_loss=f"{val:.3f}", mean_lr=f"{schedule(log_lr, 50).mean():.3f}")

    seeds = [args.seed + 1, args.seed + 2, args.seed + 3]  # fresh networks, not meta-trained
    before = [train_curve(init, data, args.steps, s) for s in seeds]
    after = [train_curve(log_lr, data, args.steps, s) for s in seeds]
    final_before = sum(c[-1] for c in before) / len(seeds)
    final_after = sum(c[-1] for c in after) / len(seeds)

    args.out.mkdir(parents=True, exist_ok=True)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ks = torch.arange(args.steps)
    ax1.plot(ks, schedule(init, args.steps), label="initial")
    ax1.plot(ks, schedule(log_lr.detach(), args.steps), label="learned")
    ax1.set(xlabel="inner step", ylabel="learning rate", yscale="log", title="schedule")
    ax1.legend()
    xs = list(range(0, args.steps, 10)) + [args.steps]
    for curves, label in ((before, "initial schedule"), (after, "learned schedule")):
        mean = [sum(c[i] for c in curves) / len(curves) for i in range(len(xs))]
        ax2.plot(xs, mean, label=label)
    ax2.set(xlabel="inner step", ylabel="validation loss", title="fresh networks (3 seeds)")
    ax2.legend()
    fig.tight_layout()
    png = args.out / "unroll_lr_schedule_digits.png"
    fig.savefig(png, dpi=100)
    print(f"wrote {png}")
    print(
        f"validation loss after {args.steps} steps: initial schedule {final_before:.4f}, "
        f"learned schedule {final_after:.4f}"
    )

    if not args.no_memory:
        chosen = measure_memory(args, args.policy)
        plain = measure_memory(args, "none")
        label = f"binomial, budget {args.budget}" if args.policy == "binomial" else args.policy
        if chosen is not None and plain is not None:
            print(
                f"peak memory of one meta-gradient (K={args.steps}): {label}: {chosen:.1f} MiB, "
                f"plain unroll: {plain:.1f} MiB ({chosen / max(plain, 1e-9):.2f}x)"
            )
    if not final_after < final_before:
        print("FAILED: the learned schedule did not improve the validation loss")
        return 1
    print(
        f"OK: the learned schedule lowers the validation loss after {args.steps} steps from "
        f"{final_before:.4f} to {final_after:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
