"""Whether fused native optimizer ops are available (from a ``difopt.ops`` plugin)."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["is_available"]


def is_available(devices: Any = None) -> bool:
    """True when a fused Adam op is installed and supports every device in ``devices``.

    Args:
        devices: a device, an iterable of devices, or None for the CPU (and the current CUDA
            device when CUDA is available).
    """
    from difopt import registry as plugins

    provider = plugins.op_provider("adam")
    if provider is None:
        return False
    if devices is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    elif isinstance(devices, (str, torch.device)):
        devices = [devices]
    return all(provider.is_available(torch.device(d)) for d in devices)
