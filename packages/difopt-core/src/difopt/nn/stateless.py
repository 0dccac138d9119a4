"""Temporarily or permanently swap the tensors of a module (functional calls)."""

from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator

import torch
from torch import nn

__all__ = ["reparameterize", "reparametrize", "swap_state"]


def _submodule(module: nn.Module, name: str, path: str) -> nn.Module:
    child = module._modules.get(name)
    if child is None:
        child = getattr(module, "_meta_modules", {}).get(name)
    if child is None:
        raise KeyError(f"'named_tensors' names {path!r}, which is not in the module")
    return child


def _container_of(module: nn.Module, path: str) -> tuple[dict[str, Any], str]:
    """The dict holding tensor ``path`` (a parameter, buffer or meta-parameter) and its key.

    Paths go through sub-modules and, for :class:`difopt.nn.MetaGradientModule`, through
    meta-modules and meta-parameters too.
    """
    *parents, attr = path.split(".")
    owner = module
    for part in parents:
        owner = _submodule(owner, part, path)
    for container in (
        owner._parameters,
        owner._buffers,
        getattr(owner, "_meta_parameters", {}),
    ):
        if attr in container:
            return container, attr
    raise KeyError(f"'named_tensors' names {path!r}, which is not a parameter or buffer")


def swap_state(
    module: nn.Module,
    named_tensors: dict[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
    allow_missing: bool = False,
) -> dict[str, torch.Tensor]:
    """Replace the module's tensors named in ``named_tensors``; return the replaced ones.

    Names are dotted paths of parameters or buffers (``"layer.0.weight"``), and of the
    meta-parameters and meta-modules' tensors of a :class:`difopt.nn.MetaGradientModule`.
    Unless ``allow_missing``, every parameter and buffer of the module must be given. Everything is
    checked before anything is replaced.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"'module' must be an nn.Module, got {type(module).__name__}")
    items = named_tensors.items() if isinstance(named_tensors, dict) else named_tensors
    plan = []
    for name, value in items:
        container, attr = _container_of(module, name)
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
