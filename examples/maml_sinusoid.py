"""Few-shot sinusoid regression with MAML, written with difopt.

MAML (Model-Agnostic Meta-Learning, Finn, Abbeel & Levine, 2017) learns an *initialisation*
of a network from which a few gradient steps on a handful of examples (the *support* set)
fit a new task well. Each meta-iteration samples a batch of tasks and, for each task:

1. runs the *inner loop*: a few differentiable optimizer steps on the support loss, starting
   from the shared initialisation (here with ``difopt.MetaSGD`` or ``difopt.MetaAdam``, which
   replace the network's parameters by updated tensors that stay on the autograd graph);
2. evaluates the adapted network on the task's *query* set and back-propagates that loss
   through the inner steps into the initialisation.

The *outer loop* (``difopt.Adam``, the torch.optim-style form) then updates the
initialisation with the accumulated meta-gradient. Before each task the network and the inner
optimizer are snapshotted with ``difopt.extract_state_dict`` and restored afterwards with
``difopt.recover_state_dict``; ``difopt.stop_gradient`` cuts what is left of the graph.

Tasks are synthetic (nothing is downloaded): ``y = A sin(x - phi)`` with amplitude
``A ~ U[0.1, 5]``, phase ``phi ~ U[0, pi]`` and inputs ``x ~ U[-5, 5]``, learned by an MLP
1-40-40-1 with ReLU activations from K = 10 support points.

At the end the meta-learned initialisation is evaluated on held-out test tasks (fixed seed):
the query loss without adaptation, after adaptation, and for a randomly initialised network
adapted the same way. The script exits with status 1 if adaptation from the meta-learned
initialisation is not clearly better than both. A figure with the training curve and a few
adapted test tasks is saved as ``<out>/maml_sinusoid.png``.

Run (about a minute on 2 CPU cores)::

    python examples/maml_sinusoid.py
    python examples/maml_sinusoid.py --inner-opt adam --meta-iters 2000
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import difopt

matplotlib.use("Agg")  # write files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

AMPLITUDE_RANGE = (0.1, 5.0)
PHASE_RANGE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)
TEST_SEED = 20170309  # the held-out test tasks are the same for every run
TEST_QUERY_POINTS = 100
PLOTTED_TASKS = 3
# Adaptation from the meta-learned initialisation must at least halve the un-adapted loss.
REQUIRED_IMPROVEMENT = 0.5


@dataclass(frozen=True)
class Tasks:
    """A batch of ``n`` sinusoid tasks: tensors of shape ``(n,)`` and ``(n, points, 1)``."""

    amplitude: torch.Tensor
    phase: torch.Tensor
    x_support: torch.Tensor
    y_support: torch.Tensor
    x_query: torch.Tensor
    y_query: torch.Tensor

    def __len__(self) -> int:
        return self.amplitude.shape[0]

    def target(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """The true function of task ``i`` at ``x``."""
        return self.amplitude[i] * torch.sin(x - self.phase[i])


def uniform(
    shape: tuple[int, ...], bounds: tuple[float, float], gen: torch.Generator
) -> torch.Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(shape, generator=gen)


def sample_tasks(n: int, k_support: int, k_query: int, gen: torch.Generator) -> Tasks:
    amplitude = uniform((n,), AMPLITUDE_RANGE, gen)
    phase = uniform((n,), PHASE_RANGE, gen)
    x_support = uniform((n, k_support, 1), X_RANGE, gen)
    x_query = uniform((n, k_query, 1), X_RANGE, gen)

    def sine(x: torch.Tensor) -> torch.Tensor:
        return amplitude[:, None, None] * torch.sin(x - phase[:, None, None])

    return Tasks(amplitude, phase, x_support, sine(x_support), x_query, sine(x_query))


def make_net() -> nn.Module:
    return nn.Sequential(
        nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 1)
    )


def make_inner_opt(net: nn.Module, args: argparse.Namespace) -> difopt.MetaOptimizer:
    """The differentiable inner-loop optimizer over ``net``'s parameters."""
    if args.inner_opt == "adam":
        # eps_root > 0 keeps the derivative of sqrt(nu) finite where nu is 0.
        return difopt.MetaAdam(net, lr=args.inner_lr, eps_root=1e-8)
    return difopt.MetaSGD(net, lr=args.inner_lr)


def adapt(
    net: nn.Module, inner_opt: difopt.MetaOptimizer, x: torch.Tensor, y: torch.Tensor, steps: int
) -> None:
    """The inner loop: ``steps`` differentiable steps on the support loss."""
    for _ in range(steps):
        inner_opt.step(F.mse_loss(net(x), y))


