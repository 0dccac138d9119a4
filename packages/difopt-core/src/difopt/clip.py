"""Gradient clipping as a transformation."""

from __future__ import annotations

import math
from typing import Any

import torch

from difopt import _leafwise as lw
from difopt import _validate as check
from difopt._factory import transformation
from difopt.base import GradientTransformation, _empty_init

__all__ = ["clip_grad_norm"]


@transformation
def clip_grad_norm(
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    *,
    detach_factor: bool = False,
) -> GradientTransformation:
    """Rescale updates so their total norm is at most ``max_norm``.

    Computes the same as :func:`torch.nn.utils.clip_grad_norm_`: the norm of the vector of all
    leaves' norms, and a factor ``min(1, max_norm / (norm + 1e-6))``.

    Differentiating through a step (a Meta optimizer, ``inplace=False`` updates on the graph)
    differentiates the factor too, by default: the result is the exact derivative of the
    clipped step. TorchOpt 0.7.3 computes the factor without grad, treating it as a constant;
    ``detach_factor=True`` does the same (and its meta-gradients then equal TorchOpt's).

    Args:
        max_norm: the largest allowed total norm.
        norm_type: the p of the p-norm; ``float('inf')`` for the max norm.
        error_if_nonfinite: raise if the total norm is NaN or infinite (the updates are then
            left unchanged).
        detach_factor: treat the clipping factor as a constant in autograd (TorchOpt's
            behaviour) instead of differentiating it.
    """
    if not isinstance(max_norm, (int, float)) or math.isnan(max_norm) or max_norm < 0:
        raise ValueError(f"Invalid value for 'max_norm': {max_norm!r} (expected a float >= 0)")
    if not isinstance(norm_type, (int, float)) or math.isnan(norm_type) or norm_type <= 0:
        raise ValueError(
            f"Invalid value for 'norm_type': {norm_type!r} (expected a float > 0 or inf)"
        )
    check.boolean("detach_factor", detach_factor)

    def update(updates: Any, state: Any, *, params: Any = None, inplace: bool = True) -> Any:
        xs, spec = lw.flatten(updates)
        if not xs:
            return updates, state
        if lw.foreach_ok(xs):
            norms: lw.Tensors = torch._foreach_norm(xs, norm_type)
        else:
            norms = [torch.linalg.vector_norm(x, norm_type) for x in xs]
        total = torch.linalg.vector_norm(torch.stack(list(norms)), norm_type)
        if error_if_nonfinite and not torch.isfinite(total):
            raise RuntimeError(
                f"The total norm of order {norm_type} of the updates is non-finite, so it "
                "cannot be clipped; set error_if_nonfinite=False to scale anyway."
            )
        factor = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        if detach_factor:
            factor = factor.detach()
        return lw.unflatten(spec, lw.mul(xs, factor)), state

    return GradientTransformation(_empty_init, update)
