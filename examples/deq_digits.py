"""A deep-equilibrium (DEQ) classifier of handwritten digits, trained on the CPU.

The data are scikit-learn's bundled 8x8 digits (1797 images, no download), split 80/20 into
train and test sets with a fixed seed and standardised. The model is

    x = encoder(image)                      # Linear 64 -> hidden
    z* = f(z*, x) = tanh(W z* + x)          # the equilibrium, solved by difopt.diff.implicit
    logits = head(z*)                       # Linear hidden -> 10

where ``f`` is an ``nn.Module`` wrapped in ``difopt.diff.implicit.DEQ``: Anderson acceleration
finds ``z*`` for every image of a batch (each image stops on its own residual), and the
gradient reaches ``W``, the encoder and the head through the implicit function theorem (the
adjoint fixed point is solved by the same Anderson solver), not by back-propagating through
the iterations. ``--solver`` and ``--backward`` pick the other solvers and backward modes.

Each epoch prints the training loss, the test accuracy and the mean number of forward
iterations. A figure with the residual per iteration (the trained model on the test set,
Anderson against plain Picard iteration) and the training curve is saved as
``<out>/deq_digits.png``. The script exits with status 1 if the test accuracy is below
``--min-accuracy`` (default 0.9; a linear classifier gets about 0.95) or if more than 5 % of
the test solves did not converge.

Run (10 epochs take about 10 s of training on one busy CPU core, 20 s in all)::

    python examples/deq_digits.py
    python examples/deq_digits.py --solver broyden --backward phantom --epochs 5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import matplotlib
import torch
from sklearn.datasets import load_digits
from torch import nn
from tqdm import tqdm

import difopt

matplotlib.use("Agg")  # write files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)


class Cell(nn.Module):
    """The equilibrium map ``f(z, x) = tanh(W z + x)``."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.W = nn.Linear(hidden, hidden, bias=False)
        with torch.no_grad():  # start well inside the contractive regime
            self.W.weight.mul_(0.5)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.W(z) + x)


