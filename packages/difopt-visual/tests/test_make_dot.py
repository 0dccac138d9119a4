"""Graph content of make_dot: names, roles, cut graphs, options, parity with torchviz."""

from __future__ import annotations

import pytest
import torch
import torchviz

import difopt
import difopt_visual
from helpers import count_nodes, node_lines, nodes_with, unroll


def test_two_step_meta_adam_names_parameters_and_meta_parameter() -> None:
    u = unroll(steps=2)
    dot = difopt_visual.make_dot(u.loss, u.params)
    for name in ("step0.fc.weight", "step0.fc.bias", "meta_param"):
        (line,) = nodes_with(dot, f'"{name}\n')
        assert "fillcolor=lightblue" in line and "meta-parameter" in line
    for name in ("step2.fc.weight", "step2.fc.bias"):
        (line,) = nodes_with(dot, f'"{name}\n')
        assert "fillcolor=gold" in line and "inner-parameter" in line
    # Shapes are shown under the names.
    assert nodes_with(dot, '"step2.fc.weight\n(1, 5)"')


def test_meta_and_inner_parameters_are_visibly_distinct() -> None:
    u = unroll(steps=2)
    dot = difopt_visual.make_dot(u.loss, u.params)
    (meta,) = nodes_with(dot, '"meta_param\n')
    (inner,) = nodes_with(dot, '"step2.fc.bias\n')
    style = lambda line: {a for a in line.split() if a.startswith(("fillcolor=", "shape="))}  # noqa: E731
    assert style(meta) != style(inner)


def test_named_parameters_generator_and_list_of_pairs_name_leaves() -> None:
    net = torch.nn.Linear(3, 2)
    loss = net(torch.ones(1, 3)).sum()
    for params in (
        net.named_parameters(),
        list(net.named_parameters()),
        dict(net.named_parameters()),
        [net.named_parameters()],
        (dict(net.named_parameters()),),
    ):
        dot = difopt_visual.make_dot(loss, params)
        assert len(nodes_with(dot, '"weight\n(2, 3)"')) == 1
        assert len(nodes_with(dot, '"bias\n(2)"')) == 1


def test_tensor_to_name_mapping_as_in_torchopts_visualize_example() -> None:
    """TorchOpt's examples/visualize.py passes ``[state_0, state_1, {meta_param: "meta_param"}]``
    (a mapping from tensor to name): the meta-parameter is drawn as a named leaf, exactly as
    with the mapping the other way round."""
    u = unroll(steps=2)
    dot = difopt_visual.make_dot(u.loss, [u.state_0, u.state_n, {u.meta_param: "meta_param"}])
    (line,) = nodes_with(dot, '"meta_param\n')
    assert "fillcolor=lightblue" in line and "meta-parameter" in line
    for name in ("step0.fc.weight", "step2.fc.bias"):
        assert len(nodes_with(dot, f'"{name}\n')) == 1
    # Alone, and mixed with name -> tensor entries in one mapping.
    net = torch.nn.Linear(3, 2)
    loss = net(torch.ones(1, 3)).sum()
    for params in (
        {net.weight: "weight", net.bias: "bias"},
        {"weight": net.weight, net.bias: "bias"},
    ):
        dot = difopt_visual.make_dot(loss, params)
        assert len(nodes_with(dot, '"weight\n(2, 3)"')) == 1
        assert len(nodes_with(dot, '"bias\n(2)"')) == 1


def test_stop_gradient_removes_the_inner_history() -> None:
    u = unroll(steps=2)
    before = difopt_visual.make_dot(u.loss, u.params)
    difopt.stop_gradient(u.net)
    loss = torch.nn.functional.mse_loss(u.net(u.x, u.meta_param), torch.ones(8, 1))
    after = difopt_visual.make_dot(loss, u.params)
    # The adapted parameters are now leaves: the initial parameters and every step are gone.
    assert not nodes_with(after, "step0.fc.weight")
    assert not nodes_with(after, "Foreach")
    for name in ("step2.fc.weight", "step2.fc.bias", "meta_param"):
        (line,) = nodes_with(after, f'"{name}\n')
        assert "fillcolor=lightblue" in line
    assert count_nodes(after) == count_nodes(torchviz.make_dot(loss))
    assert count_nodes(after) < count_nodes(before) / 3
    s = difopt_visual.summary(loss, u.params)
    assert s.steps is None and s.inner_parameters == ()
    assert s.meta_parameters == ("step2.fc.weight", "step2.fc.bias", "meta_param")