def meta_train(
    net: nn.Module, inner_opt: difopt.MetaOptimizer, args: argparse.Namespace, gen: torch.Generator
) -> list[float]:
    """Meta-train ``net``'s initialisation; return the meta-train loss of every iteration."""
    meta_opt = difopt.Adam(net.parameters(), lr=args.outer_lr)
    history: list[float] = []
    running = None
    bar = tqdm(range(args.meta_iters), desc="meta-train", unit="it", mininterval=0.5)
    for iteration in bar:
        tasks = sample_tasks(args.tasks_per_batch, args.k_shot, args.k_query, gen)
        net_state = difopt.extract_state_dict(net)
        inner_state = difopt.extract_state_dict(inner_opt)
        meta_opt.zero_grad()
        meta_loss = 0.0
        for i in range(len(tasks)):
            adapt(net, inner_opt, tasks.x_support[i], tasks.y_support[i], args.inner_steps)
            query_loss = F.mse_loss(net(tasks.x_query[i]), tasks.y_query[i]) / len(tasks)
            query_loss.backward()  # through the inner steps into the initialisation
            meta_loss += query_loss.item()
            difopt.recover_state_dict(net, net_state)
            difopt.recover_state_dict(inner_opt, inner_state)
        meta_opt.step()
        difopt.stop_gradient(net)
        difopt.stop_gradient(inner_opt)

        history.append(meta_loss)
        running = meta_loss if running is None else 0.98 * running + 0.02 * meta_loss
        if iteration % 10 == 0 or iteration == args.meta_iters - 1:
            bar.set_postfix(loss=f"{running:.3f}", refresh=False)
    bar.close()
    return history


