"""Applying updates to parameters."""

from __future__ import annotations

from typing import Any

import torch

from difopt import _leafwise as lw
from difopt._shapes import check_leaf_shapes

__all__ = ["apply_updates"]


def apply_updates(params: Any, updates: Any, *, inplace: bool = True) -> Any:
    """Return ``params + updates``.

    Args:
        params: a pytree of tensors.
        updates: a pytree of tensors with the same structure; a ``None`` leaf (a parameter
            without a gradient, as ``torch.autograd.grad(..., allow_unused=True)`` gives)
            leaves its parameter unchanged.
        inplace: add into ``params`` (under ``torch.no_grad`` when they are leaves that
            require grad) and return them; with ``False``, return new tensors on the graph.

    Raises:
        ValueError: if the tree structures or a leaf's shape differ (an update is never
            broadcast); nothing is modified then.
    """
    ps, spec = lw.flatten_with_none(params)
    us, u_spec = lw.flatten_with_none(updates)
    if u_spec != spec:
        raise ValueError(
            f"'updates' has tree structure {u_spec}, which does not match 'params' {spec}"
        )
    check_leaf_shapes(updates, us, ps, from_params=True)
    present = [i for i, u in enumerate(us) if u is not None]
    ps_present = [ps[i] for i in present]
    us_present = [us[i] for i in present]
    if not inplace:
        new = list(ps)
        for i, x in zip(present, lw.add(ps_present, us_present)):
            new[i] = x
        return lw.unflatten(spec, new)
    with torch.no_grad():
        lw.add_(ps_present, us_present)
    return params
