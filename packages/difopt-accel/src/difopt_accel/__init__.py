"""difopt-accel: fused native optimizer kernels for difopt (C++/OpenMP and CUDA).

The kernels are PyTorch operators registered with ``TORCH_LIBRARY``, with fake kernels for
``torch.compile`` and an exact autograd formula; one call updates a whole list of tensors:

- Adam: ``torch.ops.difopt_accel.adam``, ``adam_``, ``adam_backward`` (wrappers :func:`adam`,
  :func:`adam_`, :func:`adam_backward`);
- RMSProp, uncentered and centered: ``rms``, ``rms_``, ``rms_backward`` (:func:`rms`,
  :func:`rms_`, :func:`rms_backward`);
- heavy-ball momentum: ``trace``, ``trace_``, ``trace_backward`` (:func:`trace_op`,
  :func:`trace_`, :func:`trace_backward`);
- one step of Anderson acceleration, for difopt-implicit's fixed-point solver (CPU, no
  autograd): ``anderson_step_`` (:func:`anderson_step_`).

The transformations :func:`scale_by_adam`, :func:`scale_by_rms`, :func:`scale_by_stddev` and
:func:`trace` are difopt's pure transformations of those names computed by the ops.

difopt finds this package through its ``difopt.ops`` entry points (``adam``, ``rmsprop``,
``sgd``, ``anderson``): ``use_accelerated_op=True`` in ``difopt.adam``/``adamw``,
``difopt.rmsprop`` and ``difopt.sgd`` (and their classic and meta classes) then runs the fused
ops, and ``difopt.diff.implicit.Anderson(use_accelerated_op=True)`` the fused Anderson step;
``difopt.accelerated_op_available(device)`` says where the optimizers' ops can run.

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

from difopt_accel._ops import (
    adam,
    adam_,
    adam_backward,
    anderson_step_,
    rms,
    rms_,
    rms_backward,
    trace_,
    trace_backward,
    trace_op,
)
from difopt_accel._transform import (
    AdamOps,
    FusedOps,
    is_available,
    ops,
    scale_by_adam,
    scale_by_rms,
    scale_by_stddev,
    trace,
)

__version__ = "0.1.0"

#: The difopt plugin API this package implements (``difopt.registry.PLUGIN_API_VERSION``).
DIFOPT_PLUGIN_API = "1.0"

__all__ = [
    "DIFOPT_PLUGIN_API",
    "AdamOps",
    "FusedOps",
    "__version__",
    "adam",
    "adam_",
    "adam_backward",
    "anderson_step_",
    "is_available",
    "ops",
    "rms",
    "rms_",
    "rms_backward",
    "scale_by_adam",
    "scale_by_rms",
    "scale_by_stddev",
    "trace",
    "trace_",
    "trace_backward",
    "trace_op",
]
