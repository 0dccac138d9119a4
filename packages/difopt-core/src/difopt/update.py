"""Applying updates to parameters."""

from __future__ import annotations

from typing import Any

import torch

from difopt import _leafwise as lw

__all__ = ["apply_updates"]


def apply_updates(params: Any, updates: Any, *, inplace: bool = True) -> Any:
    """Return ``params + updates``.

    Args:
        params: a pytree of tensors.
        updates: a pytree of tensors with the same structure.
        inplace: add into ``params`` (under ``torch.no_grad`` when they are leaves that
            require grad) and return them; with ``False``, return new tensors on the graph.

    Raises:
        ValueError: if the tree structures differ; nothing is modified then.
    """
    ps, spec = lw.flatten(params)
    us, u_spec = lw.flatten(updates)
    if u_spec != spec:
        raise ValueError(
            f"'updates' has tree structure {u_spec}, which does not match 'params' {spec}"
        )
    if not inplace:
        return lw.unflatten(spec, lw.add(ps, us))
    with torch.no_grad():
        lw.add_(ps, us)
    return params
