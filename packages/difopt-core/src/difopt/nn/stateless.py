"""Temporarily or permanently swap the tensors of a module (functional calls)."""

from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator

import torch
from torch import nn

__all__ = ["reparameterize", "reparametrize", "swap_state"]


def _items(named_tensors: Any) -> list[tuple[str, torch.Tensor]]:
    if isinstance(named_tensors, dict):
        return list(named_tensors.items())
    return list(named_tensors)


def swap_state(
    module: nn.Module,
    named_tensors: dict[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
    allow_missing: bool = False,
) -> dict[str, torch.Tensor]:
    """Replace the module's tensors named in ``named_tensors``; return the replaced ones.

    Names are dotted paths of parameters or buffers (``"layer.0.weight"``). Unless
    ``allow_missing``, every parameter and buffer of the module must be given. Everything is
    checked before anything is replaced.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"'module' must be an nn.Module, got {type(module).__name__}")
    items = _items(named_tensors)
    plan = []
    for name, value in items:
        prefix, _, attr = name.rpartition(".")
        try:
            owner = module.get_submodule(prefix) if prefix else module
        except AttributeError as exc:
            raise KeyError(f"'named_tensors' names {name!r}, which is not in the module") from exc
        if attr in owner._parameters:
            container: dict[str, Any] = owner._parameters
        elif attr in owner._buffers:
            container = owner._buffers
        else:
            raise KeyError(f"'named_tensors' names {name!r}, which is not a parameter or buffer")
        if value is not None and not torch.is_tensor(value):
            raise TypeError(
                f"'named_tensors'[{name!r}] must be a tensor, got {type(value).__name__}"
            )
        plan.append((name, container, attr, value))
    if not allow_missing:
        given = {name for name, *_ in plan}
        expected = {n for n, _ in module.named_parameters(remove_duplicate=False)}
        expected |= {n for n, _ in module.named_buffers(remove_duplicate=False)}
        missing = sorted(expected - given)
        if missing:
            raise KeyError(f"'named_tensors' misses {missing} (pass allow_missing=True)")
    old: dict[str, Any] = {}
    for name, container, attr, value in plan:
        old[name] = container[attr]
        container[attr] = value
    return old


@contextlib.contextmanager
def reparametrize(
    module: nn.Module,
    named_tensors: dict[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
    allow_missing: bool = False,
) -> Iterator[nn.Module]:
    """Context manager: the module uses ``named_tensors`` inside the block, its own after."""
    old = swap_state(module, named_tensors, allow_missing)
    try:
        yield module
    finally:
        swap_state(module, old, allow_missing=True)


reparameterize = reparametrize
