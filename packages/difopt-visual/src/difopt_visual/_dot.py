"""``make_dot`` and ``resize_graph``: drawing an autograd graph with graphviz."""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import graphviz  # type: ignore[import-untyped]
import torch

from difopt import pytree
from difopt_visual._graph import Edge, Graph, Node, Role, build_graph
from difopt_visual._params import parse_params
from difopt_visual._steps import Step, find_steps

__all__ = ["STYLES", "make_dot", "output_tensors", "resize_graph"]

# Fill colour (and extra attributes) per role. Tensors keep torchviz's colours, so a torchviz
# user reads the drawing at once; inner parameters and custom ops get colours of their own.
STYLES: dict[str, dict[str, str]] = {
    Role.OPERATION: {"fillcolor": "lightgrey"},
    Role.CUSTOM_OP: {"fillcolor": "plum", "shape": "box3d"},
    Role.META_PARAMETER: {"fillcolor": "lightblue"},
    Role.INNER_PARAMETER: {"fillcolor": "gold", "shape": "note"},
    Role.OUTPUT: {"fillcolor": "darkolivegreen1"},
    Role.VIEW_BASE: {"fillcolor": "darkolivegreen3"},
    Role.SAVED: {"fillcolor": "orange"},
}
_STEP_STYLE = {"fillcolor": "lightsalmon", "shape": "box", "style": "filled,rounded"}
_NODE_ATTR = {
    "style": "filled",
    "shape": "box",
    "align": "left",
    "fontsize": "10",
    "ranksep": "0.1",
    "height": "0.2",
    "fontname": "monospace",
}


def output_tensors(var: Any) -> list[torch.Tensor]:
    """The tensors of ``var`` (a tensor or a pytree of tensors), checked.

    Raises:
        TypeError: ``var`` is not a tensor, or holds something other than tensors.
        ValueError: ``var`` holds no tensor.
    """
    expected = "a tensor or a sequence (or other pytree) of tensors"
    if isinstance(var, torch.Tensor):
        return [var]
    leaves = pytree.tree_leaves(var, none_is_leaf=True, namespace=pytree.NAMESPACE)
    if len(leaves) == 1 and leaves[0] is var:
        raise TypeError(f"'var' must be {expected}, got {type(var).__name__}")
    for x in leaves:
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"'var' must be {expected}, got a {type(var).__name__} holding {type(x).__name__}"
            )
    if not leaves:
        raise ValueError("'var' holds no tensor; pass the output tensor(s) to draw")
    return list(leaves)


def _check_flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"'{name}' must be True or False, got {value!r}")
    return value


def make_dot(
    var: Any,
    params: Any = None,
    show_attrs: bool = False,
    show_saved: bool = False,
    max_attr_chars: int = 50,
    *,
    collapse_steps: bool = False,
) -> graphviz.Digraph:
    """Draw the autograd graph that produced ``var`` as a graphviz ``Digraph``.

    Compatible with TorchOpt's ``torchopt.visual.make_dot`` (itself adapted from torchviz).
    Grey boxes are backward functions (one per autograd node); a ``torch.autograd.Function``
    or custom op, fused or not, is one purple 3-D box. Tensors:

    - **light blue**: leaves that require grad (their ``.grad`` is filled by ``backward``):
      the meta-parameters of an unrolled loop, labelled with their names when known;
    - **gold** (note shape): named non-leaf tensors, e.g. a module's parameters after a
      :class:`difopt.MetaOptimizer` step (inner parameters), drawn between the function
      that produced them and the functions that use them;
    - **green**: the tensors in ``var``; **dark green**: the base of an output that is a view;
    - **orange**: tensors saved for backward (custom functions always, others with
      ``show_saved``).

    Args:
        var: the output tensor, or a sequence (or other pytree) of tensors.
        params: names for tensors of the graph: a mapping name -> tensor,
            ``module.named_parameters()``, a :class:`difopt.utils.ModuleState` from
            ``difopt.extract_state_dict(module, enable_visual=True, visual_prefix=...)``, a
            list of ``(name, tensor)`` pairs, or a list/tuple of these. ``None`` names nothing.
        show_attrs: also show the non-tensor attributes saved by each backward function.
        show_saved: also show the tensors saved by built-in backward functions.
        max_attr_chars: with ``show_attrs``, the most characters shown of an attribute's
            value (at least 4).
        collapse_steps: draw each unrolled step of a meta optimizer as one cluster holding a
            single node for the step's operations and its named output parameters. Steps are
            found from tags written by :func:`difopt_visual.record_steps` (or by an optimizer
            that writes them itself), else from snapshots in ``params`` taken after each step.

    Returns:
        The graph, sized with :func:`resize_graph`. Render it with ``dot.render(...)`` or
        ``dot.pipe(format="svg")`` (needs the Graphviz ``dot`` program), or show it in a
        notebook.

    Raises:
        TypeError: ``var`` is not a tensor or a pytree of tensors; ``params`` is of an
            unsupported type; a flag is not a bool; ``max_attr_chars`` is not an int.
        ValueError: ``var`` holds no tensor; ``max_attr_chars`` is below 4; a ModuleState
            in ``params`` was taken without ``enable_visual=True``.

    Examples:
        >>> import torch, difopt_visual
        >>> w = torch.ones(3, requires_grad=True)
        >>> dot = difopt_visual.make_dot((w * 2).sum(), params={"w": w})
        >>> "w" in dot.source and "MulBackward0" in dot.source
        True
    """
    outputs = output_tensors(var)
    show_attrs = _check_flag(show_attrs, "show_attrs")
    show_saved = _check_flag(show_saved, "show_saved")
    collapse_steps = _check_flag(collapse_steps, "collapse_steps")
    if isinstance(max_attr_chars, bool) or not isinstance(max_attr_chars, int):
        raise TypeError(f"'max_attr_chars' must be an int, got {max_attr_chars!r}")
    if max_attr_chars < 4:
        raise ValueError(
            f"'max_attr_chars' must be at least 4 (room for one character and '...'), "
            f"got {max_attr_chars}"
        )
    names = parse_params(params)
    graph = build_graph(
        outputs,
        names,
        show_attrs=show_attrs,
        show_saved=show_saved,
        max_attr_chars=max_attr_chars,
    )
    steps: list[Step] = []
    if collapse_steps:
        steps = find_steps(graph, names)
        if not steps:
            warnings.warn(
                "make_dot(collapse_steps=True): no unrolled optimizer step found in the graph "
                "of 'var', so nothing is collapsed. Take the steps inside "
                "`with difopt_visual.record_steps(optimizer):`, or pass in 'params' a "
                "snapshot difopt.extract_state_dict(module, enable_visual=True, "
                "visual_prefix=...) taken after each step.",
                UserWarning,
                stacklevel=2,
            )
    dot = _render(graph, steps)
    resize_graph(dot)
    return dot


