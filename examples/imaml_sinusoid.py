"""Few-shot sinusoid regression with iMAML (implicit MAML), written with difopt-implicit.

iMAML (Rajeswaran, Finn, Kakade & Levine, 2019) learns an initialisation ``phi`` like MAML,
but each task's adapted parameters are the solution of a *proximal* inner problem

    theta*(phi) = argmin_theta  L_support(theta) + reg / 2 * |theta - phi|^2,

and the meta-gradient of the query loss goes through ``theta*(phi)`` by the implicit function
theorem instead of back-propagating through the inner steps: memory does not grow with the
number of inner steps, and the inner solver can be anything. Here:

1. ``InnerNet`` is a ``difopt.nn.ImplicitMetaGradientModule``: the meta-network given to its
   constructor is a meta-module (its parameters are ``phi``), its own copy holds ``theta``;
   ``objective`` is the proximal inner loss, so the optimality condition is its gradient, and
   ``solve`` runs a few steps of plain gradient descent on it. With ``reg = 10`` the proximal
   term dominates the curvature of the support loss, so 20 steps of size 0.01 shrink the
   distance to ``theta*`` about 8x (0.9 ** 20) where it does (the implicit gradient assumes
   ``theta*`` is reached), and the CG system ``H + reg I`` below is well conditioned. A
   step-size-normalizing
   inner optimizer (Adam) or a weak ``reg`` (1) let meta-training drift to initialisations
   whose un-adapted loss explodes or whose inner problem the solver does not solve; so does an
   outer learning rate above 1e-3 (3e-3 reaches non-finite inner solves within 2000
   iterations).
2. The backward pass solves ``(H + reg I) u = g`` with conjugate gradient
   (``difopt.linear_solve.solve_cg(maxiter=...)``; the system is symmetric), using
   Hessian-vector products only.
3. The outer loop (``difopt.Adam``) updates ``phi``.

Tasks are synthetic (nothing is downloaded): ``y = A sin(x - p)`` with ``A ~ U[0.1, 5]``,
``p ~ U[0, pi]``, ``x ~ U[-5, 5]``; an MLP 1-40-40-1 learns from K = 10 support points.

At the end the meta-learned initialisation is evaluated on held-out test tasks (fixed seed):
the query loss without adaptation, after adaptation, and for a randomly initialised network
adapted the same way. The script exits with status 1 if adaptation from the meta-learned
initialisation is not clearly better than both.

Run (about 1.5 minutes on a busy 2-core machine)::

    python examples/imaml_sinusoid.py
    python examples/imaml_sinusoid.py --help    # the training budget and inner-solver settings

(Shorter budgets do not pass the final check: 1000 meta-iterations, with ``--reg 5.0`` or
without, leave the adapted loss above half the un-adapted one.)
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import difopt

AMPLITUDE_RANGE = (0.1, 5.0)
PHASE_RANGE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)
TEST_SEED = 20190910  # the held-out test tasks are the same for every run
TEST_QUERY_POINTS = 100
# Adaptation from the meta-learned initialisation must at least halve the un-adapted loss.
REQUIRED_IMPROVEMENT = 2.0


def make_net() -> nn.Module:
    return nn.Sequential(
        nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 1)
    )


def sample_task(
    generator: torch.Generator, k_shot: int, k_query: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Support and query points ``(x, y)`` of one random sine wave."""
    amplitude = torch.empty(()).uniform_(*AMPLITUDE_RANGE, generator=generator)
    phase = torch.empty(()).uniform_(*PHASE_RANGE, generator=generator)
    x = torch.empty(k_shot + k_query, 1).uniform_(*X_RANGE, generator=generator)
    y = amplitude * torch.sin(x - phase)
    return x[:k_shot], y[:k_shot], x[k_shot:], y[k_shot:]


