"""Walking an autograd graph into a plain node/edge model.

The model is independent of graphviz: :func:`difopt_visual.make_dot` renders it,
:func:`difopt_visual.summary` counts it and :mod:`difopt_visual._steps` groups it into
unrolled steps. The walk is iterative, so graphs of long unrolls do not hit Python's
recursion limit.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from difopt_visual._params import ParamNames

__all__ = ["Edge", "Graph", "Node", "Role", "build_graph", "function_name"]

# Saved attributes of autograd nodes (tensors included) are exposed as ``_saved_<name>``.
_SAVED_PREFIX = "_saved_"


class Role:
    """What a node of the drawing stands for (its colour follows from it)."""

    OPERATION = "operation"  # an autograd node (a backward function)
    CUSTOM_OP = "custom-op"  # a torch.autograd.Function / custom op: one node, however fused
    META_PARAMETER = "meta-parameter"  # a leaf that requires grad: backward fills its .grad
    INNER_PARAMETER = "inner-parameter"  # a named non-leaf tensor, e.g. after a meta step
    OUTPUT = "output"  # a tensor passed as ``var``
    VIEW_BASE = "view-base"  # the base of an output that is a view
    SAVED = "saved"  # a tensor saved for backward


@dataclasses.dataclass
class Node:
    """One node of the drawing.

    Attributes:
        key: unique identifier (the DOT node name).
        role: one of the :class:`Role` values.
        title: first line of the label (function name, or tensor names).
        detail: further label lines (shape, attributes).
        names: parameter names attached to this node.
        producer: for a tensor node drawn after its ``grad_fn``, that function's key.
    """

    key: str
    role: str
    title: str
    detail: str = ""
    names: tuple[str, ...] = ()
    producer: str | None = None

    @property
    def label(self) -> str:
        return f"{self.title}\n{self.detail}" if self.detail else self.title

    @property
    def is_function(self) -> bool:
        return self.role in (Role.OPERATION, Role.CUSTOM_OP)


@dataclasses.dataclass(frozen=True)
class Edge:
    """An edge from ``tail`` to ``head`` (in the direction values flow forward)."""

    tail: str
    head: str
    style: str | None = None  # "dotted" from a view's base to the view
    undirected: bool = False  # saved tensor <-> the function that saved it


@dataclasses.dataclass
class Graph:
    """The drawing model: nodes in discovery order, edges, and the autograd functions.

    ``functions`` maps a function node's key to the autograd node object, for the step
    grouping which reads node metadata; ``held`` keeps every object whose ``id`` is a key
    alive while the graph exists, so that keys cannot be reused.
    """

    nodes: dict[str, Node] = dataclasses.field(default_factory=dict)
    edges: list[Edge] = dataclasses.field(default_factory=list)
    functions: dict[str, Any] = dataclasses.field(default_factory=dict)
    held: list[Any] = dataclasses.field(default_factory=list)

    def add_node(self, node: Node) -> None:
        self.nodes.setdefault(node.key, node)

    def inputs(self) -> dict[str, list[str]]:
        """For each node key, the keys of the nodes with an edge into it."""
        out: dict[str, list[str]] = {key: [] for key in self.nodes}
        for edge in self.edges:
            out[edge.head].append(edge.tail)
        return out


def function_name(fn: Any) -> str:
    """The readable name of an autograd node (``ForeachLerpBackward0Scalar`` ...).

    ``Node.name()`` is used rather than the Python type name, which is only ``CppFunction``
    for many C++ nodes; a C++ namespace (``torch::autograd::AccumulateGrad``) is dropped.
    """
    try:
        name = str(fn.name())
    except (AttributeError, RuntimeError):
        name = type(fn).__name__
    return name.rsplit("::", 1)[-1]


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def _is_custom(fn: Any) -> bool:
    return isinstance(fn, torch.autograd.function.BackwardCFunction)


def _saved_attributes(fn: Any) -> list[tuple[str, Any]]:
    out = []
    for attr in dir(fn):
        if not attr.startswith(_SAVED_PREFIX):
            continue
        try:
            value = getattr(fn, attr)
        except RuntimeError:
            # The buffers were freed by a backward pass without retain_graph.
            value = "[freed]"
        out.append((attr[len(_SAVED_PREFIX) :], value))
    return out


def _attribute_text(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return "[saved tensor]"
    if isinstance(value, tuple) and any(isinstance(v, torch.Tensor) for v in value):
        return "[saved tensors]"
    return str(value)


def _attribute_table(fn: Any, max_attr_chars: int) -> str:
    """``name: value`` lines of ``fn``'s saved attributes, values cut at ``max_attr_chars``."""
    attrs = [(k, _attribute_text(v)) for k, v in _saved_attributes(fn)]
    if not attrs:
        return ""
    width = max(len(k) for k, _ in attrs)

    def cut(text: str) -> str:
        return text if len(text) <= max_attr_chars else text[: max_attr_chars - 3] + "..."

    rows = [f"{k.ljust(width)}: {cut(v)}" for k, v in attrs]
    return "-" * max(len(r) for r in rows) + "\n" + "\n".join(rows)


