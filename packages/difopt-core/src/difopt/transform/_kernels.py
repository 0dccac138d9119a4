"""Fused list kernels the adaptive transformations share.

The expression Adam, AMSGrad and RMSprop (centered or not) end with,
``[params +] value * num / (sqrt(b * x + c) + eps)``, computed over whole lists of tensors:
with torch's foreach kernels, and on the autograd graph as one ``torch.autograd.Function``
(:class:`_RatioOfRoot`) whose backward takes six full-size passes per tensor where autograd
through the composite takes about nine. Also a guard around a torch 2.13 bug in the backward
of ``_foreach_addcdiv``, and AMSGrad's running maximum. The optimizer math lives in
:mod:`difopt.transform._adaptive`.
"""

from __future__ import annotations

from typing import Any

import torch

from difopt import _leafwise as lw

__all__ = [
    "add_ratio",
    "add_ratio_of_root",
    "div_by_root",
    "foreach_addcdiv_backward_ok",
    "fused_backward_applies",
    "maximum",
    "ratio_of_root",
]


def add_ratio(
    ps: lw.Tensors,
    num: lw.Tensors,
    root: lw.Tensors,
    eps: float,
    value: float,
    inplace: bool,
    root_fresh: bool = False,
) -> list[torch.Tensor]:
    """``ps + value * num / (root + eps)``, into ``ps`` when ``inplace``.

    With ``inplace`` (or ``root_fresh``: a buffer of the caller's, off the autograd graph),
    ``root`` must be fresh tensors (a square root just computed): ``eps`` is added into them.
    This is the last pass of torch.optim's Adam and RMSprop, so the values round alike.
    """
    if inplace:
        torch._foreach_add_(root, eps)
        torch._foreach_addcdiv_(ps, num, root, value=value)
        return list(ps)
    if root_fresh:
        torch._foreach_add_(root, eps)
        return list(torch._foreach_addcdiv(ps, num, root, value=value))
    denom = torch._foreach_add(root, eps)
    if not torch.is_grad_enabled() or foreach_addcdiv_backward_ok(ps):
        return list(torch._foreach_addcdiv(ps, num, denom, value=value))
    return list(torch._foreach_add(ps, torch._foreach_div(num, denom), alpha=value))


class _RatioOfRoot(torch.autograd.Function):
    """``[ps +] value * num / (sqrt(b * x + c) + eps)`` over lists of tensors, with one
    backward for the whole expression.

    Autograd through the composite of foreach ops runs about nine full-size passes per
    tensor in the backward; this one runs six: ``r = grad / d``, then ``value * r`` for
    ``num`` and ``-value b / 2 * r * num / (d s)`` for ``x``, with ``s = sqrt(b x + c)`` and
    ``d = s + eps`` saved by the forward. Where ``s`` is 0 the derivative in ``x`` is taken
    as 0, as :func:`difopt._leafwise.sqrt` does. A backward that is itself recorded
    (``create_graph=True``) recomputes ``s`` and ``d`` from ``x`` on the graph, so higher
    derivatives are exact too. Without ``ps`` (``n_ps == 0``) the output is the ratio alone.
    """

    @staticmethod
    def forward(
        ctx: Any,
        value: float,
        eps: float,
        b: float,
        c: float,
        n: int,
        n_ps: int,
        *tensors: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        ps, num, xs = tensors[:n_ps], tensors[n_ps : n_ps + n], tensors[n_ps + n :]
        if b != 1.0:
            root = list(torch._foreach_mul(xs, b))
            if c:
                torch._foreach_add_(root, c)
        elif c:
            root = list(torch._foreach_add(xs, c))
        else:
            root = list(torch._foreach_sqrt(xs))
        if b != 1.0 or c:
            torch._foreach_sqrt_(root)
        denom = torch._foreach_add(root, eps)
        if n_ps:
            out = torch._foreach_addcdiv(ps, num, denom, value=value)
        else:
            out = torch._foreach_div(num, denom)
            if value != 1.0:
                torch._foreach_mul_(out, value)
        ctx.save_for_backward(*num, *xs, *root, *denom)
        ctx.constants = (value, eps, b, c, n, n_ps)
        return tuple(out)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Any, ...]:
        value, eps, b, c, n, n_ps = ctx.constants
        saved = ctx.saved_tensors
        num, xs = saved[:n], saved[n : 2 * n]
        recorded = torch.is_grad_enabled()
        root: list[torch.Tensor]
        denom: list[torch.Tensor]
        if recorded:  # a recorded backward: s and d as functions of x
            root = [(b * x + c).sqrt() for x in xs]
            denom = [r + eps for r in root]
        else:
            root, denom = list(saved[2 * n : 3 * n]), list(saved[3 * n :])
        ratio = torch._foreach_div(grads, denom)
        d_num = torch._foreach_mul(ratio, value)
        d_x: list[torch.Tensor] = list(torch._foreach_mul(ratio, num))
        scale = torch._foreach_mul(denom, root)
        if recorded:
            d_x = list(torch._foreach_mul(torch._foreach_div(d_x, scale), -0.5 * value * b))
        else:
            torch._foreach_div_(d_x, scale)
            torch._foreach_mul_(d_x, -0.5 * value * b)
        if not c:  # sqrt's subgradient 0 where x is 0 (see _leafwise.sqrt)
            if recorded:
                d_x = [torch.where(r > 0, d, 0.0) for r, d in zip(root, d_x)]
            else:  # d_x is this backward's own buffer: zeroed in place, no new tensor
                for r, d in zip(root, d_x):
                    d.masked_fill_(r == 0, 0.0)
        return (None,) * 6 + (*grads[:n_ps], *d_num, *d_x)


