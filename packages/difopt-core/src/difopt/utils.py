"""Explicit-differentiation utilities: snapshot, restore, detach and clone module state.

These are the tools of unrolled meta-learning: take a snapshot of a model (and of its meta
optimizer) before an inner loop, differentiate through the loop, then restore the snapshot
for the next task and cut the graph.
"""

from __future__ import annotations

import copy
from typing import Any, Literal, NamedTuple

import torch
from torch import nn

from difopt import _leafwise as lw
from difopt import pytree
from difopt.optim.meta.base import MetaOptimizer

__all__ = [
    "CopyMode",
    "ModuleState",
    "extract_state_dict",
    "module_clone",
    "module_detach_",
    "recover_state_dict",
    "stop_gradient",
]

CopyMode = Literal["reference", "copy", "deepcopy", "ref", "clone", "deepclone"]
_POLICIES = {
    "reference": "reference",
    "ref": "reference",
    "copy": "copy",
    "clone": "copy",
    "deepcopy": "deepcopy",
    "deepclone": "deepcopy",
}


class ModuleState(NamedTuple):
    """A snapshot of a module: its parameter and buffer containers, one dict per sub-module.

    ``visual_contents`` maps display names (``visual_prefix`` + the parameter's dotted name)
    to the snapshot's tensors when taken with ``enable_visual=True``, for
    ``difopt.visual.make_dot(..., params=state)``. (TorchOpt keyed this mapping by tensor;
    difopt keys it by name, like ``named_parameters()``.)
    """

    params: tuple[dict[str, torch.Tensor], ...]
    buffers: tuple[dict[str, torch.Tensor], ...]
    visual_contents: dict[str, torch.Tensor] | None = None
    detach_buffers: bool = False


def _copier(by: Any, device: Any) -> Any:
    if by not in _POLICIES:
        raise ValueError(
            f"Invalid value for 'by': {by!r} (expected one of {sorted(_POLICIES)}: "
            "'reference' shares tensors, 'copy'/'clone' copies them on the graph, "
            "'deepcopy'/'deepclone' copies them detached)"
        )
    policy = _POLICIES[by]

    def copy_tensor(t: torch.Tensor) -> torch.Tensor:
        if policy == "reference":
            return t if device is None else t.to(device)
        if policy == "copy":
            out = t.clone()
            return out if device is None else out.to(device)
        out = t.detach().clone()
        if device is not None:
            out = out.to(device)
        return out.requires_grad_(t.requires_grad)

    return copy_tensor


def _tensors_only(fn: Any) -> Any:
    return lambda x: fn(x) if torch.is_tensor(x) else x


def _module_containers(module: nn.Module, attr: str) -> list[dict[str, Any]]:
    """The non-empty ``attr`` dicts (``_parameters`` or ``_buffers``) of the module tree."""
    return [getattr(m, attr) for m in module.modules() if getattr(m, attr)]


def extract_state_dict(
    target: nn.Module | MetaOptimizer,
    *,
    by: CopyMode = "reference",
    device: Any = None,
    with_buffers: bool = True,
    detach_buffers: bool = False,
    enable_visual: bool = False,
    visual_prefix: str = "",
) -> Any:
    """Snapshot the parameters (and buffers) of a module, or the state of a meta optimizer.

    Args:
        target: an ``nn.Module`` or a :class:`difopt.MetaOptimizer`.
        by: ``'reference'``/``'ref'`` (share tensors), ``'copy'``/``'clone'`` (copies that
            stay on the autograd graph) or ``'deepcopy'``/``'deepclone'`` (detached copies).
        device: move the copies to this device.
        with_buffers: also snapshot buffers (modules only).
        detach_buffers: detach the buffers' copies (modules only).
        enable_visual: record parameter names for ``difopt.visual.make_dot``.
        visual_prefix: prefix for those names.

    Returns:
        A :class:`ModuleState` for a module; a tuple of state trees for a meta optimizer.
    """
    copy_tensor = _copier(by, device)
    if isinstance(target, MetaOptimizer):
        return tuple(
            pytree.tree_map(_tensors_only(copy_tensor), s, namespace=pytree.NAMESPACE)
            for s in target.state_groups
        )
    if not isinstance(target, nn.Module):
        raise TypeError(
            f"'target' must be an nn.Module or a MetaOptimizer, got {type(target).__name__}"
        )
    params = tuple(
        {k: copy_tensor(v) for k, v in c.items() if v is not None}
        for c in _module_containers(target, "_parameters")
    )
    buffers: tuple[dict[str, torch.Tensor], ...] = ()
    if with_buffers:

        def copy_buffer(t: torch.Tensor) -> torch.Tensor:
            out = copy_tensor(t)
            return out.detach() if detach_buffers else out

        buffers = tuple(
            {k: copy_buffer(v) for k, v in c.items() if v is not None}
            for c in _module_containers(target, "_buffers")
        )
    visual = None
    if enable_visual:
        names = {id(v): f"{visual_prefix}{k}" for k, v in target.named_parameters()}
        visual = {}
        for original, snapshot in zip(_module_containers(target, "_parameters"), params):
            for key, tensor in snapshot.items():
                visual[names.get(id(original[key]), f"{visual_prefix}{key}")] = tensor
    return ModuleState(params, buffers, visual, detach_buffers)


