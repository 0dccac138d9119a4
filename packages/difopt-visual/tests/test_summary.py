"""summary(): node count, named dependencies and unroll depth, as fields and text."""

from __future__ import annotations

import torch
import torchviz

import difopt_visual
from helpers import count_nodes, nodes_with, unroll


def test_two_step_unroll_summary() -> None:
    u = unroll(steps=2)
    s = difopt_visual.summary(u.loss, u.params)
    assert s.outputs == 1
    assert s.meta_parameters == ("step0.fc.weight", "step0.fc.bias", "meta_param")
    assert s.inner_parameters == ("step2.fc.weight", "step2.fc.bias")
    assert (s.steps, s.unrolled_depth) == (2, 2)
    # Leaves: 2 parameters, the meta-parameter and Adam's 2 x 2 initial moments.
    assert s.leaves == 7
    # torchviz draws each function once, plus one node per leaf, per output and per tensor
    # saved by a custom autograd.Function: difopt's fused Adam step saves, for each of the
    # 2 parameters, the first and second moments, the square root and the denominator.
    saved = len(nodes_with(difopt_visual.make_dot(u.loss), "fillcolor=orange"))
    assert saved == 2 * 2 * 4
    assert s.nodes == count_nodes(torchviz.make_dot(u.loss)) - s.leaves - s.outputs - saved
    text = str(s)
    for line in (
        "meta-parameters        : step0.fc.weight, step0.fc.bias, meta_param",
        "inner parameters       : step2.fc.weight, step2.fc.bias",
        "unrolled               : 2 step(s), chain depth 2",
        f"autograd nodes         : {s.nodes} (2 custom ops)",
    ):
        assert line in text.splitlines()


def test_depth_follows_the_number_of_steps() -> None:
    depths = [difopt_visual.summary(unroll(steps=k, optimizer="sgd").loss) for k in (1, 3)]
    assert [d.unrolled_depth for d in depths] == [1, 3]
    assert depths[0].nodes < depths[1].nodes
    assert depths[0].longest_path < depths[1].longest_path


def test_unrecorded_unroll_says_so() -> None:
    u = unroll(steps=2, record=False, untagged=True)
    s = difopt_visual.summary(u.loss)
    assert s.steps is None and s.unrolled_depth is None
    assert "no recorded steps" in str(s)


def test_only_dependencies_are_listed() -> None:
    a = torch.ones(2, requires_grad=True)
    b = torch.ones(2, requires_grad=True)
    s = difopt_visual.summary((a * 3).sum(), {"a": a, "b": b})
    assert s.meta_parameters == ("a",) and s.leaves == 1
    assert s.nodes == 3 and s.longest_path == 3
