"""The ``torch.ops.difopt_accel`` operators: loading, fake kernels, autograd, wrappers.

The native library defines three operators (schemas in ``csrc/adam_cpu.cpp``):

``adam(grads, mu, nu, params, count, b1, b2, eps, eps_root, factor) -> (out, mu', nu')``
    one Adam step for a whole list of tensors, functional and differentiable. ``out`` is
    ``params + factor * direction``, or ``factor * direction`` when ``params`` is empty.
``adam_(out, mu, nu, grads, count, b1, b2, eps, eps_root, factor, accumulate) -> ()``
    the same step in place: ``mu`` and ``nu`` are updated and ``out`` receives
    ``out + factor * direction`` (``accumulate``) or ``factor * direction``.
``adam_backward(grad_out, grad_mu, grad_nu, grads, mu', nu', count, ...) -> (dg, dmu, dnu)``
    the exact vector-Jacobian product of ``adam``, recomputed from its saved outputs.

``count`` is the step number ``t >= 1`` of this update, a 0-d int64 tensor (on the CPU, or
on the tensors' device, where the kernel reads it without a host synchronisation).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from difopt_accel import _build

try:
    from difopt_accel import _C
except ImportError as exc:  # most often: built against another torch
    raise ImportError(
        f"difopt-accel's native library failed to load ({exc}). It was built against torch "
        f"{_build.TORCH_VERSION} and torch {torch.__version__} is installed; rebuild it with "
        "'pip install --no-build-isolation --force-reinstall --no-deps difopt-accel'"
    ) from exc

__all__ = ["adam", "adam_", "adam_backward", "has_kernel"]

_LIB = "difopt_accel"
Tensors = Sequence[torch.Tensor]


def has_kernel(device_type: str) -> bool:
    """Whether the native library has kernels for ``device_type`` (``"cpu"``, ``"cuda"``)."""
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    if key is None:
        return False
    if key == "CUDA" and not _C.WITH_CUDA:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"{_LIB}::adam", key)


# ----------------------------------------------------------------------------- fake kernels


@torch.library.register_fake(f"{_LIB}::adam")
def _adam_fake(
    grads: Tensors,
    mu: Tensors,
    nu: Tensors,
    params: Tensors,
    count: torch.Tensor,
    b1: float,
    b2: float,
    eps: float,
    eps_root: float,
    factor: float,
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    _check_lengths(grads, mu=mu, nu=nu, params=params or grads)
    return (
        [torch.empty_like(g, memory_format=torch.contiguous_format) for g in grads],
        [torch.empty_like(m, memory_format=torch.contiguous_format) for m in mu],
        [torch.empty_like(v, memory_format=torch.contiguous_format) for v in nu],
    )


@torch.library.register_fake(f"{_LIB}::adam_")
def _adam_inplace_fake(
    out: Tensors,
    mu: Tensors,
    nu: Tensors,
    grads: Tensors,
    count: torch.Tensor,
    b1: float,
    b2: float,
    eps: float,
    eps_root: float,
    factor: float,
    accumulate: bool,
) -> None:
    _check_lengths(grads, out=out, mu=mu, nu=nu)


@torch.library.register_fake(f"{_LIB}::adam_backward")
def _adam_backward_fake(
    grad_out: Tensors,
    grad_mu: Tensors,
    grad_nu: Tensors,
    grads: Tensors,
    mu_new: Tensors,
    nu_new: Tensors,
    count: torch.Tensor,
    b1: float,
    b2: float,
    eps: float,
    eps_root: float,
    factor: float,
    moment_grads: bool,
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    _check_lengths(grads, grad_out=grad_out, mu_new=mu_new, nu_new=nu_new)

    def like() -> list[torch.Tensor]:
        return [torch.empty_like(g, memory_format=torch.contiguous_format) for g in grads]

    return like(), like() if moment_grads else [], like() if moment_grads else []


def _check_lengths(grads: Tensors, **lists: Tensors) -> None:
    for name, xs in lists.items():
        if len(xs) != len(grads):
            raise ValueError(f"'{name}' has {len(xs)} tensors but 'grads' has {len(grads)}")


# ----------------------------------------------------------------------------- autograd


def _setup_adam(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    grads, mu, nu, params, count, b1, b2, eps, eps_root, factor = inputs
    _, mu_new, nu_new = output
    ctx.n = len(grads)
    ctx.has_params = len(params) > 0
    ctx.hyper = (b1, b2, eps, eps_root, factor)
    ctx.save_for_backward(count, *grads, *mu_new, *nu_new)


def _zeros_for_missing(grads: Sequence[torch.Tensor | None], like: Tensors) -> list[torch.Tensor]:
    # Incoming gradients may be expanded views (e.g. of a sum's backward): the kernel needs
    # contiguous memory.
    return [torch.zeros_like(x) if g is None else g.contiguous() for g, x in zip(grads, like)]


def _any_needed(flags: Any) -> bool:
    # needs_input_grad holds one flag per element for a list input.
    return any(flags) if isinstance(flags, (list, tuple)) else bool(flags)


def _backward_adam(ctx: Any, d_out: Any, d_mu: Any, d_nu: Any) -> tuple[Any, ...]:
    n = ctx.n
    count, *saved = ctx.saved_tensors
    grads, mu_new, nu_new = saved[:n], saved[n : 2 * n], saved[2 * n :]
    b1, b2, eps, eps_root, factor = ctx.hyper
    moment_grads = _any_needed(ctx.needs_input_grad[1]) or _any_needed(ctx.needs_input_grad[2])
    nones = [None] * n  # a list input takes a list of gradients, None for "zero"
    n_params = n if ctx.has_params else 0
    if all(g is None for g in d_out) and all(g is None for g in d_mu + d_nu):
        return nones, nones, nones, [None] * n_params, None, None, None, None, None, None
    d_out_full = _zeros_for_missing(d_out, grads)
    if all(g is None for g in d_mu) and all(g is None for g in d_nu):
        d_mu_full: list[torch.Tensor] = []
        d_nu_full: list[torch.Tensor] = []
    else:
        d_mu_full = _zeros_for_missing(d_mu, grads)
        d_nu_full = _zeros_for_missing(d_nu, grads)
    if torch.is_grad_enabled():
        # create_graph=True: a differentiable composition of the same formula, so that
        # higher-order derivatives through the step exist too.
        dg, dm, dv = _adam_backward_reference(
            d_out_full, d_mu_full, d_nu_full, grads, mu_new, nu_new, count, ctx.hyper
        )
        if not moment_grads:
            dm, dv = [], []
    else:
        dg, dm, dv = torch.ops.difopt_accel.adam_backward(
            d_out_full,
            d_mu_full,
            d_nu_full,
            list(grads),
            list(mu_new),
            list(nu_new),
            count,
            b1,
            b2,
            eps,
            eps_root,
            factor,
            moment_grads,
        )
    d_params = list(d_out) if ctx.has_params else []
    return (
        list(dg),
        list(dm) if moment_grads else nones,
        list(dv) if moment_grads else nones,
        d_params,
        None,
        None,
        None,
        None,
        None,
        None,
    )


def _adam_backward_reference(
    d_out: Tensors,
    d_mu_new: Tensors,
    d_nu_new: Tensors,
    grads: Tensors,
    mu_new: Tensors,
    nu_new: Tensors,
    count: torch.Tensor,
    hyper: tuple[float, ...],
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """The backward of ``adam`` in differentiable torch operations (same formula)."""
    b1, b2, eps, eps_root, factor = hyper
    t = int(count)
    inv_bc1, inv_bc2 = 1.0 / (1.0 - b1**t), 1.0 / (1.0 - b2**t)
    dg, dm, dv = [], [], []
    for i, (g, m, v, go) in enumerate(zip(grads, mu_new, nu_new, d_out)):
        root = torch.sqrt(v * inv_bc2 + eps_root)
        positive = root > 0
        denom = root + eps
        direction = m * inv_bc1 / denom
        d_dir = factor * go
        g_mu = d_dir * inv_bc1 / denom
        safe_root = torch.where(positive, root, torch.ones_like(root))
        g_nu = torch.where(positive, -d_dir * direction / denom * inv_bc2 / (2 * safe_root), 0.0)
        if d_mu_new:
            g_mu = g_mu + d_mu_new[i]
            g_nu = g_nu + d_nu_new[i]
        dg.append((1.0 - b1) * g_mu + 2.0 * (1.0 - b2) * g * g_nu)
        dm.append(b1 * g_mu)
        dv.append(b2 * g_nu)
    return dg, dm, dv


torch.library.register_autograd(f"{_LIB}::adam", _backward_adam, setup_context=_setup_adam)


# ----------------------------------------------------------------------------- wrappers


def adam(
    grads: Tensors,
    mu: Tensors,
    nu: Tensors,
    count: torch.Tensor,
    *,
    params: Tensors = (),
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    factor: float = 1.0,
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """One fused, differentiable Adam step for a list of tensors.

    Args:
        grads: the updates (gradients), one tensor per parameter.
        mu: first moments, same shapes and dtypes as ``grads``.
        nu: second moments.
        count: the step number ``t >= 1`` of this update, a 0-d int64 tensor.
        params: the parameters; when given the first output is
            ``params + factor * direction``, otherwise ``factor * direction``.
        b1: decay rate of the first moment.
        b2: decay rate of the second moment.
        eps: term added to the denominator outside the square root.
        eps_root: term added inside the square root.
        factor: scale of the direction (e.g. ``-lr``).

    Returns:
        ``(out, mu_new, nu_new)``, new tensors; differentiable with respect to ``grads``,
        ``mu``, ``nu`` and ``params`` (the backward is exact, and is itself differentiable).

    Examples:
        >>> import torch, difopt_accel
        >>> g, m, v = [torch.ones(2)], [torch.zeros(2)], [torch.zeros(2)]
        >>> out, m, v = difopt_accel.adam(g, m, v, torch.tensor(1), eps=0.0)
        >>> out[0]
        tensor([1., 1.])
    """
    out, mu_new, nu_new = torch.ops.difopt_accel.adam(
        list(grads), list(mu), list(nu), list(params), count, b1, b2, eps, eps_root, factor
    )
    return list(out), list(mu_new), list(nu_new)


def adam_(
    out: Tensors,
    mu: Tensors,
    nu: Tensors,
    grads: Tensors,
    count: torch.Tensor,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    factor: float = 1.0,
    accumulate: bool = True,
) -> None:
    """One fused Adam step in place (not differentiable; for ``torch.no_grad`` training).

    ``mu`` and ``nu`` are updated, and ``out`` becomes ``out + factor * direction`` when
    ``accumulate`` (pass the parameters and ``factor=-lr`` for a whole optimizer step), or
    ``factor * direction`` otherwise. Arguments are as for :func:`adam`. Every argument is
    checked before anything is written.

    Examples:
        >>> import torch, difopt_accel
        >>> p, g = [torch.ones(2)], [torch.ones(2)]
        >>> m, v = [torch.zeros(2)], [torch.zeros(2)]
        >>> difopt_accel.adam_(p, m, v, g, torch.tensor(1), eps=0.0, factor=-0.5)
        >>> p[0]
        tensor([0.5000, 0.5000])
    """
    torch.ops.difopt_accel.adam_(
        list(out), list(mu), list(nu), list(grads), count, b1, b2, eps, eps_root, factor, accumulate
    )


def adam_backward(
    grad_out: Tensors,
    grad_mu: Tensors,
    grad_nu: Tensors,
    grads: Tensors,
    mu_new: Tensors,
    nu_new: Tensors,
    count: torch.Tensor,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    factor: float = 1.0,
    moment_grads: bool = True,
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """The vector-Jacobian product of :func:`adam` (what its autograd backward calls).

    Args:
        grad_out: gradient of the loss with respect to ``adam``'s first output.
        grad_mu: gradient with respect to ``mu_new``, or an empty list for zero.
        grad_nu: gradient with respect to ``nu_new``, or an empty list for zero.
        grads: the ``grads`` given to :func:`adam`.
        mu_new: the first moments it returned.
        nu_new: the second moments it returned.
        count: the step number it was called with.
        b1: as for :func:`adam`.
        b2: as for :func:`adam`.
        eps: as for :func:`adam`.
        eps_root: as for :func:`adam`.
        factor: as for :func:`adam`.
        moment_grads: also return the gradients with respect to ``mu`` and ``nu``.

    Returns:
        ``(d_grads, d_mu, d_nu)``; the last two are empty lists unless ``moment_grads``.
        The gradient with respect to ``params`` is ``grad_out`` itself.
    """
    dg, dm, dv = torch.ops.difopt_accel.adam_backward(
        list(grad_out),
        list(grad_mu),
        list(grad_nu),
        list(grads),
        list(mu_new),
        list(nu_new),
        count,
        b1,
        b2,
        eps,
        eps_root,
        factor,
        moment_grads,
    )
    return list(dg), list(dm), list(dv)