def recover_state_dict(target: nn.Module | MetaOptimizer, state: Any) -> None:
    """Put a snapshot from :func:`extract_state_dict` back into ``target`` (by reference)."""
    if isinstance(target, MetaOptimizer):
        target.load_state_dict(state)
        return
    if not isinstance(target, nn.Module):
        raise TypeError(
            f"'target' must be an nn.Module or a MetaOptimizer, got {type(target).__name__}"
        )
    if not isinstance(state, ModuleState):
        raise TypeError(f"'state' must be a ModuleState, got {type(state).__name__}")
    pairs = [("params", "_parameters", state.params)]
    if state.buffers:
        pairs.append(("buffers", "_buffers", state.buffers))
    plans = []
    for what, attr, saved in pairs:
        containers = _module_containers(target, attr)
        if len(containers) != len(saved):
            raise ValueError(
                f"'state' holds {len(saved)} {what} containers but the module has "
                f"{len(containers)}; was it extracted from a module of this architecture?"
            )
        for c, s in zip(containers, saved):
            if set(k for k, v in c.items() if v is not None) != set(s):
                raise ValueError(f"'state' {what} keys {sorted(s)} do not match {sorted(c)}")
        plans.append((containers, saved))
    for containers, saved in plans:
        for c, s in zip(containers, saved):
            c.update(s)


def _tensors_of(target: Any) -> list[torch.Tensor]:
    if isinstance(target, ModuleState):
        return [v for c in (*target.params, *target.buffers) for v in c.values()]
    if isinstance(target, nn.Module):
        return [
            v
            for attr in ("_parameters", "_buffers")
            for c in _module_containers(target, attr)
            for v in c.values()
            if v is not None
        ]
    if isinstance(target, MetaOptimizer):
        return [t for s in target.state_groups for t in lw.leaves(s) if torch.is_tensor(t)]
    return [t for t in lw.leaves(target) if torch.is_tensor(t)]


def stop_gradient(target: Any) -> None:
    """Cut the autograd history of every tensor in ``target``, in place.

    ``target`` may be a module, a :class:`ModuleState`, a meta optimizer or a pytree of
    tensors. Tensors keep their ``requires_grad`` flag; they become leaves.
    """
    for t in _tensors_of(target):
        if t.grad_fn is not None or t.requires_grad:
            requires_grad = t.requires_grad
            t.detach_().requires_grad_(requires_grad)


def module_detach_(target: Any) -> Any:
    """Detach every tensor of ``target`` in place (see :func:`stop_gradient`); return it."""
    stop_gradient(target)
    return target


def module_clone(
    target: Any,
    *,
    by: CopyMode = "reference",
    detach_buffers: bool = False,
    device: Any = None,
) -> Any:
    """Clone a module, a meta optimizer's state, or a pytree of tensors under policy ``by``.

    A module is copied structurally; its parameters and buffers are replaced per ``by``
    (``'copy'`` keeps the graph, so gradients flow back to the original parameters).
    """
    copy_tensor = _copier(by, device)
    if isinstance(target, nn.Module):
        memo: dict[int, Any] = {}
        for attr in ("_parameters", "_buffers"):
            for c in _module_containers(target, attr):
                for v in c.values():
                    if v is None or id(v) in memo:
                        continue
                    new = copy_tensor(v)
                    if attr == "_buffers" and detach_buffers:
                        new = new.detach()
                    memo[id(v)] = new
        return copy.deepcopy(target, memo)
    if isinstance(target, MetaOptimizer):
        return extract_state_dict(target, by=by, device=device)
    return pytree.tree_map(_tensors_only(copy_tensor), target, namespace=pytree.NAMESPACE)