def test_recover_state_dict_draws_the_restored_leaves() -> None:
    u = unroll(steps=2)
    difopt.recover_state_dict(u.net, u.state_0)
    loss = u.net(u.x, u.meta_param).sum()
    dot = difopt_visual.make_dot(loss, u.params)
    assert nodes_with(dot, '"step0.fc.weight\n') and not nodes_with(dot, "step2.fc.weight")


@pytest.mark.parametrize("show_saved", [False, True], ids=["plain", "show_saved"])
def test_node_count_matches_torchviz_without_inner_names(show_saved: bool) -> None:
    u = unroll(steps=2)
    ours = difopt_visual.make_dot(u.loss, show_saved=show_saved)
    theirs = torchviz.make_dot(u.loss, show_saved=show_saved)
    assert count_nodes(ours) == count_nodes(theirs)
    # Naming the two inner parameters adds exactly their two nodes.
    named = difopt_visual.make_dot(u.loss, u.params, show_saved=show_saved)
    assert count_nodes(named) == count_nodes(theirs) + 2


def test_functions_are_labelled_with_autograd_names() -> None:
    u = unroll(steps=1)
    dot = difopt_visual.make_dot(u.loss)
    assert nodes_with(dot, "ForeachLerpBackward0Scalar")  # not "CppFunction"
    assert not nodes_with(dot, "CppFunction")
    assert nodes_with(dot, "label=AccumulateGrad")


class Twice(torch.autograd.Function):
    """A stand-in for a fused op: one autograd.Function doing several things."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def]
        ctx.save_for_backward(x)
        return (x * 2).exp().log()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        return grad * 2


def test_custom_function_is_one_distinct_node_with_saved_tensors() -> None:
    w = torch.randn(3, requires_grad=True)
    dot = difopt_visual.make_dot(Twice.apply(w).sum(), {"w": w})
    (fused,) = nodes_with(dot, "TwiceBackward")
    assert "shape=box3d" in fused and "custom-op" in fused
    assert len(nodes_with(dot, "fillcolor=orange")) == 1  # the saved input, as torchviz
    assert count_nodes(dot) == count_nodes(torchviz.make_dot(Twice.apply(w).sum()))


def test_difopt_fused_adam_step_is_one_node_per_step() -> None:
    """MetaAdam's step ``p + value * m / (sqrt(v + c) + eps)`` is one autograd.Function."""
    u = unroll(steps=2)
    dot = difopt_visual.make_dot(u.loss)
    assert len(nodes_with(dot, "_RatioOfRootBackward")) == 2
    assert difopt_visual.summary(u.loss).custom_ops == 2


def test_show_attrs_lists_saved_attributes_cut_to_max_attr_chars() -> None:
    x = torch.randn(2, 3, requires_grad=True)
    y = x.reshape(3, 2).sum()
    dot = difopt_visual.make_dot(y, show_attrs=True, max_attr_chars=5)
    (reshape,) = nodes_with(dot, "ViewBackward0")
    assert "self_sym_sizes: (2..." in reshape
    plain = difopt_visual.make_dot(y)
    assert "self_sym_sizes" not in plain.source


def test_multiple_outputs_and_view_base() -> None:
    x = torch.randn(4, requires_grad=True)
    base = x * 3
    view = base[1:]
    dot = difopt_visual.make_dot((view, x.sum()), {"x": x})
    assert len(nodes_with(dot, "fillcolor=darkolivegreen1")) == 2
    assert len(nodes_with(dot, "fillcolor=darkolivegreen3")) == 1
    assert "style=dotted" in dot.source
    assert count_nodes(dot) == count_nodes(torchviz.make_dot((view, x.sum())))


def test_output_without_graph_is_one_node() -> None:
    dot = difopt_visual.make_dot(torch.ones(2))
    assert count_nodes(dot) == 1


def test_deep_graph_does_not_hit_the_recursion_limit() -> None:
    w = torch.ones(1, requires_grad=True)
    y = w
    for _ in range(5000):
        y = y * 1.0001
    dot = difopt_visual.make_dot(y)
    assert count_nodes(dot) == 5000 + 3  # the muls, AccumulateGrad, the leaf, the output
    assert difopt_visual.summary(y).longest_path == 5001


def test_result_is_sized_and_compatible_with_torchopt_call() -> None:
    u = unroll(steps=1)
    # TorchOpt's positional order: var, params, show_attrs, show_saved, max_attr_chars.
    dot = difopt.visual.make_dot(u.loss, u.params, False, False, 50)
    assert (
        dot.graph_attr["size"]
        == f"{max(12, len(dot.body) * 0.15):g},{max(12, len(dot.body) * 0.15):g}"
    )
    assert node_lines(dot)