def _node_attrs(node: Node) -> dict[str, str]:
    attrs = dict(STYLES[node.role])
    if node.names:
        attrs["tooltip"] = f"{node.role}: {', '.join(node.names)}"
    elif node.role == Role.META_PARAMETER:
        attrs["tooltip"] = "leaf tensor (requires grad)"
    else:
        attrs["tooltip"] = node.role
    return attrs


def _render(graph: Graph, steps: list[Step]) -> graphviz.Digraph:
    dot = graphviz.Digraph(node_attr=_NODE_ATTR, graph_attr={"size": "12,12"})
    # Where each node is drawn: itself, or the single node of the step that holds it.
    shown = {key: key for key in graph.nodes}
    clusters: list[tuple[Step, str, list[Node]]] = []
    for i, step in enumerate(steps):
        body = f"step{i}"
        kept = [
            graph.nodes[k]
            for k in graph.nodes
            if k in step.members and graph.nodes[k].role == Role.INNER_PARAMETER
        ]
        folded = step.members - {n.key for n in kept}
        for key in folded:
            shown[key] = body
        clusters.append((step, body, kept))
    in_step = {key for step in steps for key in step.members}
    for key, node in graph.nodes.items():
        if key not in in_step:
            dot.node(key, node.label, **_node_attrs(node))
    for i, (step, body, kept) in enumerate(clusters):
        operations = sum(1 for k in step.members if graph.nodes[k].is_function)
        with dot.subgraph(name=f"cluster_step{i}") as cluster:
            cluster.attr(label=step.label, style="dashed", fontname="monospace", fontsize="10")
            cluster.node(
                body,
                f"{step.label}\n{operations} autograd nodes",
                tooltip=f"unrolled step: {step.label}",
                **_STEP_STYLE,
            )
            for node in kept:
                cluster.node(node.key, node.label, **_node_attrs(node))
    drawn: set[tuple[str, str]] = set()
    for edge in graph.edges:
        tail, head = shown[edge.tail], shown[edge.head]
        if tail == head or (steps and (tail, head) in drawn):
            continue
        drawn.add((tail, head))
        dot.edge(tail, head, **_edge_attrs(edge))
    return dot


def _edge_attrs(edge: Edge) -> dict[str, str]:
    attrs = {}
    if edge.style:
        attrs["style"] = edge.style
    if edge.undirected:
        attrs["dir"] = "none"
    return attrs


def resize_graph(
    dot: graphviz.Digraph, size_per_element: float = 0.15, min_size: float = 12
) -> None:
    """Set the drawing size of ``dot`` from how much it contains, in place.

    The size (inches, the same for width and height) is the number of statements in
    ``dot`` (nodes and edges) times ``size_per_element``, and at least ``min_size``.

    Args:
        dot: a graph from :func:`make_dot` (any ``graphviz.Digraph`` or ``graphviz.Graph``).
        size_per_element: inches per node or edge; a positive number.
        min_size: the smallest size, in inches; a positive number.

    Raises:
        TypeError: ``dot`` is not a graphviz graph, or a size is not a real number.
        ValueError: a size is not positive (or not finite).

    Examples:
        >>> import graphviz, difopt_visual
        >>> dot = graphviz.Digraph()
        >>> difopt_visual.resize_graph(dot, min_size=5)
        >>> dot.graph_attr["size"]
        '5,5'
    """
    if not isinstance(dot, (graphviz.Digraph, graphviz.Graph)):
        raise TypeError(
            f"'dot' must be a graphviz.Digraph (as returned by make_dot) or graphviz.Graph, "
            f"got {type(dot).__name__}"
        )
    for name, value in (("size_per_element", size_per_element), ("min_size", min_size)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"'{name}' must be a positive number, got {value!r}")
        if not 0 < float(value) < float("inf"):
            raise ValueError(f"'{name}' must be a positive finite number, got {value!r}")
    size = max(float(min_size), len(dot.body) * float(size_per_element))
    text = f"{size:g}"
    dot.graph_attr["size"] = f"{text},{text}"
