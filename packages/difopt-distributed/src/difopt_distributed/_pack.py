"""Small tensors of a remote call travel packed: one flat buffer per kind of tensor.

TensorPipe moves every tensor of a message as its own transfer, each handed to its event-loop
thread (a wake-up, and on a busy core a pair of context switches). A MAML call carries the
meta-parameters (one tensor per layer) and the task tensors; its gradient comes back as one
tensor per meta-parameter. Packed, the request carries one tensor per group and the gradient
one, which saves the caller tens of wake-ups per iteration. The copy that packing costs is
cheap next to a hand-off for tensors of up to a few hundred KiB (``pack_bytes``); larger ones
travel as they are.

Tensors are grouped by (device, dtype, requires_grad). The receiver gets fresh tensors, one per
original, of the same shape, dtype, device and ``requires_grad``, contiguous and independent of
one another (an in-place change to one touches no other); gradients flow back through the
packing to the originals, as they would through RPC.
"""

from __future__ import annotations

import math
import os
from typing import Any

import optree
import torch

from difopt.pytree import NAMESPACE

__all__ = ["DEFAULT_PACK_BYTES", "PACK_BYTES_ENV", "Packed", "pack", "pack_bytes", "unpack"]

PACK_BYTES_ENV = "DIFOPT_RPC_PACK_BYTES"
DEFAULT_PACK_BYTES = 256 * 1024


def _read_pack_bytes() -> int:
    raw = os.environ.get(PACK_BYTES_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_PACK_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(
            f"environment variable {PACK_BYTES_ENV} must be a whole number of bytes >= 0 "
            f"(0 turns packing off), got {raw!r}"
        )
    return value


_pack_bytes: int | None = None


def pack_bytes() -> int:
    """The largest tensor (in bytes) that travels packed; 0 when packing is off.

    Read once from ``DIFOPT_RPC_PACK_BYTES`` (default 256 KiB).
    """
    global _pack_bytes
    if _pack_bytes is None:
        _pack_bytes = _read_pack_bytes()
    return _pack_bytes


class _Slot:
    """Stands in the pytree for the ``index``-th tensor of ``Packed.buffers[buffer]``."""

    __slots__ = ("buffer", "index")

    def __init__(self, buffer: int, index: int) -> None:
        self.buffer = buffer
        self.index = index

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Slot, (self.buffer, self.index))


class Packed:
    """A pytree whose packable tensors were replaced by slots into flat buffers.

    A plain class, not a pytree node: nothing flattens through it by accident.
    """

    __slots__ = ("buffers", "shapes", "tree")

    def __init__(
        self, tree: Any, buffers: list[torch.Tensor], shapes: list[list[tuple[int, ...]]]
    ) -> None:
        self.tree = tree
        self.buffers = buffers
        self.shapes = shapes

    def __reduce__(self) -> tuple[Any, ...]:
        return (Packed, (self.tree, self.buffers, self.shapes))


def _packable(x: Any, limit: int) -> bool:
    return (
        type(x) is torch.Tensor  # subclasses (nn.Parameter, ...) keep their own pickling
        and x.layout == torch.strided
        and not x.is_quantized
        and x.device.type in ("cpu", "cuda")
        and x.numel() * x.element_size() <= limit
    )


def pack(tree: Any, limit: int | None = None) -> Any:
    """``tree`` with its small dense tensors packed, or ``tree`` itself when nothing would be.

    Args:
        tree: a pytree (difopt's namespace) whose tensors are to be sent.
        limit: the largest tensor in bytes to pack; default :func:`pack_bytes`.

    Returns:
        A :class:`Packed` when some group of at least two tensors was packed, else ``tree``.
    """
    limit = pack_bytes() if limit is None else limit
    if limit <= 0:
        return tree
    leaves, spec = optree.tree_flatten(tree, namespace=NAMESPACE)
    groups: dict[tuple[torch.device, torch.dtype, bool], list[int]] = {}
    for i, leaf in enumerate(leaves):
        if _packable(leaf, limit):
            groups.setdefault((leaf.device, leaf.dtype, leaf.requires_grad), []).append(i)
    groups = {key: where for key, where in groups.items() if len(where) > 1}
    if not groups:
        return tree
    buffers: list[torch.Tensor] = []
    shapes: list[list[tuple[int, ...]]] = []
    for (_, _, requires_grad), where in groups.items():
        flat = torch.cat([leaves[i].reshape(-1) for i in where])
        if requires_grad and not flat.requires_grad:  # packed under no_grad: mirror the flag
            flat.requires_grad_()
        b = len(buffers)
        buffers.append(flat)
        shapes.append([tuple(leaves[i].shape) for i in where])
        for j, i in enumerate(where):
            leaves[i] = _Slot(b, j)
    return Packed(optree.tree_unflatten(spec, leaves), buffers, shapes)


def _pieces(flat: torch.Tensor, shapes: list[tuple[int, ...]]) -> tuple[torch.Tensor, ...]:
    """Fresh copies of the consecutive pieces of ``flat``, one per shape."""
    sizes = [math.prod(s) for s in shapes]
    return tuple(part.view(shape).clone() for part, shape in zip(flat.split(sizes), shapes))


class _Unpack(torch.autograd.Function):
    """Cut a flat buffer into fresh tensors of the given shapes; backward concatenates."""

    @staticmethod
    def forward(ctx: Any, flat: torch.Tensor, shapes: list[tuple[int, ...]]) -> Any:
        return _pieces(flat, shapes)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> Any:
        return torch.cat([g.reshape(-1) for g in grads]), None


def _cut(flat: torch.Tensor, shapes: list[tuple[int, ...]]) -> tuple[torch.Tensor, ...]:
    if flat.grad_fn is not None:  # on the graph (received inside a distributed autograd context)
        with torch.enable_grad():
            return _Unpack.apply(flat, shapes)
    return tuple(p.requires_grad_(flat.requires_grad) for p in _pieces(flat.detach(), shapes))


def unpack(value: Any) -> Any:
    """The pytree :func:`pack` packed (anything else is returned as it is)."""
    if not isinstance(value, Packed):
        return value
    parts = [_cut(flat, shapes) for flat, shapes in zip(value.buffers, value.shapes)]

    def fill(leaf: Any) -> Any:
        return parts[leaf.buffer][leaf.index] if isinstance(leaf, _Slot) else leaf

    return optree.tree_map(fill, value.tree, namespace=NAMESPACE)
