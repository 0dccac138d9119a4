"""Updates with ``None`` leaves: parameters that received no gradient this step.

``torch.autograd.grad(loss, params, allow_unused=True)`` returns ``None`` for a parameter the
loss does not depend on, and TorchOpt's transformations accept such updates. difopt's follow
the same contract: where an update leaf is ``None`` the output leaf is ``None`` and the
transformation's per-parameter state for that leaf is left as it was, step counter included
(counters are per parameter, as in TorchOpt and torch.optim).

Transformations are written for complete updates. :func:`none_aware` wraps their ``update``:
when the updates hold a ``None`` leaf it hides the matching leaves of ``params`` and of every
state sub-tree shaped like the parameters (replacing them with ``None`` too, which optree
treats as an empty sub-tree), runs the update on what remains, and puts the hidden state
leaves back. Updates without ``None`` (the usual case) cost one flatten.

Per-parameter step counters then differ once a parameter has skipped a step, while the
transformations' arithmetic reads one step value per call (the bias corrections are scalars
of the whole call). :func:`by_step` wraps ``update`` below :func:`none_aware`: when the
counters of a state's ``count`` field disagree, it runs the update once per step value on
the leaves at that value, hiding the others the same way. Counters that agree (the usual
case) cost reading them.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import optree
import torch

from difopt import _leafwise as lw
from difopt import _step_counters as counters
from difopt._shapes import check_update_shapes
from difopt.pytree import NAMESPACE

__all__ = ["by_step", "none_aware", "same_structure"]

UpdateFn = Callable[..., tuple[Any, Any]]


def none_aware(update: UpdateFn) -> UpdateFn:
    """Wrap ``update(updates, state, *, params, inplace)`` to accept ``None`` update leaves."""

    @functools.wraps(update)
    def wrapper(
        updates: Any, state: Any, *, params: Any = None, inplace: bool = True
    ) -> tuple[Any, Any]:
        leaves, spec = lw.flatten_with_none(updates)
        check_update_shapes(updates, leaves, state, params)
        missing = [leaf is None for leaf in leaves]
        if not any(missing):
            return update(updates, state, params=params, inplace=inplace)
        if all(missing):
            return updates, state  # nothing took a step
        hidden_state = _hide(state, spec, missing)
        hidden_params = _hide(params, spec, missing)
        out, new_state = update(updates, hidden_state, params=hidden_params, inplace=inplace)
        return out, _restore(state, new_state, spec, missing)

    return wrapper


def by_step(update: UpdateFn) -> UpdateFn:
    """Wrap ``update`` so that each call sees step counters that agree (see the module doc).

    The state's ``count`` field, when it is a tree shaped like the updates, holds the
    counters; a state without one, or with a single shared counter, is passed through.
    """

    @functools.wraps(update)
    def wrapper(
        updates: Any, state: Any, *, params: Any = None, inplace: bool = True
    ) -> tuple[Any, Any]:
        # A NamedTuple state with a ``count`` field (every tuple has a count *method*).
        count = state.count if "count" in getattr(state, "_fields", ()) else None
        values = None if count is None else counters.step_values(count)
        if values == []:  # no parameters: nothing steps (a step value would be meaningless)
            return updates, state
        if values is None:
            if torch.compiler.is_compiling():
                counters.assert_counters_agree(count)
            return update(updates, state, params=params, inplace=inplace)
        if all(v == values[0] for v in values):
            return update(updates, state, params=params, inplace=inplace)
        leaves, spec = lw.flatten_with_none(updates)
        count_leaves, count_spec = lw.flatten_with_none(count)
        if not same_structure(count_spec, spec):  # not one counter per parameter: nothing to split
            return update(updates, state, params=params, inplace=inplace)
        step_of = _spread(values, count_leaves)
        out_leaves: list[Any] = list(leaves)
        for value in sorted(set(values)):
            hide = [leaf is None or at != value for leaf, at in zip(leaves, step_of)]
            out, new_state = update(
                _hide(updates, spec, hide),
                _hide(state, spec, hide),
                params=_hide(params, spec, hide),
                inplace=inplace,
            )
            state = _restore(state, new_state, spec, hide)
            for i, (o, h) in enumerate(zip(lw.flatten_with_none(out)[0], hide)):
                if not h:
                    out_leaves[i] = o
        return lw.unflatten(spec, out_leaves), state

    return wrapper


def _spread(values: Sequence[int], leaves: Sequence[Any]) -> list[int | None]:
    """``values`` (one per non-None leaf) laid out over ``leaves`` (None where a leaf is None)."""
    it = iter(values)
    return [None if leaf is None else next(it) for leaf in leaves]


def _shaped_like(tree: Any, spec: optree.PyTreeSpec) -> bool:
    return same_structure(optree.tree_structure(tree, none_is_leaf=True, namespace=NAMESPACE), spec)


def same_structure(a: optree.PyTreeSpec, b: optree.PyTreeSpec) -> bool:
    """Whether two structures are the same up to list versus tuple: parameters given as a
    list have gradients from ``torch.autograd.grad`` as a tuple."""
    if a == b:
        return True
    if a.num_leaves != b.num_leaves:
        return False
    return _as_tuples(a) == _as_tuples(b)


def _as_tuples(spec: optree.PyTreeSpec) -> optree.PyTreeSpec:
    def convert(node: Any) -> Any:
        if isinstance(node, (list, tuple)) and type(node) in (list, tuple):
            return tuple(convert(x) for x in node)
        if type(node) is dict:
            return {k: convert(v) for k, v in node.items()}
        return node

    skeleton = optree.tree_unflatten(spec, [0] * spec.num_leaves)
    return optree.tree_structure(convert(skeleton), none_is_leaf=True, namespace=NAMESPACE)


def _children(tree: Any) -> Any:
    """One level of ``tree`` (None for a leaf)."""
    if optree.tree_is_leaf(tree, none_is_leaf=True, namespace=NAMESPACE):
        return None
    return optree.tree_flatten_one_level(tree, none_is_leaf=True, namespace=NAMESPACE)


def _hide(tree: Any, spec: optree.PyTreeSpec, missing: Sequence[bool]) -> Any:
    """``tree`` with the leaves at ``missing`` positions of every parameter-shaped part None."""
    if tree is None:
        return None
    if _shaped_like(tree, spec):
        leaves, own = lw.flatten_with_none(tree)
        return lw.unflatten(own, [None if m else x for x, m in zip(leaves, missing)])
    level = _children(tree)
    if level is None:
        return tree
    children = [_hide(child, spec, missing) for child in level.children]
    return level.unflatten_func(level.metadata, children)


def _restore(old: Any, new: Any, spec: optree.PyTreeSpec, missing: Sequence[bool]) -> Any:
    """``new`` with the hidden leaves taken back from ``old`` (walked as :func:`_hide` did)."""
    if old is None:
        return new
    if _shaped_like(old, spec):
        old_leaves, own = lw.flatten_with_none(old)
        new_leaves, _ = lw.flatten_with_none(new)
        if len(new_leaves) != len(old_leaves):
            return new  # not a per-parameter tree after all; keep what the update returned
        merged = [o if m else n for o, n, m in zip(old_leaves, new_leaves, missing)]
        return lw.unflatten(own, merged)
    old_level, new_level = _children(old), _children(new)
    if old_level is None or new_level is None or len(old_level.children) != len(new_level.children):
        return new
    children = [
        _restore(o, n, spec, missing) for o, n in zip(old_level.children, new_level.children)
    ]
    return new_level.unflatten_func(new_level.metadata, children)