def predict(
    net: nn.Module,
    inner_opt: difopt.MetaOptimizer,
    x_support: torch.Tensor,
    y_support: torch.Tensor,
    x: torch.Tensor,
    steps: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions at ``x`` before and after adapting to the support set (then undone)."""
    net_state = difopt.extract_state_dict(net)
    inner_state = difopt.extract_state_dict(inner_opt)
    with torch.no_grad():
        before = net(x)
    adapt(net, inner_opt, x_support, y_support, steps)
    with torch.no_grad():
        after = net(x)
    difopt.recover_state_dict(net, net_state)
    difopt.recover_state_dict(inner_opt, inner_state)
    difopt.stop_gradient(net)
    difopt.stop_gradient(inner_opt)
    return before, after


def evaluate(
    net: nn.Module, inner_opt: difopt.MetaOptimizer, tasks: Tasks, steps: int
) -> tuple[float, float]:
    """Mean query loss over ``tasks`` before and after adaptation."""
    before_total = after_total = 0.0
    for i in range(len(tasks)):
        before, after = predict(
            net, inner_opt, tasks.x_support[i], tasks.y_support[i], tasks.x_query[i], steps
        )
        before_total += F.mse_loss(before, tasks.y_query[i]).item()
        after_total += F.mse_loss(after, tasks.y_query[i]).item()
    return before_total / len(tasks), after_total / len(tasks)


def plot(
    path: Path,
    history: list[float],
    net: nn.Module,
    inner_opt: difopt.MetaOptimizer,
    baseline: nn.Module,
    baseline_opt: difopt.MetaOptimizer,
    tasks: Tasks,
    steps: int,
) -> None:
    fig, axes = plt.subplots(1, 1 + PLOTTED_TASKS, figsize=(4.2 * (1 + PLOTTED_TASKS), 3.8))

    curve = torch.tensor(history)
    window = max(1, min(50, len(history) // 10))
    smooth = curve.unfold(0, window, 1).mean(dim=1)
    axes[0].plot(curve, color="tab:blue", alpha=0.25, linewidth=0.8, label="per iteration")
    axes[0].plot(
        range(window - 1, window - 1 + len(smooth)),
        smooth,
        color="tab:blue",
        label=f"moving average ({window})",
    )
    axes[0].set_yscale("log")
    axes[0].set_xlabel("meta-iteration")
    axes[0].set_ylabel("query MSE after adaptation")
    axes[0].set_title("meta-training")
    axes[0].legend()

    grid = torch.linspace(*X_RANGE, 200).unsqueeze(1)
    for ax, i in zip(axes[1:], range(PLOTTED_TASKS)):
        xs, ys = tasks.x_support[i], tasks.y_support[i]
        before, after = predict(net, inner_opt, xs, ys, grid, steps)
        _, base_after = predict(baseline, baseline_opt, xs, ys, grid, steps)
        ax.plot(grid, tasks.target(i, grid), color="black", label="true function")
        ax.plot(grid, before, "--", color="tab:gray", label="MAML, before adaptation")
        ax.plot(grid, after, color="tab:red", label=f"MAML, after {steps} step(s)")
        ax.plot(grid, base_after, ":", color="tab:green", label="random init, adapted")
        ax.scatter(xs, ys, color="tab:orange", zorder=3, label=f"{len(xs)} support points")
        ax.set_title(f"test task {i}: A={tasks.amplitude[i]:.2f}, phase={tasks.phase[i]:.2f}")
        ax.set_xlabel("x")
    fig.legend(*axes[1].get_legend_handles_labels(), loc="lower center", ncol=5, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Few-shot sinusoid regression with MAML (difopt).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--meta-iters", type=int, default=4000, help="meta-training iterations")
    parser.add_argument("--tasks-per-batch", type=int, default=10, help="tasks per meta-iteration")
    parser.add_argument(
        "--inner-steps", type=int, default=5, help="inner-loop steps, in training and at test time"
    )
    parser.add_argument(
        "--inner-opt",
        choices=("sgd", "adam"),
        default="sgd",
        help="inner optimizer: difopt.MetaSGD or difopt.MetaAdam",
    )
    parser.add_argument("--inner-lr", type=float, default=0.01, help="inner-loop learning rate")
    parser.add_argument("--outer-lr", type=float, default=1e-3, help="meta (outer) learning rate")
    parser.add_argument("--k-shot", type=int, default=10, help="support points per task")
    parser.add_argument(
        "--k-query", type=int, default=10, help="query points per task during meta-training"
    )
    parser.add_argument("--test-tasks", type=int, default=100, help="held-out test tasks")
    parser.add_argument("--seed", type=int, default=0, help="seed of training and initialisation")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads (the matrices are tiny: 1 is as fast as more)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "out",
        help="output folder for the figure",
    )
    args = parser.parse_args()
    for name in (
        "meta_iters",
        "tasks_per_batch",
        "inner_steps",
        "k_shot",
        "k_query",
        "test_tasks",
        "threads",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    net = make_net()
    baseline = make_net()  # same architecture, never meta-trained
    inner_opt = make_inner_opt(net, args)
    baseline_opt = make_inner_opt(baseline, args)
    train_gen = torch.Generator().manual_seed(args.seed)

    print(
        f"MAML on sinusoids: {args.meta_iters} meta-iterations x {args.tasks_per_batch} tasks, "
        f"{args.k_shot}-shot, {args.inner_steps} inner step(s) of "
        f"{'MetaAdam' if args.inner_opt == 'adam' else 'MetaSGD'} (lr {args.inner_lr}), "
        f"{args.threads} thread(s)",
        flush=True,
    )
    start = time.perf_counter()
    history = meta_train(net, inner_opt, args, train_gen)
    print(f"meta-training took {time.perf_counter() - start:.1f} s")

    test_tasks = sample_tasks(
        args.test_tasks, args.k_shot, TEST_QUERY_POINTS, torch.Generator().manual_seed(TEST_SEED)
    )
    unadapted, adapted = evaluate(net, inner_opt, test_tasks, args.inner_steps)
    _, baseline_adapted = evaluate(baseline, baseline_opt, test_tasks, args.inner_steps)
    print(
        f"meta-test loss ({args.test_tasks} tasks, {TEST_QUERY_POINTS} query points each): "
        f"unadapted {unadapted:.3f}, adapted {adapted:.3f}, "
        f"baseline (random init, adapted) {baseline_adapted:.3f}"
    )

    figure = args.out / "maml_sinusoid.png"
    plot(figure, history, net, inner_opt, baseline, baseline_opt, test_tasks, args.inner_steps)
    print(f"figure saved to {figure}")

    failures = []
    if not adapted < REQUIRED_IMPROVEMENT * unadapted:
        failures.append(
            f"the adapted loss {adapted:.3f} is not below {REQUIRED_IMPROVEMENT} x "
            f"the unadapted loss {unadapted:.3f}"
        )
    if not adapted < baseline_adapted:
        failures.append(
            f"the adapted loss {adapted:.3f} is not below the baseline's {baseline_adapted:.3f}"
        )
    if failures:
        print(
            "FAILED: MAML did not learn to adapt: "
            + "; ".join(failures)
            + ". Try more --meta-iters.",
            file=sys.stderr,
        )
        return 1
    print(
        "OK: the meta-learned initialisation adapts to new tasks from "
        f"{args.k_shot} points ({unadapted / adapted:.1f}x lower loss after adaptation)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
