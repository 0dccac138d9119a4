"""Unrolled optimizer steps: recording their boundaries, and grouping a graph by step.

A step of a :class:`difopt.MetaOptimizer` replaces the module's parameters (and its state)
by new tensors. The autograd nodes that produced those tensors mark where the step ends; the
step itself is everything between them and the previous step's boundary.

Boundaries are found in two ways:

1. **Step tags** in autograd node metadata: ``node.metadata[STEP_METADATA_KEY]`` is a dict
   ``{"optimizer": str, "owner": int, "step": int}`` (display name of the optimizer, an id
   telling optimizer instances apart, and the 1-based step count of that instance), set on
   the ``grad_fn`` of every parameter and state tensor a step outputs. :func:`record_steps`
   writes them; a :class:`difopt.MetaOptimizer` that writes them itself needs no recorder.
2. **Snapshots** passed in ``params``: a :class:`difopt.utils.ModuleState` from
   ``extract_state_dict(module, enable_visual=True, visual_prefix=...)`` taken after a step
   holds that step's parameters (non-leaf tensors). It marks the parameters only, not the
   optimizer state, so a stateful optimizer (Adam) groups best with tags.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any, cast

import torch

from difopt import pytree
from difopt.optim.meta.base import MetaOptimizer
from difopt_visual._graph import Graph, Node, Role
from difopt_visual._params import ParamNames

__all__ = ["STEP_METADATA_KEY", "Step", "depth", "find_steps", "record_steps"]

STEP_METADATA_KEY = "difopt.meta_step"
"""The key of a step tag in ``grad_fn.metadata``: the value of
``difopt.optim.meta.base.STEP_METADATA_KEY``, under which :func:`record_steps` and
``difopt.MetaOptimizer.step`` tag the autograd nodes of each step."""


@contextlib.contextmanager
def record_steps(*optimizers: MetaOptimizer) -> Iterator[None]:
    """Tag every step the given meta optimizers take inside the block.

    While the block runs, ``optimizer.step`` also writes a step tag (see
    :data:`STEP_METADATA_KEY`) into the metadata of the autograd nodes that produced the new
    parameters and optimizer state, so that ``make_dot(..., collapse_steps=True)`` and
    :func:`summary` find the steps. Nothing else about the step changes; on exit ``step`` is
    restored.

    Args:
        *optimizers: one or more :class:`difopt.MetaOptimizer` instances (``MetaSGD``,
            ``MetaAdam``, ...).

    Raises:
        TypeError: an argument is not a ``difopt.MetaOptimizer``.
        ValueError: no optimizer was given.

    Examples:
        >>> import torch, difopt, difopt_visual
        >>> net = torch.nn.Linear(2, 1)
        >>> opt = difopt.MetaSGD(net, lr=0.1)
        >>> x = torch.ones(3, 2)
        >>> with difopt_visual.record_steps(opt):
        ...     for _ in range(2):
        ...         opt.step(net(x).pow(2).mean())
        >>> difopt_visual.summary(net(x).sum()).steps
        2
    """
    if not optimizers:
        raise ValueError("record_steps() needs at least one MetaOptimizer")
    for i, opt in enumerate(optimizers):
        if not isinstance(opt, MetaOptimizer):
            raise TypeError(
                f"record_steps(): argument {i} must be a difopt.MetaOptimizer (MetaSGD, "
                f"MetaAdam, ...), got {type(opt).__name__}"
            )
    if len({id(opt) for opt in optimizers}) != len(optimizers):
        raise ValueError("record_steps(): the same optimizer was given twice")
    patched: list[tuple[MetaOptimizer, Any]] = []
    try:
        for opt in optimizers:
            patched.append((opt, opt.__dict__.get("step")))
            opt.step = _recording_step(opt)  # type: ignore[method-assign]
        yield
    finally:
        for opt, previous in patched:
            if previous is None:
                del opt.step
            else:
                opt.step = previous  # type: ignore[method-assign]


def _recording_step(opt: MetaOptimizer) -> Any:
    original = opt.step
    count = 0

    def step(loss: torch.Tensor) -> None:
        nonlocal count
        original(loss)
        count += 1
        tag = {"optimizer": type(opt).__name__, "owner": id(opt), "step": count}
        tensors = [v for group in opt.param_containers_groups for c in group for v in c.values()]
        tensors += [t for state in opt.state_groups for t in _tensor_leaves(state)]
        for t in tensors:
            if isinstance(t, torch.Tensor) and t.grad_fn is not None:
                # ``Node.metadata`` is a property returning the node's own dict (the stubs
                # declare a method).
                metadata = cast(dict[str, Any], t.grad_fn.metadata)
                metadata[STEP_METADATA_KEY] = dict(tag)

    step.__doc__ = original.__doc__
    return step


def _tensor_leaves(tree: Any) -> list[torch.Tensor]:
    return [t for t in pytree.tree_leaves(tree, namespace=pytree.NAMESPACE) if torch.is_tensor(t)]


@dataclasses.dataclass
class Step:
    """One unrolled step found in a graph.

    Attributes:
        label: display name, e.g. ``"MetaAdam step 2"``.
        boundary: keys of the function nodes that produced the step's outputs.
        members: keys of every node drawn inside the step (boundary included).
        after: indices (into the list of steps) of the steps this one starts from.
    """

    label: str
    boundary: set[str]
    members: set[str] = dataclasses.field(default_factory=set)
    after: set[int] = dataclasses.field(default_factory=set)


def _tagged_steps(graph: Graph) -> list[Step]:
    found: dict[tuple[int, int], Step] = {}
    for key, fn in graph.functions.items():
        try:
            tag = fn.metadata.get(STEP_METADATA_KEY)
        except (AttributeError, RuntimeError):
            continue
        if not isinstance(tag, dict) or not isinstance(tag.get("step"), int):
            continue
        ident = (int(tag.get("owner", 0)), tag["step"])
        if ident not in found:
            label = f"{tag.get('optimizer', 'step')} step {tag['step']}"
            found[ident] = Step(label, set())
        found[ident].boundary.add(key)
    # Order by optimizer (first seen) then step number.
    owners = list(dict.fromkeys(owner for owner, _ in found))
    return [found[i] for i in sorted(found, key=lambda i: (owners.index(i[0]), i[1]))]


def _snapshot_steps(graph: Graph, names: ParamNames) -> list[Step]:
    steps: list[Step] = []
    for group in names.groups:
        if not group.snapshot:
            continue
        boundary = {
            str(id(t.grad_fn))
            for _, t in group.tensors
            if t.grad_fn is not None and str(id(t.grad_fn)) in graph.functions
        }
        if boundary:
            prefix = _common_prefix([name for name, _ in group.tensors]).rstrip("._/ ")
            steps.append(Step(prefix or f"snapshot {len(steps) + 1}", boundary))
    return steps


def _common_prefix(words: list[str]) -> str:
    first, last = min(words), max(words)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


def find_steps(graph: Graph, names: ParamNames) -> list[Step]:
    """The unrolled steps in ``graph``, with their members and order.

    Step tags are used when the graph has any; otherwise snapshots in ``names``. A node
    belongs to a step when it is reached from that step's boundary going towards the inputs
    without crossing another step's boundary, and from no other step that way; nodes shared by
    several steps, leaves (meta-parameters) and the graph's outputs stay outside every step.
    """
    steps = _tagged_steps(graph) or _snapshot_steps(graph, names)
    if not steps:
        return []
    owner: dict[str, int] = {}
    for i, step in enumerate(steps):
        for key in step.boundary:
            owner.setdefault(key, i)
    for key, node in graph.nodes.items():
        if node.role == Role.INNER_PARAMETER and node.producer in owner:
            owner[key] = owner[node.producer]
    inputs = graph.inputs()
    claims: dict[str, set[int]] = {}
    for i, step in enumerate(steps):
        start = [k for k, o in owner.items() if o == i]
        seen = set(start)
        stack = list(start)
        while stack:
            for source in inputs[stack.pop()]:
                if source in seen:
                    continue
                other = owner.get(source)
                if other is not None and other != i:
                    step.after.add(other)
                    continue
                if _stays_outside(graph.nodes[source], graph, inputs):
                    continue
                seen.add(source)
                stack.append(source)
        for key in seen:
            claims.setdefault(key, set()).add(i)
    for key, who in claims.items():
        if len(who) == 1:
            steps[next(iter(who))].members.add(key)
    # A tensor saved by a function inside a step (show_saved) is drawn inside it too.
    member_of = {key: i for i, step in enumerate(steps) for key in step.members}
    savers: dict[str, set[int | None]] = {}
    for edge in graph.edges:
        if edge.undirected and edge.head not in claims:
            savers.setdefault(edge.head, set()).add(member_of.get(edge.tail))
    for key, saver_steps in savers.items():
        (only,) = saver_steps if len(saver_steps) == 1 else (None,)
        if only is not None:
            steps[only].members.add(key)
    return steps


def _stays_outside(node: Node, graph: Graph, inputs: dict[str, list[str]]) -> bool:
    """Leaves and their ``AccumulateGrad`` nodes, and the outputs, are never folded away."""
    if node.role in (Role.META_PARAMETER, Role.OUTPUT, Role.VIEW_BASE):
        return True
    fn = graph.functions.get(node.key)
    return fn is not None and isinstance(getattr(fn, "variable", None), torch.Tensor)


def depth(steps: list[Step]) -> int:
    """Length of the longest chain of steps, each starting from the previous one."""
    longest: dict[int, int] = {}
    pending = {i: set(step.after) - {i} for i, step in enumerate(steps)}
    while pending:
        ready = [i for i, after in pending.items() if after <= longest.keys()]
        if not ready:  # a cycle cannot come from autograd; count what remains once
            ready = list(pending)
        for i in ready:
            longest[i] = 1 + max((longest.get(j, 0) for j in pending.pop(i)), default=0)
    return max(longest.values(), default=0)
