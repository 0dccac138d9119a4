"""Turning the ``params`` argument of :func:`make_dot` into tensor names.

``params`` takes every form TorchOpt's ``make_dot`` takes (a mapping name -> tensor or
tensor -> name, the ``named_parameters()`` generator, a :class:`difopt.utils.ModuleState`
extracted with ``enable_visual=True``) and an iterable of those. Each such form is one *group*: the groups
are kept apart because a snapshot of a module taken after an unrolled step marks that step's
boundary (see :mod:`difopt_visual._steps`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch

from difopt.utils import ModuleState

__all__ = ["NameGroup", "ParamNames", "parse_params"]

_ACCEPTED = (
    "None, a mapping name -> tensor (or tensor -> name), an iterator of (name, tensor) pairs such as "
    "module.named_parameters(), a ModuleState from "
    "difopt.extract_state_dict(..., enable_visual=True), or a list/tuple of these"
)


@dataclasses.dataclass(frozen=True)
class NameGroup:
    """Named tensors that came in one piece of ``params``.

    Attributes:
        tensors: ``(name, tensor)`` pairs, in the order given.
        snapshot: whether the group is a :class:`ModuleState` (a snapshot of a module).
    """

    tensors: tuple[tuple[str, torch.Tensor], ...]
    snapshot: bool


@dataclasses.dataclass
class ParamNames:
    """Lookup of display names for the tensors met while walking an autograd graph.

    A leaf tensor is found at its ``AccumulateGrad`` node (``node.variable``), a non-leaf
    tensor as output ``output_nr`` of its ``grad_fn``; both are keyed by object identity,
    which stays valid because ``groups`` holds the tensors (and they hold their ``grad_fn``).
    """

    groups: list[NameGroup] = dataclasses.field(default_factory=list)
    leaves: dict[int, list[str]] = dataclasses.field(default_factory=dict)
    outputs: dict[tuple[int, int], list[str]] = dataclasses.field(default_factory=dict)
    output_tensors: dict[tuple[int, int], torch.Tensor] = dataclasses.field(default_factory=dict)

    def add_group(self, group: NameGroup) -> None:
        """Register the names of ``group``."""
        self.groups.append(group)
        for name, tensor in group.tensors:
            if tensor.grad_fn is None:
                names = self.leaves.setdefault(id(tensor), [])
            else:
                slot = (id(tensor.grad_fn), tensor.output_nr)
                self.output_tensors.setdefault(slot, tensor)
                names = self.outputs.setdefault(slot, [])
            if name not in names:
                names.append(name)

    def of_tensor(self, tensor: torch.Tensor) -> list[str]:
        """The names given to ``tensor`` (leaf or not), or an empty list."""
        if tensor.grad_fn is None:
            return self.leaves.get(id(tensor), [])
        return self.outputs.get((id(tensor.grad_fn), tensor.output_nr), [])


def _check_pair(item: Any, where: str) -> tuple[str, torch.Tensor]:
    if not (isinstance(item, tuple) and len(item) == 2):
        raise TypeError(
            f"'params': {where} must yield (name, tensor) pairs, got {type(item).__name__}"
        )
    name, tensor = item
    return _check_named(name, tensor, where)


def _check_named(name: Any, tensor: Any, where: str) -> tuple[str, torch.Tensor]:
    if not isinstance(name, str):
        raise TypeError(
            f"'params': {where} must map names (str) to tensors, got a key of type "
            f"{type(name).__name__} ({name!r:.60})"
        )
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(
            f"'params': {where} must map names to tensors, got {type(tensor).__name__} for {name!r}"
        )
    return name, tensor


def _mapping_item(key: Any, value: Any, where: str) -> tuple[str, torch.Tensor]:
    """One entry of a mapping: name -> tensor, or the other way round (TorchOpt's example
    ``make_dot(loss, [{meta_param: 'meta_param'}])``; the layout of TorchOpt's
    ``ModuleState.visual_contents``), or autograd node -> (name, tensor) (the rest of it)."""
    if isinstance(key, torch.Tensor) and isinstance(value, str):
        return value, key
    if (
        isinstance(key, torch.autograd.graph.Node)
        and isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], torch.Tensor)
    ):
        return value
    if isinstance(key, torch.Tensor):
        raise TypeError(
            f"'params': {where} maps a tensor to {type(value).__name__}; a mapping keyed by "
            "tensors must map them to their names (str)"
        )
    return _check_named(key, value, where)


def _group(item: Any, where: str) -> NameGroup:
    """One group from a mapping, a ModuleState or an iterator of pairs."""
    if isinstance(item, ModuleState):
        if item.visual_contents is None:
            raise ValueError(
                f"'params': {where} is a ModuleState without names; take it with "
                "difopt.extract_state_dict(module, enable_visual=True, visual_prefix=...)"
            )
        pairs = tuple(_check_named(k, v, where) for k, v in item.visual_contents.items())
        return NameGroup(pairs, snapshot=True)
    if isinstance(item, Mapping):
        return NameGroup(tuple(_mapping_item(k, v, where) for k, v in item.items()), False)
    if isinstance(item, Iterator):
        return NameGroup(tuple(_check_pair(x, where) for x in item), snapshot=False)
    raise TypeError(
        f"'params': {where} has unsupported type {type(item).__name__}; expected {_ACCEPTED}"
    )


def _is_pair(item: Any) -> bool:
    return (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], torch.Tensor)
    )


def parse_params(params: Any) -> ParamNames:
    """Normalize the ``params`` argument of :func:`make_dot`.

    Args:
        params: see :func:`difopt_visual.make_dot`.

    Returns:
        The names, grouped as given.

    Raises:
        TypeError: ``params`` (or an element of it) is of an unsupported type, or a name is
            not a string, or a value is not a tensor.
        ValueError: a ModuleState was taken without ``enable_visual=True``.
    """
    names = ParamNames()
    if params is None:
        return names
    if isinstance(params, (ModuleState, Mapping, Iterator)):
        names.add_group(_group(params, "the argument"))
        return names
    if isinstance(params, (str, bytes, torch.Tensor)) or not isinstance(params, Iterable):
        raise TypeError(
            f"'params' has unsupported type {type(params).__name__}; expected {_ACCEPTED}"
        )
    loose: list[tuple[str, torch.Tensor]] = []
    for i, item in enumerate(params):
        if _is_pair(item):
            # A list of pairs, e.g. list(module.named_parameters()): one group.
            loose.append(item)
            continue
        if isinstance(item, (ModuleState, Mapping, Iterator)):
            names.add_group(_group(item, f"element {i}"))
            continue
        raise TypeError(
            f"'params': element {i} has unsupported type {type(item).__name__}; each element "
            "must be a mapping name -> tensor, an iterator of (name, tensor) pairs, a "
            "ModuleState taken with enable_visual=True, or a (name, tensor) pair"
        )
    if loose:
        names.add_group(NameGroup(tuple(loose), snapshot=False))
    return names
