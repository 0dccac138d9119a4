"""Distributed autograd: gradients through remote calls (``difopt.distributed.autograd``).

Run the forward pass inside :func:`context`; RPCs made there record their tensors, so that
:func:`backward` or :func:`grad` on the caller send gradients back through every worker that
took part. Gradients are kept per context (:func:`get_gradients`); :func:`backward` also adds
them into ``.grad`` like :meth:`torch.Tensor.backward`.

Examples:
    >>> import difopt.distributed as todist
    >>> with todist.autograd.context() as ctx:  # doctest: +SKIP
    ...     loss = parallel_task_loss(meta_params, tasks)
    ...     todist.autograd.backward(ctx, loss)
"""

from __future__ import annotations

import threading
from typing import Sequence, Union

import torch
import torch.distributed.autograd as _dist_autograd
from torch.distributed.autograd import DistAutogradContext, context, get_gradients

__all__ = ["DistAutogradContext", "backward", "context", "get_gradients", "grad", "is_available"]

TensorOrTensors = Union[torch.Tensor, Sequence[torch.Tensor]]

_grad_lock = threading.Lock()


def is_available() -> bool:
    """Whether this torch build has distributed autograd."""
    return bool(_dist_autograd.is_available())


def _as_tuple(tensors: TensorOrTensors, argument: str) -> tuple[torch.Tensor, ...]:
    items = (tensors,) if isinstance(tensors, torch.Tensor) else tuple(tensors)
    for t in items:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{argument} must be a tensor or a sequence of tensors, got {t!r}")
    return items


def _check_context(autograd_ctx_id: object) -> int:
    if isinstance(autograd_ctx_id, bool) or not isinstance(autograd_ctx_id, int):
        raise TypeError(
            "autograd_ctx_id must be the int of `with difopt.distributed.autograd.context() as "
            f"ctx`, got {type(autograd_ctx_id).__name__}"
        )
    return autograd_ctx_id


def backward(
    autograd_ctx_id: int,
    tensors: TensorOrTensors,
    retain_graph: bool = False,
    inputs: TensorOrTensors | None = None,
) -> None:
    """Back-propagate from ``tensors`` through every RPC made in the context.

    The gradients of this process's leaves are added into their ``.grad`` (like
    :meth:`torch.Tensor.backward`) and stay available through :func:`get_gradients`.

    Args:
        autograd_ctx_id: the id of the enclosing :func:`context`.
        tensors: scalar outputs to differentiate (their gradients are summed).
        retain_graph: keep the graph for another backward pass.
        inputs: accumulate into ``.grad`` of these tensors only; None for every leaf.

    Raises:
        ValueError: ``inputs`` is empty.
        RuntimeError: an input does not require grad.
    """
    ctx = _check_context(autograd_ctx_id)
    roots = list(_as_tuple(tensors, "tensors"))
    only: set[torch.Tensor] | None = None
    if inputs is not None:
        wanted = _as_tuple(inputs, "inputs")
        if not wanted:
            raise ValueError("inputs must name at least one tensor, or be None for all leaves")
        if not all(t.requires_grad for t in wanted):
            raise RuntimeError("every tensor in inputs must require grad")
        only = set(wanted)
    _dist_autograd.backward(ctx, roots, retain_graph=retain_graph)
    grads = get_gradients(ctx)
    with _grad_lock:
        for leaf, g in grads.items():
            if only is not None and leaf not in only:
                continue
            leaf.grad = g if leaf.grad is None else leaf.grad + g


def grad(
    autograd_ctx_id: int,
    outputs: TensorOrTensors,
    inputs: TensorOrTensors,
    retain_graph: bool = False,
    allow_unused: bool = False,
) -> tuple[torch.Tensor | None, ...]:
    """Return the gradients of ``outputs`` (summed) with respect to ``inputs``.

    Nothing is written to ``.grad``.

    Args:
        autograd_ctx_id: the id of the enclosing :func:`context`.
        outputs: scalar outputs to differentiate.
        inputs: leaf tensors of this process to differentiate with respect to.
        retain_graph: keep the graph for another backward pass.
        allow_unused: return None for an input the outputs do not depend on, instead of
            raising.

    Returns:
        One gradient per input.

    Raises:
        RuntimeError: an input does not require grad, or is unused and ``allow_unused`` is
            False.
    """
    ctx = _check_context(autograd_ctx_id)
    roots = list(_as_tuple(outputs, "outputs"))
    wanted = _as_tuple(inputs, "inputs")
    if not all(t.requires_grad for t in wanted):
        raise RuntimeError("every tensor in inputs must require grad")
    _dist_autograd.backward(ctx, roots, retain_graph=retain_graph)
    grads = get_gradients(ctx)
    out: list[torch.Tensor | None] = []
    for i, t in enumerate(wanted):
        g = grads.get(t)
        if g is None and not allow_unused:
            raise RuntimeError(
                f"inputs[{i}] was not used to compute the outputs; pass allow_unused=True to "
                "get None for it"
            )
        out.append(g)
    return tuple(out)
