"""Shared helpers: a small meta-learning problem and DOT-source inspection."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from typing import Any

import graphviz
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import difopt
import difopt_visual

# A node statement in DOT source as graphviz writes it: tabs, the name, then attributes (the
# graph-wide `graph [...]`, `node [...]` and `edge [...]` statements are not nodes).
_NODE_RE = re.compile(r'^\t+(?!(?:graph|node|edge) \[)(?:"[^"]*"|\S+) \[')

requires_dot = pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="the Graphviz `dot` program is not on PATH (Debian/Ubuntu: apt-get install graphviz)",
)


class MetaNet(nn.Module):
    """A linear layer plus a meta-parameter added to its output (TorchOpt's tutorial net)."""

    def __init__(self, dim: int = 5) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor, meta_param: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + meta_param


@dataclass
class Unroll:
    """The result of :func:`unroll`: the outer loss and the named tensors around it."""

    net: MetaNet
    opt: difopt.MetaOptimizer
    meta_param: torch.Tensor
    loss: torch.Tensor
    state_0: Any
    state_n: Any
    x: torch.Tensor

    @property
    def params(self) -> list[Any]:
        return [self.state_0, self.state_n, {"meta_param": self.meta_param}]


def strip_step_tags(*tensors: torch.Tensor) -> None:
    """Remove the step tags a MetaOptimizer writes, as a graph built elsewhere would lack."""
    seen: set[int] = set()
    stack = [t.grad_fn for t in tensors if t.grad_fn is not None]
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        fn.metadata.pop(difopt_visual.STEP_METADATA_KEY, None)
        stack.extend(next_fn for next_fn, _ in fn.next_functions)


def unroll(
    steps: int = 2,
    optimizer: str = "adam",
    record: bool = True,
    seed: int = 0,
    untagged: bool = False,
) -> Unroll:
    """``steps`` differentiable steps of a meta optimizer, then an outer loss.

    ``record`` wraps the steps in :func:`difopt_visual.record_steps`; ``untagged`` removes
    every step tag afterwards (the core's and the recorder's), leaving a plain graph.
    """
    torch.manual_seed(seed)
    net = MetaNet()
    meta_param = torch.tensor(1.0, requires_grad=True)
    opt = difopt.MetaAdam(net, lr=0.1) if optimizer == "adam" else difopt.MetaSGD(net, lr=0.1)
    x = torch.randn(8, 5)
    state_0 = difopt.extract_state_dict(net, enable_visual=True, visual_prefix="step0.")

    def inner() -> None:
        for _ in range(steps):
            opt.step(F.mse_loss(net(x, meta_param), torch.zeros(8, 1)))

    if record:
        with difopt_visual.record_steps(opt):
            inner()
    else:
        inner()
    state_n = difopt.extract_state_dict(net, enable_visual=True, visual_prefix=f"step{steps}.")
    loss = F.mse_loss(net(x, meta_param), torch.ones(8, 1))
    if untagged:
        strip_step_tags(loss)
    return Unroll(net, opt, meta_param, loss, state_0, state_n, x)


def node_lines(dot: graphviz.Digraph) -> list[str]:
    """The node statements of ``dot`` (its clusters included)."""
    statements: list[str] = []
    open_statement = False
    for line in dot.source.splitlines():
        if _NODE_RE.match(line):
            statements.append(line)
        elif open_statement:  # a multi-line label continues the statement
            statements[-1] += "\n" + line
        else:
            continue
        open_statement = not line.endswith("]")
    return statements


def count_nodes(dot: graphviz.Digraph) -> int:
    """Distinct nodes of ``dot`` (torchviz may state a node twice; graphviz draws it once)."""
    return len({line.split(" [", 1)[0].strip() for line in node_lines(dot)})


def nodes_with(dot: graphviz.Digraph, text: str) -> list[str]:
    """Node statements whose label or attributes contain ``text``."""
    return [line for line in node_lines(dot) if text in line]


def clusters(dot: graphviz.Digraph) -> list[str]:
    return re.findall(r"subgraph (cluster\w+)", dot.source)
