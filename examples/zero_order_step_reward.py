"""Learning a policy through a non-differentiable reward with zero-order gradients.

A linear policy maps a 2-D observation (a point in the plane) to an action in {-1, +1} by
thresholding: ``action = sign(obs @ w + b)``. The reward is a step function: +1 when the action
agrees with the label of the point (which side of a fixed, unknown line it lies on), 0
otherwise. The objective, the mean reward over a batch of 256 points, is piecewise constant in
``(w, b)``: its gradient is zero almost everywhere, and autograd does not even build a graph
through the comparison (checked below), so ordinary back-propagation cannot learn anything.

``difopt.diff.zero_order`` estimates the gradient of the Gaussian-smoothed objective from
reward values only (evolution strategies, antithetic sampling, all perturbations evaluated in
one ``torch.func.vmap`` call), and a ``difopt.Adam`` step ascends it. The accuracy climbs from
below chance (the initial policy is mostly wrong) to near 100 %.

A figure with the objective (mean reward) per step and the learned decision boundary is saved
as ``<out>/zero_order_step_reward.png``. The script exits with status 1 if the final accuracy
is below ``--min-accuracy``.

Run (a few seconds on a CPU)::

    python examples/zero_order_step_reward.py
    python examples/zero_order_step_reward.py --method naive --steps 600
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib
import torch
from tqdm import tqdm

import difopt

matplotlib.use("Agg")  # write files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

TRUE_NORMAL = (1.5, -1.0)  # the unknown separating line: 1.5 x - y + 0.3 = 0
TRUE_OFFSET = 0.3


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points in [-2, 2]^2 and their labels (+1 / -1) by side of the true line."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(n, 2, generator=g) * 4 - 2
    labels = torch.sign(obs @ torch.tensor(TRUE_NORMAL) + TRUE_OFFSET)
    return obs, labels


def mean_reward(
    policy: dict[str, torch.Tensor], obs: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Step-function reward: 1 for each correct action, 0 otherwise (non-differentiable)."""
    actions = torch.sign(obs @ policy["w"] + policy["b"])
    return (actions == labels).to(obs.dtype).mean()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300, help="ES steps")
    p.add_argument("--samples", type=int, default=32, help="perturbations per step")
    p.add_argument("--sigma", type=float, default=0.3, help="smoothing radius")
    p.add_argument("--lr", type=float, default=0.05, help="Adam learning rate")
    p.add_argument("--method", choices=["naive", "forward", "antithetic"], default="antithetic")
    p.add_argument("--points", type=int, default=256, help="training points")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the noise")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--min-accuracy", type=float, default=0.9)
    p.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "out", help="figure folder"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    obs, labels = make_data(args.points, args.seed)
    test_obs, test_labels = make_data(2000, args.seed + 1)
    # Start from a policy that is mostly wrong (the boundary tilted the other way).
    policy = {"w": torch.tensor([-1.0, -0.5]), "b": torch.tensor(0.5)}
    policy = {k: v.requires_grad_() for k, v in policy.items()}

    plain = mean_reward(policy, obs, labels)
    print(f"plain autograd: the reward has requires_grad={plain.requires_grad} (no gradient)")

    @difopt.diff.zero_order(
        torch.distributions.Normal(0.0, 1.0),
        method=args.method,
        num_samples=args.samples,
        sigma=args.sigma,
        generator=args.seed,
        vectorize=True,
    )
    def objective(
        policy: dict[str, torch.Tensor], obs: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        # Maximize the reward = minimize its negative.
        return -mean_reward(policy, obs, labels)

    optimizer = difopt.adam(lr=args.lr)
    state = optimizer.init(policy)
    history = []
    bar = tqdm(range(args.steps), desc="ES", unit="step")
    for _ in bar:
        loss = objective(policy, obs, labels)
        grads = torch.autograd.grad(loss, list(policy.values()))
        updates, state = optimizer.update(dict(zip(policy, grads)), state, inplace=False)
        policy = difopt.apply_updates(policy, updates, inplace=False)
        policy = {k: v.detach().requires_grad_() for k, v in policy.items()}
        history.append(-float(loss.detach()))
        bar.set_postfix(reward=f"{history[-1]:.3f}")

    with torch.no_grad():
        train_acc = float(mean_reward(policy, obs, labels))
        test_acc = float(mean_reward(policy, test_obs, test_labels))
    print(
        f"mean reward (accuracy): start {history[0]:.3f}, train {train_acc:.3f}, test {test_acc:.3f}"
    )

    args.out.mkdir(parents=True, exist_ok=True)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(history)
    ax1.set_xlabel("ES step")
    ax1.set_ylabel("mean step reward (objective)")
    ax1.set_title(f"zero_order({args.method!r}, {args.samples} samples, sigma={args.sigma})")
    ax1.grid(alpha=0.3)
    colors = ["tab:red" if lab < 0 else "tab:blue" for lab in labels.tolist()]
    ax2.scatter(obs[:, 0], obs[:, 1], c=colors, s=8)
    xs = torch.linspace(-2, 2, 2)
    w, b = policy["w"].detach(), float(policy["b"].detach())
    ax2.plot(
        xs, (TRUE_NORMAL[0] * xs + TRUE_OFFSET) / -TRUE_NORMAL[1], "k--", label="true boundary"
    )
    if abs(float(w[1])) > 1e-8:
        ax2.plot(xs, -(float(w[0]) * xs + b) / float(w[1]), "g-", label="learned boundary")
    ax2.set_xlim(-2, 2)
    ax2.set_ylim(-2, 2)
    ax2.legend(loc="lower right")
    ax2.set_title(f"test accuracy {test_acc:.3f}")
    fig.tight_layout()
    path = args.out / "zero_order_step_reward.png"
    fig.savefig(path, dpi=120)
    print(f"figure saved to {path}")

    if test_acc < args.min_accuracy:
        print(f"FAILED: test accuracy {test_acc:.3f} < {args.min_accuracy}", file=sys.stderr)
        return 1
    print(f"OK: learned through a step-function reward (test accuracy {test_acc:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
