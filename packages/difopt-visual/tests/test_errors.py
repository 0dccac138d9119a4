"""Bad input: clear errors naming the argument and what it accepts."""

from __future__ import annotations

import graphviz
import pytest
import torch

import difopt
import difopt_visual

W = torch.ones(2, requires_grad=True)
LOSS = (W * 2).sum()


@pytest.mark.parametrize(
    "var",
    [1.0, "loss", None, [W, 3], {"a": "b"}, torch.nn.Linear(2, 1)],
    ids=["float", "str", "none", "list-with-int", "dict-of-str", "module"],
)
@pytest.mark.parametrize(
    "fn", [difopt_visual.make_dot, difopt_visual.summary], ids=["make_dot", "summary"]
)
def test_non_tensor_var_is_a_type_error(fn, var) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TypeError, match=r"'var' must be a tensor or a sequence"):
        fn(var)


def test_empty_var_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="'var' holds no tensor"):
        difopt_visual.make_dot([])


@pytest.mark.parametrize(
    ("params", "match"),
    [
        (3, r"'params' has unsupported type int; expected None, a mapping"),
        ("w", r"'params' has unsupported type str"),
        (W, r"'params' has unsupported type Tensor"),
        ({1: W}, r"must map names \(str\) to tensors"),
        ({"w": 1.0}, r"must map names to tensors, got float for 'w'"),
        ({W: 1.0}, r"maps a tensor to float; a mapping keyed by tensors must map them"),
        ([3], r"'params': element 0 has unsupported type int"),
        ([{"w": W}, [W]], r"'params': element 1 has unsupported type list"),
        (iter([W]), r"must yield \(name, tensor\) pairs"),
    ],
    ids=[
        "int",
        "str",
        "tensor",
        "int-key",
        "float-value",
        "tensor-to-float",
        "list-of-int",
        "nested-list",
        "iter",
    ],
)
def test_unsupported_params_is_a_type_error(params, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TypeError, match=match):
        difopt_visual.make_dot(LOSS, params)


def test_snapshot_without_names_is_a_value_error() -> None:
    state = difopt.extract_state_dict(torch.nn.Linear(2, 1))
    with pytest.raises(ValueError, match="enable_visual=True"):
        difopt_visual.make_dot(LOSS, state)
    with pytest.raises(ValueError, match="element 1 is a ModuleState without names"):
        difopt_visual.make_dot(LOSS, [{"w": W}, state])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"show_attrs": 1}, TypeError, "'show_attrs' must be True or False"),
        ({"show_saved": "yes"}, TypeError, "'show_saved' must be True or False"),
        ({"collapse_steps": None}, TypeError, "'collapse_steps' must be True or False"),
        ({"max_attr_chars": 2.5}, TypeError, "'max_attr_chars' must be an int"),
        ({"max_attr_chars": 3}, ValueError, "'max_attr_chars' must be at least 4"),
    ],
    ids=[
        "show_attrs",
        "show_saved",
        "collapse_steps",
        "max_attr_chars-type",
        "max_attr_chars-small",
    ],
)
def test_bad_options(kwargs, error, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        difopt_visual.make_dot(LOSS, **kwargs)


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (("digraph {}",), TypeError, "'dot' must be a graphviz.Digraph"),
        ((graphviz.Digraph(), 0), ValueError, "'size_per_element' must be a positive finite"),
        ((graphviz.Digraph(), 0.1, -1), ValueError, "'min_size' must be a positive finite"),
        ((graphviz.Digraph(), "big"), TypeError, "'size_per_element' must be a positive number"),
        ((graphviz.Digraph(), 0.1, float("inf")), ValueError, "'min_size'"),
    ],
    ids=["dot", "zero-size", "negative-min", "str-size", "inf-min"],
)
def test_resize_graph_bad_arguments(args, error, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        difopt_visual.resize_graph(*args)


def test_resize_graph_scales_with_content() -> None:
    dot = graphviz.Digraph()
    for i in range(200):
        dot.node(str(i))
    difopt_visual.resize_graph(dot)
    assert dot.graph_attr["size"] == "30,30"
    difopt_visual.resize_graph(dot, size_per_element=0.5, min_size=12)
    assert dot.graph_attr["size"] == "100,100"
    small = graphviz.Digraph()
    difopt_visual.resize_graph(small)
    assert small.graph_attr["size"] == "12,12"
