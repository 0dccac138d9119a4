"""difopt-accel: fused native optimizer kernels for difopt (C++/OpenMP and CUDA).

The kernels are PyTorch operators (``torch.ops.difopt_accel.adam``, ``adam_``,
``adam_backward``) registered with ``TORCH_LIBRARY``, with fake kernels for ``torch.compile``
and an exact autograd formula. One call updates a whole list of tensors.

difopt finds this package through its ``difopt.ops`` entry point: ``difopt.adam(...,
use_accelerated_op=True)`` (and ``difopt.Adam``, ``difopt.MetaAdam``, AdamW alike) then runs the
fused op; ``difopt.accelerated_op_available(device)`` says where it can.

Examples:
    >>> import torch, difopt, difopt_accel
    >>> difopt_accel.is_available("cpu")
    True
    >>> w = torch.nn.Parameter(torch.ones(3))
    >>> opt = difopt.Optimizer(
    ...     [w], difopt.chain(difopt_accel.scale_by_adam(), difopt.transform.scale(-0.1))
    ... )
    >>> w.grad = torch.ones(3)
    >>> opt.step()
    >>> w.data
    tensor([0.9000, 0.9000, 0.9000])
"""

from difopt_accel._ops import adam, adam_, adam_backward
from difopt_accel._transform import AdamOps, is_available, ops, scale_by_adam

__version__ = "0.1.0"

# The difopt plugin API this package implements (difopt.registry.PLUGIN_API_VERSION).
DIFOPT_PLUGIN_API = "1.0"

__all__ = [
    "DIFOPT_PLUGIN_API",
    "AdamOps",
    "__version__",
    "adam",
    "adam_",
    "adam_backward",
    "is_available",
    "ops",
    "scale_by_adam",
]