class InnerNet(difopt.nn.ImplicitMetaGradientModule):
    """One task's network: its parameters ``theta`` are fitted by :meth:`solve` near ``phi``."""

    def __init__(self, meta_net: nn.Module, steps: int, lr: float, reg: float) -> None:
        super().__init__()
        self.meta_net = meta_net  # a constructor argument: a meta-module (phi)
        self.net = copy.deepcopy(meta_net)  # theta, initialised at phi
        self.steps, self.lr, self.reg = steps, lr, reg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def objective(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        distance = sum(
            ((theta - phi) ** 2).sum()
            for theta, phi in zip(self.net.parameters(), self.meta_net.parameters())
        )
        return F.mse_loss(self.net(x), y) + 0.5 * self.reg * distance

    def solve(self, x: torch.Tensor, y: torch.Tensor) -> None:
        params = list(self.net.parameters())
        for _ in range(self.steps):  # plain gradient descent on the proximal objective
            with torch.enable_grad():  # solve() runs without grad, as in TorchOpt
                grads = torch.autograd.grad(self.objective(x, y), params)
            torch._foreach_add_(params, grads, alpha=-self.lr)


def make_inner_class(cg_steps: int) -> type[InnerNet]:
    """``InnerNet`` with the backward pass's linear solver chosen on the command line."""

    class Inner(InnerNet, linear_solve=difopt.linear_solve.solve_cg(maxiter=cg_steps)):
        pass

    return Inner


def evaluate(
    meta_net: nn.Module, inner_cls: type[InnerNet], args: argparse.Namespace, adapt: bool
) -> float:
    """Mean query loss over the held-out test tasks, with or without adaptation."""
    generator = torch.Generator().manual_seed(TEST_SEED)
    total = 0.0
    for _ in range(args.test_tasks):
        xs, ys, xq, yq = sample_task(generator, args.k_shot, TEST_QUERY_POINTS)
        inner = inner_cls(meta_net, args.inner_steps, args.inner_lr, args.reg)
        if adapt:
            inner.solve(xs, ys)
        with torch.no_grad():
            total += float(F.mse_loss(inner(xq), yq))
    return total / args.test_tasks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meta-iters", type=int, default=2000, help="meta-training iterations")
    parser.add_argument("--tasks-per-batch", type=int, default=5, help="tasks per meta-iteration")
    parser.add_argument("--inner-steps", type=int, default=20, help="gradient steps of solve()")
    parser.add_argument(
        "--inner-lr", type=float, default=0.01, help="gradient-descent step size of solve()"
    )
    parser.add_argument("--reg", type=float, default=10.0, help="proximal strength (lambda)")
    parser.add_argument("--cg-steps", type=int, default=5, help="CG iterations of the backward")
    parser.add_argument("--outer-lr", type=float, default=1e-3, help="outer Adam learning rate")
    parser.add_argument("--k-shot", type=int, default=10, help="support points per task")
    parser.add_argument("--k-query", type=int, default=10, help="query points per training task")
    parser.add_argument("--test-tasks", type=int, default=100, help="held-out test tasks")
    parser.add_argument("--seed", type=int, default=0, help="seed of tasks and initialisations")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    for name in (
        "meta_iters",
        "tasks_per_batch",
        "inner_steps",
        "cg_steps",
        "k_shot",
        "test_tasks",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")

    # iMAML truncates CG to a few iterations on purpose (the paper uses about 5): the
    # backward's linear solve is approximate by design, so its warning is expected here.
    warnings.filterwarnings("ignore", category=difopt.linalg.ConvergenceWarning)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    meta_net = make_net()
    baseline_net = make_net()  # same architecture, never meta-trained
    inner_cls = make_inner_class(args.cg_steps)
    meta_optimizer = difopt.Adam(meta_net.parameters(), lr=args.outer_lr)

    print(
        f"iMAML on sinusoids: {args.meta_iters} meta-iterations x {args.tasks_per_batch} tasks, "
        f"{args.k_shot}-shot, {args.inner_steps} inner gradient step(s) (lr {args.inner_lr}), "
        f"reg {args.reg}, {args.cg_steps} CG step(s), {args.threads} thread(s)"
    )
    start = time.perf_counter()
    progress = tqdm(range(args.meta_iters), desc="meta-train")
    running = None
    for _ in progress:
        meta_optimizer.zero_grad()
        batch_loss = 0.0
        for _ in range(args.tasks_per_batch):
            xs, ys, xq, yq = sample_task(generator, args.k_shot, args.k_query)
            inner = inner_cls(meta_net, args.inner_steps, args.inner_lr, args.reg)
            inner.solve(xs, ys)
            loss = F.mse_loss(inner(xq), yq) / args.tasks_per_batch
            loss.backward()  # implicit meta-gradient into meta_net's parameters
            batch_loss += float(loss.detach())
        meta_optimizer.step()
        running = batch_loss if running is None else 0.98 * running + 0.02 * batch_loss
        progress.set_postfix(loss=f"{running:.3f}")
    print(f"meta-training took {time.perf_counter() - start:.1f} s")

    unadapted = evaluate(meta_net, inner_cls, args, adapt=False)
    adapted = evaluate(meta_net, inner_cls, args, adapt=True)
    baseline = evaluate(baseline_net, inner_cls, args, adapt=True)
    print(
        f"meta-test loss ({args.test_tasks} tasks, {TEST_QUERY_POINTS} query points each): "
        f"unadapted {unadapted:.3f}, adapted {adapted:.3f}, "
        f"baseline (random init, adapted) {baseline:.3f}"
    )
    if not (adapted * REQUIRED_IMPROVEMENT <= unadapted and adapted < baseline):
        print(
            "FAILED: adaptation from the meta-learned initialisation is not clearly better "
            "(see --help for the training budget and the inner-solver settings)",
            file=sys.stderr,
        )
        return 1
    print(
        f"OK: the meta-learned initialisation adapts to new tasks from {args.k_shot} points "
        f"({unadapted / adapted:.1f}x lower loss after adaptation)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