def fused_backward_applies(inplace: bool, *lists: lw.Tensors) -> bool:
    """Whether :class:`_RatioOfRoot` should run: an out-of-place update on the autograd graph
    of tensors foreach ops take (not under a torch.func transform, whose batching rules it
    does not have)."""
    return (
        not inplace
        and torch.is_grad_enabled()
        and not torch._C._are_functorch_transforms_active()
        and any(t.requires_grad for xs in lists for t in xs)
        and all(lw.foreach_ok(xs) for xs in lists)
    )


def div_by_root(num: lw.Tensors, xs: lw.Tensors, eps: float, inplace: bool) -> list[torch.Tensor]:
    """``num / (sqrt(xs) + eps)``: on the autograd graph with :class:`_RatioOfRoot`'s fused
    backward, elsewhere the composite."""
    if fused_backward_applies(inplace, num, xs):
        return list(_RatioOfRoot.apply(1.0, eps, 1.0, 0.0, len(num), 0, *num, *xs))
    return lw.div(num, lw.add_scalar(lw.sqrt(xs), eps))


def add_ratio_of_root(
    ps: lw.Tensors,
    num: lw.Tensors,
    xs: lw.Tensors,
    c: float,
    eps: float,
    value: float,
    inplace: bool,
    xs_fresh: bool = False,
) -> list[torch.Tensor]:
    """``ps + value * num / (sqrt(xs + c) + eps)``, into ``ps`` when ``inplace``; on the
    autograd graph with :class:`_RatioOfRoot`'s fused backward. ``xs_fresh``: ``xs`` is a
    buffer of the caller's that may be overwritten (not a state)."""
    if fused_backward_applies(inplace, ps, num, xs):
        return list(_RatioOfRoot.apply(value, eps, 1.0, c, len(num), len(ps), *ps, *num, *xs))
    if not inplace and not (lw.on_graph(ps) or lw.on_graph(num) or lw.on_graph(xs)):
        # Nothing recorded (a step under torch.no_grad()): the root is this call's own buffer,
        # so its square root and eps go into it in place; two full-size allocations (the
        # root, the new parameters) instead of four, the same operations in the same order.
        fresh = torch._foreach_add(xs, c) if c else torch._foreach_sqrt(xs)
        if c:
            torch._foreach_sqrt_(fresh)
        return add_ratio(ps, num, fresh, eps, value, inplace=False, root_fresh=True)
    root: lw.Tensors
    if c:
        root = lw.sqrt(lw.add_scalar(xs, c), positive=True)
    elif inplace and xs_fresh and not lw.on_graph(xs):
        root = xs  # no graph: its square root in place
        torch._foreach_sqrt_(root)
    else:
        root = lw.sqrt(xs)
    return add_ratio(ps, num, root, eps, value, inplace)


def foreach_addcdiv_backward_ok(xs: lw.Tensors) -> bool:
    """Whether torch 2.13's backward of ``_foreach_addcdiv`` survives these shapes: it reads
    row ``i`` of the ``i``-th tensor, and raises an IndexError where that row does not exist
    (a 0-d tensor, or a first dimension of ``i`` or less; a bias of 2 elements third in the
    list is enough). Where it survives, its values are right (tested)."""
    return all(x.dim() > 0 and x.shape[0] > i for i, x in enumerate(xs))


def maximum(old: lw.Tensors, new: lw.Tensors, inplace: bool) -> list[torch.Tensor]:
    """AMSGrad's running maximum ``max(old, new)``, into ``old`` when ``inplace``."""
    if inplace and lw.foreach_ok(old):
        torch._foreach_maximum_(old, new)
        return list(old)
    if inplace:
        return [torch.maximum(m, v, out=m) for m, v in zip(old, new)]
    return [torch.maximum(m, v) for m, v in zip(old, new)]


def ratio_of_root(
    value: float, eps: float, b: float, c: float, num: lw.Tensors, xs: lw.Tensors
) -> list[torch.Tensor]:
    """``value * num / (sqrt(b * xs + c) + eps)`` with :class:`_RatioOfRoot`'s backward."""
    return list(_RatioOfRoot.apply(value, eps, b, c, len(num), 0, *num, *xs))
