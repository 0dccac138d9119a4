"""Draw the autograd graph of one MAML meta-step with difopt-visual.

One meta-step of MAML (Finn et al., 2017) on a sinusoid task: two differentiable inner steps
of ``difopt.MetaSGD`` adapt a small MLP to the task's support points, then the query loss of
the adapted network is differentiated back into the initialisation. The script draws that
graph twice and prints its summary:

- ``maml_step.svg`` / ``maml_step.png``: every autograd node; the initial parameters (the
  meta-parameters MAML learns) in light blue with their names, the adapted parameters after
  the last inner step in gold;
- ``maml_step_collapsed.svg`` / ``maml_step_collapsed.png``: each inner step folded into
  one cluster (``collapse_steps=True``), which is what to look at for long unrolls.

Needs difopt-core, difopt-visual and the Graphviz ``dot`` program (``apt-get install
graphviz``). Run from the repository root::

    python examples/visualize.py            # writes into examples/out/
    python examples/visualize.py --out /tmp/graphs --inner-steps 3
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import difopt
import difopt_visual


def sine_task(gen: torch.Generator, points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``points`` samples of ``A sin(x - phi)`` with random amplitude and phase."""
    amplitude = 0.1 + 4.9 * torch.rand((), generator=gen)
    phase = math.pi * torch.rand((), generator=gen)
    x = -5 + 10 * torch.rand(points, 1, generator=gen)
    return x, amplitude * torch.sin(x - phase)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument("--inner-steps", type=int, default=2, help="inner MetaSGD steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.inner_steps < 1:
        parser.error(f"--inner-steps must be at least 1, got {args.inner_steps}")
    if shutil.which("dot") is None:
        print(
            "FAILED: the Graphviz `dot` program is not on PATH; install it "
            "(Debian/Ubuntu: apt-get install graphviz) to render the graphs",
            file=sys.stderr,
        )
        return 1

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    net = nn.Sequential(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 1))
    inner_opt = difopt.MetaSGD(net, lr=0.01)
    x_support, y_support = sine_task(gen, 10)
    x_query, y_query = x_support + 0.5, y_support  # same task, shifted points suffice here

    # Snapshots name the tensors: the initialisation, and the parameters after adaptation.
    initial = difopt.extract_state_dict(net, enable_visual=True, visual_prefix="init.")
    with difopt_visual.record_steps(inner_opt):
        for _ in range(args.inner_steps):
            inner_opt.step(F.mse_loss(net(x_support), y_support))
    adapted = difopt.extract_state_dict(
        net, enable_visual=True, visual_prefix=f"step{args.inner_steps}."
    )
    query_loss = F.mse_loss(net(x_query), y_query)
    params = [initial, adapted]

    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, collapse in (("maml_step", False), ("maml_step_collapsed", True)):
        dot = difopt.visual.make_dot(query_loss, params, collapse_steps=collapse)
        for fmt in ("svg", "png"):
            written.append(Path(dot.render(args.out / stem, format=fmt, cleanup=True)))

    print(difopt_visual.summary(query_loss, params))
    for path in written:
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
