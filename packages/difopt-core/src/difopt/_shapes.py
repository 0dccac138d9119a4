"""The shapes of an update, checked before any state is written.

The element-wise arithmetic of the transformations broadcasts: an update of shape ``(2,)``
for a ``(2, 2)`` parameter, or of shape ``(1,)`` for any parameter, would silently be spread
over the whole moment, and an update that cannot broadcast fails in the middle of a step, after
earlier leaves' (or earlier transformations') state was written in place. So the outermost
``update`` of a transformation or chain (:func:`difopt._missing_leaves.none_aware`) first compares
the update's leaves with the parameters, or without ``params`` with a moment of the state,
and raises a ``ValueError`` naming the leaf before anything runs.

A state type declares which of its fields are trees of tensors shaped like the parameters with
:func:`param_shaped`; a state without such a declaration (a counter, a schedule, a masked or
factored state) is not used as a reference.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar

import optree

from difopt import _leafwise as lw
from difopt.pytree import NAMESPACE

__all__ = ["check_leaf_shapes", "check_update_shapes", "param_shaped"]

_S = TypeVar("_S")
_PARAM_SHAPED: dict[type, tuple[str, ...]] = {}


def param_shaped(*fields: str) -> Callable[[_S], _S]:
    """Class decorator: the named fields of this state hold one tensor per parameter, each
    shaped like its parameter (the first of them is the reference for the update's shapes)."""

    def register(cls: _S) -> _S:
        _PARAM_SHAPED[cls] = fields  # type: ignore[index]
        return cls

    return register


def _state_reference(state: Any) -> Any:
    """The first parameter-shaped tree in ``state`` (a state, or a chain's tuple of them)."""
    fields = _PARAM_SHAPED.get(type(state))
    if fields is not None:
        return getattr(state, fields[0])
    if type(state) is tuple:
        for part in state:
            found = _state_reference(part)
            if found is not None:
                return found
    return None


def check_update_shapes(updates: Any, leaves: Sequence[Any], state: Any, params: Any) -> None:
    """Raise ``ValueError`` when the leaves of ``updates`` (``leaves``, ``None`` for a missing
    one) do not match the parameters (or, without ``params``, the parameter-shaped moments of
    ``state``)."""
    if params is not None:
        reference, name = params, "'params'"
    else:
        reference, name = _state_reference(state), "the state's moments"
        if reference is None:
            return
    ref_leaves, _ = lw.flatten_with_none(reference)
    if len(ref_leaves) != len(leaves):
        raise ValueError(
            f"'updates' has {len(leaves)} leaves but {name} has {len(ref_leaves)}: the updates "
            "must have the structure of the parameters"
        )
    check_leaf_shapes(updates, leaves, ref_leaves, from_params=params is not None)


def check_leaf_shapes(
    updates: Any, leaves: Sequence[Any], ref_leaves: Sequence[Any], *, from_params: bool
) -> None:
    """Raise ``ValueError`` naming the first update leaf whose shape differs from its
    reference leaf (the parameter, or the state's moment when ``from_params`` is false);
    ``None`` and non-tensor leaves are not compared."""
    ours = [getattr(u, "shape", None) for u in leaves]
    theirs = [getattr(r, "shape", None) for r in ref_leaves]
    if ours == theirs:
        return
    paths, _, _ = optree.tree_flatten_with_path(updates, none_is_leaf=True, namespace=NAMESPACE)
    for path, u, r in zip(paths, ours, theirs):
        if u is not None and r is not None and u != r:
            where = "".join(f"[{k!r}]" for k in path)
            expected = (
                f"params{where} has shape {tuple(r)}"
                if from_params
                else f"the optimizer state is for shape {tuple(r)} there (was it built by "
                "init() for these parameters?)"
            )
            raise ValueError(
                f"updates{where} has shape {tuple(u)} but {expected}; updates must have their "
                "parameters' shapes (they are not broadcast)"
            )
