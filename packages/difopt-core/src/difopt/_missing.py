"""Updates with ``None`` leaves: parameters that received no gradient this step.

``torch.autograd.grad(loss, params, allow_unused=True)`` returns ``None`` for a parameter the
loss does not depend on, and TorchOpt's transformations accept such updates. difopt's follow
the same contract: where an update leaf is ``None`` the output leaf is ``None`` and the
transformation's per-parameter state for that leaf is left as it was; the rest of the state
(a step counter shared by all parameters) advances as usual.

Transformations are written for complete updates. :func:`none_aware` wraps their ``update``:
when the updates hold a ``None`` leaf it hides the matching leaves of ``params`` and of every
state sub-tree shaped like the parameters (replacing them with ``None`` too, which optree
treats as an empty sub-tree), runs the update on what remains, and puts the hidden state
leaves back. Updates without ``None`` (the usual case) cost one flatten.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import optree

from difopt import _leafwise as lw
from difopt.pytree import NAMESPACE

__all__ = ["complete_update", "none_aware"]

UpdateFn = Callable[..., tuple[Any, Any]]


def none_aware(update: UpdateFn) -> UpdateFn:
    """Wrap ``update(updates, state, *, params, inplace)`` to accept ``None`` update leaves."""

    @functools.wraps(update)
    def wrapper(
        updates: Any, state: Any, *, params: Any = None, inplace: bool = True
    ) -> tuple[Any, Any]:
        leaves, spec = lw.flatten_with_none(updates)
        missing = [leaf is None for leaf in leaves]
        if not any(missing):
            return update(updates, state, params=params, inplace=inplace)
        if all(missing):
            return updates, state  # nothing took a step
        hidden_state = _hide(state, spec, missing)
        hidden_params = _hide(params, spec, missing)
        out, new_state = update(updates, hidden_state, params=hidden_params, inplace=inplace)
        return out, _restore(state, new_state, spec, missing)

    wrapper._difopt_complete = update  # type: ignore[attr-defined]
    return wrapper


def complete_update(update: UpdateFn) -> UpdateFn:
    """The function :func:`none_aware` wrapped (``update`` itself if it wraps nothing).

    A chain hides the missing leaves once for all its parts' states and calls these.
    """
    return getattr(update, "_difopt_complete", update)


def _shaped_like(tree: Any, spec: optree.PyTreeSpec) -> bool:
    return optree.tree_structure(tree, none_is_leaf=True, namespace=NAMESPACE) == spec


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
        leaves, _ = lw.flatten_with_none(tree)
        return lw.unflatten(spec, [None if m else x for x, m in zip(leaves, missing)])
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
        old_leaves, _ = lw.flatten_with_none(old)
        new_leaves, _ = lw.flatten_with_none(new)
        if len(new_leaves) != len(old_leaves):
            return new  # not a per-parameter tree after all; keep what the update returned
        merged = [o if m else n for o, n, m in zip(old_leaves, new_leaves, missing)]
        return lw.unflatten(spec, merged)
    old_level, new_level = _children(old), _children(new)
    if old_level is None or new_level is None or len(old_level.children) != len(new_level.children):
        return new
    children = [
        _restore(o, n, spec, missing) for o, n in zip(old_level.children, new_level.children)
    ]
    return new_level.unflatten_func(new_level.metadata, children)
