"""collapse_steps=True and record_steps: one cluster per unrolled step, fewer nodes."""

from __future__ import annotations

import pytest
import torch
import torchviz

import difopt
import difopt_visual
from helpers import clusters, count_nodes, nodes_with, strip_step_tags, unroll


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_one_cluster_per_step_and_fewer_nodes_than_torchviz(optimizer: str) -> None:
    u = unroll(steps=2, optimizer=optimizer)
    dot = difopt_visual.make_dot(u.loss, u.params, collapse_steps=True)
    assert len(clusters(dot)) == 2
    assert count_nodes(dot) < count_nodes(torchviz.make_dot(u.loss))
    name = "MetaAdam" if optimizer == "adam" else "MetaSGD"
    for step in (1, 2):
        (body,) = nodes_with(dot, f'"{name} step {step}\n')
        assert "autograd nodes" in body
    # The meta-parameters stay outside the clusters, with their names.
    for name in ("step0.fc.weight", "step0.fc.bias", "meta_param"):
        assert len(nodes_with(dot, f'"{name}\n')) == 1
    # The last step's named outputs are drawn inside its cluster.
    cluster_2 = dot.source.split("subgraph cluster_step1")[1].split("}")[0]
    assert "step2.fc.weight" in cluster_2 and "step2.fc.bias" in cluster_2


def test_collapsed_steps_are_chained() -> None:
    u = unroll(steps=3)
    dot = difopt_visual.make_dot(u.loss, collapse_steps=True)
    assert len(clusters(dot)) == 3
    assert "\tstep0 -> step1" in dot.source and "\tstep1 -> step2" in dot.source
    assert difopt_visual.summary(u.loss).unrolled_depth == 3


def test_no_cluster_holds_more_than_one_step() -> None:
    u = unroll(steps=4)
    dot = difopt_visual.make_dot(u.loss, u.params, collapse_steps=True)
    sources = dot.source.split("subgraph cluster_")[1:]
    assert len(sources) == 4
    for body in sources:
        assert body.count("autograd nodes") == 1


def test_snapshots_mark_steps_without_recording() -> None:
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    opt = difopt.MetaSGD(net, lr=0.1)
    x = torch.randn(4, 3)
    snapshots = [difopt.extract_state_dict(net, enable_visual=True, visual_prefix="step0.")]
    for k in (1, 2):
        opt.step(net(x).pow(2).mean())
        snapshots.append(
            difopt.extract_state_dict(net, enable_visual=True, visual_prefix=f"step{k}.")
        )
    loss = net(x).sum()
    strip_step_tags(loss)
    dot = difopt_visual.make_dot(loss, snapshots, collapse_steps=True)
    assert len(clusters(dot)) == 2
    assert nodes_with(dot, '"step1\n') and nodes_with(dot, '"step2\n')
    assert count_nodes(dot) < count_nodes(torchviz.make_dot(loss))


def test_meta_optimizer_steps_collapse_without_recording() -> None:
    """difopt's MetaOptimizer tags its own steps; no recorder is needed."""
    u = unroll(steps=3, record=False)
    dot = difopt_visual.make_dot(u.loss, collapse_steps=True)
    assert len(clusters(dot)) == 3
    assert count_nodes(dot) < count_nodes(torchviz.make_dot(u.loss))


def test_nothing_to_collapse_warns_and_draws_everything() -> None:
    u = unroll(steps=2, record=False, untagged=True)
    with pytest.warns(UserWarning, match="record_steps"):
        dot = difopt_visual.make_dot(u.loss, collapse_steps=True)
    assert clusters(dot) == []
    assert count_nodes(dot) == count_nodes(torchviz.make_dot(u.loss))


def test_record_steps_restores_step_and_leaves_values_unchanged() -> None:
    recorded = unroll(steps=2, record=True)
    plain = unroll(steps=2, record=False)
    torch.testing.assert_close(recorded.loss, plain.loss)
    assert "step" not in recorded.opt.__dict__
    grads = torch.autograd.grad(recorded.loss, recorded.meta_param)
    expected = torch.autograd.grad(plain.loss, plain.meta_param)
    torch.testing.assert_close(grads, expected)


def test_record_steps_restores_step_after_an_error() -> None:
    net = torch.nn.Linear(2, 1)
    opt = difopt.MetaSGD(net, lr=0.1)
    with pytest.raises(ValueError, match="loss"), difopt_visual.record_steps(opt):
        opt.step(torch.ones(2))
    assert "step" not in opt.__dict__


def test_record_steps_tags_nodes_with_the_documented_key() -> None:
    net = torch.nn.Linear(2, 1)
    opt = difopt.MetaSGD(net, lr=0.1)
    with difopt_visual.record_steps(opt):
        opt.step(net(torch.ones(1, 2)).sum())
    tag = net.weight.grad_fn.metadata[difopt_visual.STEP_METADATA_KEY]
    assert tag == {"optimizer": "MetaSGD", "owner": id(opt), "step": 1}


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((), ValueError, "at least one"),
        ((torch.nn.Linear(2, 1),), TypeError, "argument 0 must be a difopt.MetaOptimizer"),
    ],
    ids=["none", "module"],
)
def test_record_steps_rejects_bad_arguments(args: tuple, error: type, match: str) -> None:
    with pytest.raises(error, match=match), difopt_visual.record_steps(*args):
        pass


def test_record_steps_rejects_the_same_optimizer_twice() -> None:
    opt = difopt.MetaSGD(torch.nn.Linear(2, 1), lr=0.1)
    with pytest.raises(ValueError, match="twice"), difopt_visual.record_steps(opt, opt):
        pass
