"""``summary``: what an autograd graph holds, as text for terminals and CI logs."""

from __future__ import annotations

import dataclasses
from typing import Any

from difopt_visual._dot import output_tensors
from difopt_visual._graph import Role, build_graph
from difopt_visual._params import parse_params
from difopt_visual._steps import depth, find_steps

__all__ = ["GraphSummary", "summary"]


@dataclasses.dataclass(frozen=True)
class GraphSummary:
    """The shape of an autograd graph; ``str()`` gives the text report.

    Attributes:
        outputs: number of tensors in ``var``.
        nodes: number of autograd nodes (backward functions) the outputs depend on.
        custom_ops: how many of those are ``torch.autograd.Function``\\ s or custom ops.
        leaves: number of leaf tensors that require grad (their ``.grad`` is filled).
        meta_parameters: names of the named leaves the outputs depend on, in the order given.
        inner_parameters: names of the named non-leaf tensors they depend on (e.g. a module's
            parameters after a meta-optimizer step).
        steps: number of unrolled optimizer steps found (see
            :func:`difopt_visual.record_steps`), or ``None`` when none was recorded.
        unrolled_depth: the longest chain of those steps, each starting from the previous
            one (``None`` when no step was found).
        longest_path: the most autograd nodes on one path from an output to a leaf.
    """

    outputs: int
    nodes: int
    custom_ops: int
    leaves: int
    meta_parameters: tuple[str, ...]
    inner_parameters: tuple[str, ...]
    steps: int | None
    unrolled_depth: int | None
    longest_path: int

    def __str__(self) -> str:
        def listing(names: tuple[str, ...]) -> str:
            return ", ".join(names) if names else "-"

        if self.steps is None:
            unrolled = "no recorded steps (see difopt_visual.record_steps)"
        else:
            unrolled = f"{self.steps} step(s), chain depth {self.unrolled_depth}"
        rows = [
            ("outputs", str(self.outputs)),
            ("autograd nodes", f"{self.nodes} ({self.custom_ops} custom ops)"),
            ("longest path", f"{self.longest_path} nodes"),
            ("leaves (requires_grad)", str(self.leaves)),
            ("meta-parameters", listing(self.meta_parameters)),
            ("inner parameters", listing(self.inner_parameters)),
            ("unrolled", unrolled),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)} : {v}" for k, v in rows)


def summary(var: Any, params: Any = None) -> GraphSummary:
    """Summarize the autograd graph behind ``var``: size, named dependencies, unroll depth.

    Args:
        var: the output tensor, or a sequence (or other pytree) of tensors.
        params: names for tensors of the graph, in any form :func:`make_dot` accepts. Only
            named tensors the outputs depend on are listed.

    Returns:
        A :class:`GraphSummary`; ``print()`` it for the text report.

    Raises:
        TypeError: ``var`` or ``params`` is of an unsupported type (see :func:`make_dot`).
        ValueError: ``var`` holds no tensor.

    Examples:
        >>> import torch, difopt_visual
        >>> w = torch.ones(3, requires_grad=True)
        >>> s = difopt_visual.summary((w * w).sum(), params={"w": w})
        >>> s.nodes, s.meta_parameters
        (3, ('w',))
    """
    outputs = output_tensors(var)
    names = parse_params(params)
    graph = build_graph(outputs, names)
    steps = find_steps(graph, names)
    meta = [
        n for node in graph.nodes.values() if node.role == Role.META_PARAMETER for n in node.names
    ]
    inner = [
        n for node in graph.nodes.values() if node.role == Role.INNER_PARAMETER for n in node.names
    ]
    order = {name: i for i, (name, _) in enumerate(p for g in names.groups for p in g.tensors)}
    functions = [node for node in graph.nodes.values() if node.is_function]
    return GraphSummary(
        outputs=len(outputs),
        nodes=len(functions),
        custom_ops=sum(1 for node in functions if node.role == Role.CUSTOM_OP),
        leaves=sum(1 for node in graph.nodes.values() if node.role == Role.META_PARAMETER),
        meta_parameters=tuple(sorted(set(meta), key=order.__getitem__)),
        inner_parameters=tuple(sorted(set(inner), key=order.__getitem__)),
        steps=len(steps) if steps else None,
        unrolled_depth=depth(steps) if steps else None,
        longest_path=_longest_path(graph),
    )


def _longest_path(graph: Any) -> int:
    """Most function nodes on one path, by dynamic programming over a topological order."""
    inputs = graph.inputs()
    functions = {k for k, n in graph.nodes.items() if n.is_function}
    fn_inputs = {k: [s for s in inputs[k] if s in functions] for k in functions}
    # Inner-parameter nodes sit between functions; look through them.
    for k in functions:
        for s in inputs[k]:
            node = graph.nodes[s]
            if node.role == Role.INNER_PARAMETER and node.producer in functions:
                fn_inputs[k].append(node.producer)
    longest: dict[str, int] = {}
    for start in functions:
        stack = [(start, False)]
        while stack:
            key, expanded = stack.pop()
            if key in longest:
                continue
            if expanded:
                longest[key] = 1 + max((longest[s] for s in fn_inputs[key]), default=0)
                continue
            stack.append((key, True))
            stack.extend((s, False) for s in fn_inputs[key] if s not in longest)
    return max(longest.values(), default=0)
