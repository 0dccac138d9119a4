"""Optimizer state to and from plain containers (``torch.load(weights_only=True)``-safe)."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from difopt import _leafwise as lw
from difopt import _step_counters as counters


def placement(params: Any) -> tuple[tuple[torch.dtype, torch.device], ...]:
    """The parameters' dtypes and devices: what a state made for them depends on (an optimizer
    whose parameters were cast or moved before its first step makes its state again)."""
    return tuple((p.dtype, p.device) for p in params)


def _plain(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str, type(None))):
        return value
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        return value.detach().clone()  # a tensor lr
    if isinstance(value, (tuple, list)) and all(isinstance(v, (bool, int, float)) for v in value):
        return list(value)
    return repr(value)


def to_dict(state_groups: Sequence[Any], param_groups: Sequence[dict[str, Any]]) -> dict[str, Any]:
    state = [lw.leaves(s) for s in state_groups]
    groups = []
    start = 0
    for g in param_groups:
        n = len(g["params"])
        entry = {k: _plain(v) for k, v in g.items() if k != "params"}
        entry["params"] = list(range(start, start + n))
        start += n
        groups.append(entry)
    return {"state": state, "param_groups": groups}


def from_dict(state_dict: Any, current: Sequence[Any], by_reference: bool = False) -> list[Any]:
    """Return new state groups built from ``state_dict``, validated against ``current``.

    The saved tensors are copied (detached, cast to the current ones' dtype and device), or,
    ``by_reference``, taken as they are where dtype and device already match (a meta
    optimizer's state keeps its autograd graph, as TorchOpt's does).
    """
    if isinstance(state_dict, dict):
        if "state" not in state_dict:
            raise ValueError("'state_dict' has no 'state' entry; was it made by state_dict()?")
        saved = [list(s) for s in state_dict["state"]]
    elif isinstance(state_dict, (list, tuple)):
        saved = [lw.leaves(s) for s in state_dict]
    else:
        raise TypeError(
            f"'state_dict' must be a dict from state_dict() or a sequence of states, got "
            f"{type(state_dict).__name__}"
        )
    if len(saved) != len(current):
        raise ValueError(
            f"'state_dict' has {len(saved)} state groups, but the optimizer has {len(current)}"
        )
    restored = []
    for gi, (leaves_saved, cur) in enumerate(zip(saved, current)):
        cur_leaves, spec = lw.flatten(cur)
        if len(leaves_saved) != len(cur_leaves):
            raise ValueError(
                f"'state_dict' group {gi} has {len(leaves_saved)} state tensors, expected "
                f"{len(cur_leaves)} (was it saved from the same optimizer and parameters?)"
            )
        new = []
        for li, (s, c) in enumerate(zip(leaves_saved, cur_leaves)):
            if torch.is_tensor(c):
                if not torch.is_tensor(s) or s.shape != c.shape:
                    raise ValueError(
                        f"'state_dict' group {gi} entry {li}: expected a tensor of shape "
                        f"{tuple(c.shape)}, got {getattr(s, 'shape', type(s).__name__)}"
                    )
                if by_reference and s.dtype == c.dtype and s.device == c.device:
                    new.append(s)
                    continue
                t = s.detach().to(device=c.device, dtype=c.dtype, copy=True)
                new.append(t.requires_grad_(c.requires_grad))
            else:
                new.append(s)
        restored.append(lw.unflatten(spec, new))
    return restored


def counts_differ(state: Any) -> bool:
    """Whether a state holds step counters (``count`` fields) whose values differ between
    parameters (read eagerly)."""
    if isinstance(state, tuple) and "count" in getattr(state, "_fields", ()):
        values = counters.step_values(state.count)
        if values and any(v != values[0] for v in values):
            return True
    if isinstance(state, (tuple, list)):
        return any(counts_differ(part) for part in state)
    return False


def hyper_from_dict(
    state_dict: Any, param_groups: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The hyper-parameters saved with ``state_dict``'s groups that can be restored: numbers,
    flags, tuples of numbers and 0-d tensors; not the text that describes a schedule."""
    saved = state_dict.get("param_groups") if isinstance(state_dict, dict) else None
    if saved is None:  # TorchOpt's tuple of states carries no hyper-parameters
        return [{} for _ in param_groups]
    if len(saved) != len(param_groups):
        raise ValueError(
            f"'state_dict' has {len(saved)} parameter groups, but the optimizer has "
            f"{len(param_groups)}"
        )
    out = []
    for entry, current in zip(saved, param_groups):
        restored: dict[str, Any] = {}
        for key, value in entry.items():
            if key == "params" or (
                isinstance(value, str) and not isinstance(current.get(key), str)
            ):
                continue
            if isinstance(value, list) and isinstance(current.get(key), tuple):
                value = tuple(value)
            restored[key] = value
        out.append(restored)
    return out