class _Builder:
    def __init__(
        self, names: ParamNames, show_attrs: bool, show_saved: bool, max_attr_chars: int
    ) -> None:
        self.names = names
        self.show_attrs = show_attrs
        self.show_saved = show_saved
        self.max_attr_chars = max_attr_chars
        self.graph = Graph()
        # (id(fn), output_nr) -> key of the tensor node drawn for that output.
        self.tensor_nodes: dict[tuple[int, int], str] = {}
        self.pending: list[Any] = []

    def key(self, obj: Any) -> str:
        self.graph.held.append(obj)
        return str(id(obj))

    def tensor_node(self, t: torch.Tensor, role: str, title: str = "") -> str:
        key = self.key(t)
        names = tuple(self.names.of_tensor(t))
        shown = ", ".join(names) or title
        self.graph.add_node(Node(key, role, shown, _shape(t), names))
        return key

    def function_node(self, fn: Any) -> str:
        """The key of ``fn``'s node; queue ``fn`` for a visit the first time it is seen."""
        key = self.key(fn)
        if key not in self.graph.nodes:
            role = Role.CUSTOM_OP if _is_custom(fn) else Role.OPERATION
            detail = _attribute_table(fn, self.max_attr_chars) if self.show_attrs else ""
            self.graph.add_node(Node(key, role, function_name(fn), detail))
            self.graph.functions[key] = fn
            self.pending.append(fn)
        return key

    def producer(self, fn: Any, output_nr: int) -> str:
        """The node an edge from output ``output_nr`` of ``fn`` starts at.

        A named non-leaf tensor (an inner parameter) gets a node of its own between its
        ``grad_fn`` and the functions that use it.
        """
        fn_key = self.function_node(fn)
        slot = (id(fn), output_nr)
        if slot in self.tensor_nodes:
            return self.tensor_nodes[slot]
        names = self.names.outputs.get(slot)
        if not names:
            return fn_key
        key = self.tensor_node(self.names.output_tensors[slot], Role.INNER_PARAMETER)
        self.graph.nodes[key].producer = fn_key
        self.graph.edges.append(Edge(fn_key, key))
        self.tensor_nodes[slot] = key
        return key

    def output(self, t: torch.Tensor, role: str = Role.OUTPUT) -> None:
        key = self.key(t)
        if key in self.graph.nodes:
            return
        self.tensor_node(t, role)
        if t.grad_fn is not None:
            self.tensor_nodes.setdefault((id(t.grad_fn), t.output_nr), key)
            self.graph.edges.append(Edge(self.function_node(t.grad_fn), key))
        if t._is_view() and t._base is not None:
            base = t._base
            self.output(base, Role.VIEW_BASE)
            self.graph.edges.append(Edge(str(id(base)), key, style="dotted"))

    def visit(self, fn: Any) -> None:
        key = str(id(fn))
        variable = getattr(fn, "variable", None)
        if isinstance(variable, torch.Tensor):
            # AccumulateGrad: the leaf whose .grad backward fills.
            leaf = self.tensor_node(variable, Role.META_PARAMETER)
            self.graph.edges.append(Edge(leaf, key))
        if self.show_saved:
            for name, value in _saved_attributes(fn):
                values = value if isinstance(value, tuple) else (value,)
                for i, t in enumerate(values):
                    if isinstance(t, torch.Tensor):
                        label = name if len(values) == 1 else f"{name}[{i}]"
                        saved = self.tensor_node(t, Role.SAVED, label)
                        self.graph.edges.append(Edge(key, saved, undirected=True))
        for next_fn, output_nr in getattr(fn, "next_functions", ()):
            if next_fn is not None:
                self.graph.edges.append(Edge(self.producer(next_fn, output_nr), key))
        if _is_custom(fn):
            # Tensors saved by a custom Function are always shown, as torchviz does.
            try:
                saved_tensors = fn.saved_tensors
            except RuntimeError:
                saved_tensors = ()
            for t in saved_tensors:
                self.graph.edges.append(Edge(self.tensor_node(t, Role.SAVED), key))

    def run(self, outputs: list[torch.Tensor]) -> Graph:
        for t in outputs:
            self.output(t)
        while self.pending:
            self.visit(self.pending.pop())
        return self.graph


def build_graph(
    outputs: list[torch.Tensor],
    names: ParamNames,
    *,
    show_attrs: bool = False,
    show_saved: bool = False,
    max_attr_chars: int = 50,
) -> Graph:
    """Walk the autograd graph behind ``outputs`` into a :class:`Graph`."""
    return _Builder(names, show_attrs, show_saved, max_attr_chars).run(outputs)
