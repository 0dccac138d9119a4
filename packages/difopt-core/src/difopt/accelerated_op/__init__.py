"""Whether fused native optimizer ops are available (from a ``difopt.ops`` plugin)."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["AdamOp", "is_available"]


OPS = ("adam", "rmsprop", "sgd")


def is_available(devices: Any = None, *, op: str = "adam") -> bool:
    """True when a fused op is installed and supports every device in ``devices``.

    Args:
        devices: a device, an iterable of devices, or None for the CPU (and the current CUDA
            device when CUDA is available).
        op: the optimizer family of the fused op: ``"adam"`` (Adam and AdamW), ``"rmsprop"``
            or ``"sgd"`` (momentum).

    Raises:
        ValueError: ``op`` is not one of these.
    """
    from difopt import registry as plugins

    if op not in OPS:
        raise ValueError(f"'op' must be one of {', '.join(map(repr, OPS))}; got {op!r}")
    provider = plugins.op_provider(op)
    if provider is None:
        return False
    if devices is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    elif isinstance(devices, (str, torch.device)):
        devices = [devices]
    return all(provider.is_available(torch.device(d)) for d in devices)


# TorchOpt's submodule and class (imported last: adam_op needs nothing from this module).
from difopt.accelerated_op import adam_op  # noqa: E402
from difopt.accelerated_op.adam_op import AdamOp  # noqa: E402