class DEQClassifier(nn.Module):
    def __init__(self, hidden: int, deq_options: dict[str, object]) -> None:
        super().__init__()
        self.encoder = nn.Linear(64, hidden)
        self.deq = difopt.diff.implicit.DEQ(Cell(hidden), **deq_options)
        self.head = nn.Linear(hidden, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.encoder(images)
        return self.head(self.deq(torch.zeros_like(x), x))


def load(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    digits = load_digits()
    images = torch.tensor(digits.data, dtype=torch.float32)
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_train = int(0.8 * len(labels))
    train, test = order[:n_train], order[n_train:]
    mean, std = images[train].mean(0), images[train].std(0) + 1.0
    images = (images - mean) / std
    return images[train], labels[train], images[test], labels[test]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--solver", choices=["anderson", "broyden", "picard"], default="anderson")
    p.add_argument("--memory", type=int, default=5, help="Anderson memory m")
    p.add_argument(
        "--backward", choices=["implicit", "phantom", "jfb", "unrolled"], default="implicit"
    )
    p.add_argument("--tol", type=float, default=1e-4, help="relative residual tolerance")
    p.add_argument("--max-iter", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--min-accuracy", type=float, default=0.9)
    p.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "out", help="figure folder"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    implicit = difopt.diff.implicit
    solver = {
        "anderson": implicit.Anderson(m=args.memory),
        "broyden": implicit.Broyden(),
        "picard": implicit.Picard(),
    }[args.solver]
    options: dict[str, object] = dict(
        solver=solver, backward=args.backward, tol=args.tol, max_iter=args.max_iter
    )
    options["stop_mode"] = "rel"
    x_train, y_train, x_test, y_test = load(args.seed)
    model = DEQClassifier(args.hidden, options)
    optimizer = difopt.Adam(model.parameters(), lr=args.lr)
    print(
        f"DEQ on digits: {len(y_train)} train / {len(y_test)} test images, hidden {args.hidden}, "
        f"solver {solver!r}, backward {args.backward!r}, tol {args.tol:g} (relative), "
        f"{args.epochs} epochs"
    )

    def evaluate() -> tuple[float, float]:
        with torch.no_grad():
            logits = model(x_test)
        info = model.deq.info
        assert info is not None
        acc = float((logits.argmax(1) == y_test).float().mean())
        return acc, float(info.converged.float().mean())

    losses, accuracies, iterations = [], [], []
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(y_train))
        total, iters = 0.0, []
        batches = range(0, len(order), args.batch_size)
        bar = tqdm(batches, desc=f"epoch {epoch}/{args.epochs}", unit="batch", leave=False)
        for i in bar:
            idx = order[i : i + args.batch_size]
            loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            info = model.deq.info
            assert info is not None
            iters.append(float(info.iterations.float().mean()))
            total += loss.item() * len(idx)
            bar.set_postfix(loss=f"{loss.item():.3f}", iters=f"{iters[-1]:.1f}")
        acc, converged = evaluate()
        losses.append(total / len(y_train))
        accuracies.append(acc)
        iterations.append(sum(iters) / len(iters))
        print(
            f"epoch {epoch:2d}: train loss {losses[-1]:.4f}  test accuracy {acc:.3f}  "
            f"forward iterations {iterations[-1]:.1f} (mean per sample)  "
            f"test solves converged {converged:.0%}"
        )
    elapsed = time.perf_counter() - start
    print(f"trained in {elapsed:.1f} s ({elapsed / args.epochs:.2f} s per epoch)")

    # Residual per iteration of the trained model on the test set: Anderson vs plain Picard.
    with torch.no_grad():
        x = model.encoder(x_test)
        traces = {}
        for name, s in [("Anderson (m=%d)" % args.memory, implicit.Anderson(m=args.memory)),
                        ("Picard", implicit.Picard())]:  # fmt: skip
            _, info = implicit.fixed_point(
                model.deq.f, torch.zeros_like(x), x, solver=s, tol=1e-5, max_iter=100,
                stop_mode="rel", batched=True,
            )  # fmt: skip
            traces[name] = info.trace.mean(1)

    args.out.mkdir(parents=True, exist_ok=True)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, trace in traces.items():
        ax1.semilogy(trace.numpy(), label=name)
    ax1.axhline(args.tol, color="k", ls=":", label=f"training tol {args.tol:g}")
    ax1.set_xlabel("forward iteration")
    ax1.set_ylabel("||f(z) - z|| / ||f(z)||, mean over test images")
    ax1.set_title("equilibrium solve of the trained DEQ (tol 1e-5)")
    ax1.legend()
    ax1.grid(alpha=0.3)
    epochs = range(1, args.epochs + 1)
    ax2.plot(epochs, losses, "o-", label="train loss")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("cross-entropy")
    ax2.grid(alpha=0.3)
    ax3 = ax2.twinx()
    ax3.plot(epochs, accuracies, "s-", color="tab:green", label="test accuracy")
    ax3.set_ylabel("test accuracy")
    ax2.set_title(f"training ({args.backward} backward): test accuracy {accuracies[-1]:.3f}")
    handles = ax2.get_legend_handles_labels()[0] + ax3.get_legend_handles_labels()[0]
    ax2.legend(handles=handles, loc="center right")
    fig.tight_layout()
    path = args.out / "deq_digits.png"
    fig.savefig(path, dpi=120)
    print(f"figure saved to {path}")

    if accuracies[-1] < args.min_accuracy:
        print(f"FAILED: test accuracy {accuracies[-1]:.3f} < {args.min_accuracy}", file=sys.stderr)
        return 1
    if converged < 0.95:
        print(f"FAILED: only {converged:.0%} of the test solves converged", file=sys.stderr)
        return 1
    print(
        f"OK: the DEQ learned the digits (test accuracy {accuracies[-1]:.3f} >= "
        f"{args.min_accuracy}, {iterations[-1]:.1f} forward iterations per sample)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
