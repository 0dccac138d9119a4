"""The ``torch.ops.difopt_accel`` operators: loading, fake kernels, autograd, wrappers.

The native library defines three families of three operators (schemas in
``csrc/schemas.cpp``). Each family has a functional op, differentiable, whose first output is
``params + factor * direction`` (``factor * direction`` when ``params`` is empty); the same
step in place (``out`` receives ``out + factor * direction`` when ``accumulate``, else
``factor * direction``, and the state is updated); and the exact vector-Jacobian product of
the functional op:

``adam(grads, mu, nu, params, count, b1, b2, eps, eps_root, factor) -> (out, mu', nu')``
    ``adam_(out, mu, nu, grads, count, ..., accumulate)``, ``adam_backward(grad_out,
    grad_mu, grad_nu, grads, mu', nu', count, ..., moment_grads) -> (dg, dmu, dnu)``.
``rms(grads, mu, nu, params, alpha, eps, factor, centered) -> (out, mu', nu')``
    RMSProp (``difopt.transform.scale_by_rms``, or ``scale_by_stddev`` when ``centered``;
    ``mu`` and ``mu'`` are empty lists unless centered); ``rms_(out, mu, nu, grads, ...,
    accumulate)``, ``rms_backward(grad_out, grad_mu, grad_nu, grads, mu', nu', ...,
    moment_grads) -> (dg, dmu, dnu)``.
``trace(grads, trace, params, count, momentum, dampening, nesterov, factor) -> (out, trace')``
    heavy-ball momentum (``difopt.transform.trace``); ``trace_(out, trace, grads, count, ...,
    accumulate)``, ``trace_backward(grad_out, grad_trace, count, ..., trace_grads) -> (dg,
    dtrace)`` (the step is linear: its backward needs only the step number).

``count`` is the step number ``t >= 1`` of this update, a 0-d int64 tensor (on the CPU, or
on the tensors' device, where the kernel reads it without a host synchronisation).

Besides the optimizer families, one CPU operator serves difopt-implicit's fixed-point solver:
``anderson_step_(images, residuals, gram, z, g, slot, k, ridge, damping) -> Tensor``, one
step of Anderson acceleration on a batch, without a graph (:func:`anderson_step_`).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

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

__all__ = [
    "adam",
    "adam_",
    "adam_backward",
    "anderson_step_",
    "has_kernel",
    "rms",
    "rms_",
    "rms_backward",
    "trace_",
    "trace_backward",
    "trace_op",
]

_LIB = "difopt_accel"
_OPS = ("adam", "rms", "trace")
Tensors = Sequence[torch.Tensor]
Lists2 = tuple[list[torch.Tensor], list[torch.Tensor]]
Lists3 = tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]


def has_kernel(device_type: str) -> bool:
    """Whether the native library has kernels for ``device_type`` (``"cpu"``, ``"cuda"``)."""
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    if key is None:
        return False
    if key == "CUDA" and not _C.WITH_CUDA:
        return False
    return all(torch._C._dispatch_has_kernel_for_dispatch_key(f"{_LIB}::{op}", key) for op in _OPS)


# ----------------------------------------------------------------------------- shared helpers


def _like(xs: Tensors) -> list[torch.Tensor]:
    return [torch.empty_like(x, memory_format=torch.contiguous_format) for x in xs]


def _check_lengths(ref_name: str, ref: Tensors, **lists: Tensors) -> None:
    for name, xs in lists.items():
        if len(xs) != len(ref):
            raise ValueError(f"'{name}' has {len(xs)} tensors but '{ref_name}' has {len(ref)}")


Layout = list[tuple[torch.Size, torch.dtype, torch.device]]


def _layout(xs: Tensors) -> Layout:
    return [(x.shape, x.dtype, x.device) for x in xs]


def _zeros_for_missing(grads: Sequence[torch.Tensor | None], layout: Layout) -> list[torch.Tensor]:
    # Incoming gradients may be expanded views (e.g. of a sum's backward): the kernel needs
    # contiguous memory.
    return [
        torch.zeros(shape, dtype=dtype, device=device) if g is None else g.contiguous()
        for g, (shape, dtype, device) in zip(grads, layout)
    ]


def _state_grads(
    incoming: Sequence[Sequence[torch.Tensor | None]], layout: Layout
) -> list[list[torch.Tensor]]:
    """The incoming gradients of a step's state outputs, as the backward ops take them.

    Empty lists where no gradient flows into any state output (the ops then skip those
    terms), else every list complete, with zeros for the missing gradients.
    """
    if all(g is None for grads in incoming for g in grads):
        return [[] for _ in incoming]
    return [_zeros_for_missing(grads, layout) if grads else [] for grads in incoming]


def _no_gradient(grads: Sequence[torch.Tensor | None]) -> bool:
    return all(g is None for g in grads)


def _any_needed(flags: Any) -> bool:
    # needs_input_grad holds one flag per element for a list input.
    return any(flags) if isinstance(flags, (list, tuple)) else bool(flags)


def _or_nones(grads: Sequence[torch.Tensor] | None, n: int) -> list[Any]:
    # A list input takes a list of gradients, None for "zero".
    return list(grads) if grads is not None else [None] * n


def _times_sqrt_derivative(x: torch.Tensor, root: torch.Tensor) -> torch.Tensor:
    """``x * sqrt'``: ``x / (2 root)``, or 0 where ``root`` is 0 (difopt's zero subgradient).

    Selected with ``where``, so that higher derivatives are 0 there too, not ``inf * 0``.
    """
    positive = root > 0
    safe_root = torch.where(positive, root, torch.ones_like(root))
    return torch.where(positive, x / (2.0 * safe_root), 0.0)


# ----------------------------------------------------------------------------- two-moment ops


def _register_moments_autograd(op: str, reference: Callable[..., Lists3]) -> None:
    """Registers the autograd formula of an op whose state is two moments (adam, rms).

    The op's inputs are ``(grads, mu, nu, params, *extras)`` and its outputs ``(out, mu',
    nu')``, where ``mu`` and ``mu'`` may be empty lists (rms, uncentered); its backward op
    takes ``(grad_out, grad_mu, grad_nu, grads, mu', nu', *extras, moment_grads)``, and
    ``reference`` the same arguments but ``moment_grads``: the same formula in differentiable
    torch operations, used under ``create_graph=True`` so that higher-order derivatives
    through the step exist too.
    """

    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        grads, _, _, params, *extras = inputs
        _, mu_new, nu_new = output
        ctx.sizes = (len(grads), len(mu_new), len(params))
        ctx.extras = [None if torch.is_tensor(x) else x for x in extras]  # tensors: saved
        tensors = [x for x in extras if torch.is_tensor(x)]
        ctx.save_for_backward(*grads, *mu_new, *nu_new, *tensors)

    def backward(ctx: Any, d_out: Any, d_mu: Any, d_nu: Any) -> tuple[Any, ...]:
        n, n_mu, n_params = ctx.sizes
        saved = ctx.saved_tensors
        grads, mu_new = saved[:n], saved[n : n + n_mu]
        nu_new, tensors = saved[n + n_mu : 2 * n + n_mu], iter(saved[2 * n + n_mu :])
        extras = [next(tensors) if x is None else x for x in ctx.extras]
        no_grads = (None,) * len(extras)
        moment_grads = _any_needed(ctx.needs_input_grad[1]) or _any_needed(ctx.needs_input_grad[2])
        if _no_gradient(d_out) and _no_gradient(d_mu) and _no_gradient(d_nu):
            return [None] * n, [None] * n_mu, [None] * n, [None] * n_params, *no_grads
        layout = _layout(grads)
        d_states = _state_grads([d_mu if n_mu else [], d_nu], layout)
        args = (_zeros_for_missing(d_out, layout), *d_states, grads, mu_new, nu_new, *extras)
        if torch.is_grad_enabled():
            dg, dm, dv = reference(*args)
        else:
            dg, dm, dv = getattr(torch.ops.difopt_accel, f"{op}_backward")(*args, moment_grads)
        return (
            list(dg),
            _or_nones(dm if moment_grads else None, n_mu),
            _or_nones(dv if moment_grads else None, n),
            list(d_out) if n_params else [],
            *no_grads,
        )

    torch.library.register_autograd(f"{_LIB}::{op}", backward, setup_context=setup_context)


# ----------------------------------------------------------------------------- adam


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
) -> Lists3:
    _check_lengths("grads", grads, mu=mu, nu=nu, params=params or grads)
    return _like(grads), _like(mu), _like(nu)


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
    _check_lengths("grads", grads, out=out, mu=mu, nu=nu)


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
) -> Lists3:
    _check_lengths("grads", grads, grad_out=grad_out, mu_new=mu_new, nu_new=nu_new)
    return _like(grads), _like(grads) if moment_grads else [], _like(grads) if moment_grads else []


def _adam_backward_reference(
    d_out: Tensors,
    d_mu_new: Tensors,
    d_nu_new: Tensors,
    grads: Tensors,
    mu_new: Tensors,
    nu_new: Tensors,
    count: torch.Tensor,
    b1: float,
    b2: float,
    eps: float,
    eps_root: float,
    factor: float,
) -> Lists3:
    """The backward of ``adam`` in differentiable torch operations (same formula)."""
    t = int(count)
    inv_bc1, inv_bc2 = 1.0 / (1.0 - b1**t), 1.0 / (1.0 - b2**t)
    dg, dm, dv = [], [], []
    for i, (g, m, v, go) in enumerate(zip(grads, mu_new, nu_new, d_out)):
        root = torch.sqrt(v * inv_bc2 + eps_root)
        denom = root + eps
        direction = m * inv_bc1 / denom
        d_dir = factor * go
        g_mu = d_dir * inv_bc1 / denom
        g_nu = _times_sqrt_derivative(-d_dir * direction / denom * inv_bc2, root)
        if d_mu_new:
            g_mu = g_mu + d_mu_new[i]
            g_nu = g_nu + d_nu_new[i]
        dg.append((1.0 - b1) * g_mu + 2.0 * (1.0 - b2) * g * g_nu)
        dm.append(b1 * g_mu)
        dv.append(b2 * g_nu)
    return dg, dm, dv


_register_moments_autograd("adam", _adam_backward_reference)


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
) -> Lists3:
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
) -> Lists3:
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

    Examples:
        >>> import torch, difopt_accel
        >>> g, m, v = [torch.ones(2)], [torch.ones(2)], [torch.ones(2)]  # g, mu', nu'
        >>> dg, _, _ = difopt_accel.adam_backward(
        ...     [torch.ones(2)], [], [], g, m, v, torch.tensor(1), b1=0.5, b2=0.0, eps=0.0
        ... )
        >>> dg[0]  # out = 2 mu' / sqrt(nu') with mu' = (mu + g) / 2, nu' = g^2: 1 - 2
        tensor([-1., -1.])
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


# ----------------------------------------------------------------------------- rms


def _check_rms_mu(name: str, mu: Tensors, centered: bool) -> None:
    if mu and not centered:
        raise ValueError(f"'{name}' must be empty when 'centered' is false, got {len(mu)} tensors")


@torch.library.register_fake(f"{_LIB}::rms")
def _rms_fake(
    grads: Tensors,
    mu: Tensors,
    nu: Tensors,
    params: Tensors,
    alpha: float,
    eps: float,
    factor: float,
    centered: bool,
) -> Lists3:
    _check_rms_mu("mu", mu, centered)
    _check_lengths("grads", grads, mu=mu or grads, nu=nu, params=params or grads)
    return _like(grads), _like(mu), _like(nu)


@torch.library.register_fake(f"{_LIB}::rms_")
def _rms_inplace_fake(
    out: Tensors,
    mu: Tensors,
    nu: Tensors,
    grads: Tensors,
    alpha: float,
    eps: float,
    factor: float,
    centered: bool,
    accumulate: bool,
) -> None:
    _check_rms_mu("mu", mu, centered)
    _check_lengths("grads", grads, out=out, mu=mu or grads, nu=nu)


@torch.library.register_fake(f"{_LIB}::rms_backward")
def _rms_backward_fake(
    grad_out: Tensors,
    grad_mu: Tensors,
    grad_nu: Tensors,
    grads: Tensors,
    mu_new: Tensors,
    nu_new: Tensors,
    alpha: float,
    eps: float,
    factor: float,
    centered: bool,
    moment_grads: bool,
) -> Lists3:
    _check_rms_mu("mu_new", mu_new, centered)
    _check_lengths("grads", grads, grad_out=grad_out, mu_new=mu_new or grads, nu_new=nu_new)
    d_mu = _like(grads) if moment_grads and centered else []
    return _like(grads), d_mu, _like(grads) if moment_grads else []


def _rms_backward_reference(
    d_out: Tensors,
    d_mu_new: Tensors,
    d_nu_new: Tensors,
    grads: Tensors,
    mu_new: Tensors,
    nu_new: Tensors,
    alpha: float,
    eps: float,
    factor: float,
    centered: bool,
) -> Lists3:
    """The backward of ``rms`` in differentiable torch operations (same formula)."""
    w = 1.0 - alpha
    dg, dm, dv = [], [], []
    for i, (g, v, go) in enumerate(zip(grads, nu_new, d_out)):
        root = torch.sqrt(v - mu_new[i] * mu_new[i] if centered else v)
        denom = root + eps
        d_dir = factor * go
        g_arg = _times_sqrt_derivative(-d_dir * (g / denom) / denom, root)
        g_nu = g_arg + d_nu_new[i] if d_nu_new else g_arg
        d_g = d_dir / denom + 2.0 * w * g * g_nu
        if centered:
            g_mu = -2.0 * mu_new[i] * g_arg
            g_mu = g_mu + d_mu_new[i] if d_mu_new else g_mu
            d_g = d_g + w * g_mu
            dm.append(alpha * g_mu)
        dg.append(d_g)
        dv.append(alpha * g_nu)
    return dg, dm, dv


_register_moments_autograd("rms", _rms_backward_reference)


def rms(
    grads: Tensors,
    mu: Tensors,
    nu: Tensors,
    *,
    params: Tensors = (),
    alpha: float = 0.9,
    eps: float = 1e-8,
    factor: float = 1.0,
    centered: bool = False,
) -> Lists3:
    """One fused, differentiable RMSProp step for a list of tensors.

    ``nu' = alpha nu + (1 - alpha) g^2`` and the direction is ``g / (sqrt(nu') + eps)``; when
    ``centered``, also ``mu' = lerp(mu, g, 1 - alpha)`` and the direction is
    ``g / (sqrt(nu' - mu'^2) + eps)`` (difopt's ``scale_by_rms`` and ``scale_by_stddev``).

    Args:
        grads: the updates (gradients), one tensor per parameter.
        mu: running means of the updates when ``centered``, else an empty list.
        nu: running means of the squared updates, same shapes and dtypes as ``grads``.
        params: the parameters; when given the first output is
            ``params + factor * direction``, otherwise ``factor * direction``.
        alpha: decay rate of the running means, in ``[0, 1]``.
        eps: term added to the root.
        factor: scale of the direction (e.g. ``-lr``).
        centered: divide by the running standard deviation instead of the root mean square.

    Returns:
        ``(out, mu_new, nu_new)``, new tensors (``mu_new`` empty unless ``centered``);
        differentiable with respect to ``grads``, ``mu``, ``nu`` and ``params`` (the backward
        is exact, takes sqrt's derivative at 0 as 0, and is itself differentiable).

    Examples:
        >>> import torch, difopt_accel
        >>> g, v = [torch.full((2,), 3.0)], [torch.zeros(2)]
        >>> out, _, v = difopt_accel.rms(g, [], v, alpha=0.0, eps=0.0)
        >>> out[0], v[0]
        (tensor([1., 1.]), tensor([9., 9.]))
    """
    if not grads:  # no tensor to dispatch on
        return [], [], []
    out, mu_new, nu_new = torch.ops.difopt_accel.rms(
        list(grads), list(mu), list(nu), list(params), alpha, eps, factor, centered
    )
    return list(out), list(mu_new), list(nu_new)


def rms_(
    out: Tensors,
    mu: Tensors,
    nu: Tensors,
    grads: Tensors,
    *,
    alpha: float = 0.9,
    eps: float = 1e-8,
    factor: float = 1.0,
    centered: bool = False,
    accumulate: bool = True,
) -> None:
    """One fused RMSProp step in place (not differentiable; for ``torch.no_grad`` training).

    ``mu`` (when ``centered``) and ``nu`` are updated, and ``out`` becomes
    ``out + factor * direction`` when ``accumulate`` (pass the parameters and ``factor=-lr``
    for a whole optimizer step), or ``factor * direction`` otherwise. Arguments are as for
    :func:`rms`. Every argument is checked before anything is written.

    Examples:
        >>> import torch, difopt_accel
        >>> p, g, v = [torch.ones(2)], [torch.full((2,), 2.0)], [torch.zeros(2)]
        >>> difopt_accel.rms_(p, [], v, g, alpha=0.0, eps=0.0, factor=-0.5)
        >>> p[0], v[0]
        (tensor([0.5000, 0.5000]), tensor([4., 4.]))
    """
    if not grads:
        return
    torch.ops.difopt_accel.rms_(
        list(out), list(mu), list(nu), list(grads), alpha, eps, factor, centered, accumulate
    )


def rms_backward(
    grad_out: Tensors,
    grad_mu: Tensors,
    grad_nu: Tensors,
    grads: Tensors,
    mu_new: Tensors,
    nu_new: Tensors,
    *,
    alpha: float = 0.9,
    eps: float = 1e-8,
    factor: float = 1.0,
    centered: bool = False,
    moment_grads: bool = True,
) -> Lists3:
    """The vector-Jacobian product of :func:`rms` (what its autograd backward calls).

    Args:
        grad_out: gradient of the loss with respect to ``rms``'s first output.
        grad_mu: gradient with respect to ``mu_new`` (``centered`` only), or an empty list
            for zero.
        grad_nu: gradient with respect to ``nu_new``, or an empty list for zero; when
            ``centered``, ``grad_mu`` and ``grad_nu`` are both given or both empty.
        grads: the ``grads`` given to :func:`rms`.
        mu_new: the running means it returned (an empty list unless ``centered``).
        nu_new: the running mean squares it returned.
        alpha: as for :func:`rms`.
        eps: as for :func:`rms`.
        factor: as for :func:`rms`.
        centered: as for :func:`rms`.
        moment_grads: also return the gradients with respect to ``mu`` and ``nu``.

    Returns:
        ``(d_grads, d_mu, d_nu)``; ``d_nu`` is empty unless ``moment_grads``, ``d_mu`` unless
        ``moment_grads`` and ``centered``. The gradient with respect to ``params`` is
        ``grad_out`` itself.

    Examples:
        >>> import torch, difopt_accel
        >>> g, v = [torch.full((2,), 3.0)], [torch.full((2,), 9.0)]
        >>> dg, _, dv = difopt_accel.rms_backward([torch.ones(2)], [], [], g, [], v, eps=0.0)
        >>> dg[0]  # out = g / sqrt(0.9 nu + 0.1 g^2): d/dg = 1/3 - 0.1 * 9 / 27
        tensor([0.3000, 0.3000])
    """
    if not grads:
        return [], [], []
    dg, dm, dv = torch.ops.difopt_accel.rms_backward(
        list(grad_out),
        list(grad_mu),
        list(grad_nu),
        list(grads),
        list(mu_new),
        list(nu_new),
        alpha,
        eps,
        factor,
        centered,
        moment_grads,
    )
    return list(dg), list(dm), list(dv)


# ----------------------------------------------------------------------------- trace


@torch.library.register_fake(f"{_LIB}::trace")
def _trace_fake(
    grads: Tensors,
    trace: Tensors,
    params: Tensors,
    count: torch.Tensor,
    momentum: float,
    dampening: float,
    nesterov: bool,
    factor: float,
) -> Lists2:
    _check_lengths("grads", grads, trace=trace, params=params or grads)
    return _like(grads), _like(trace)


@torch.library.register_fake(f"{_LIB}::trace_")
def _trace_inplace_fake(
    out: Tensors,
    trace: Tensors,
    grads: Tensors,
    count: torch.Tensor,
    momentum: float,
    dampening: float,
    nesterov: bool,
    factor: float,
    accumulate: bool,
) -> None:
    _check_lengths("grads", grads, out=out, trace=trace)


@torch.library.register_fake(f"{_LIB}::trace_backward")
def _trace_backward_fake(
    grad_out: Tensors,
    grad_trace: Tensors,
    count: torch.Tensor,
    momentum: float,
    dampening: float,
    nesterov: bool,
    factor: float,
    trace_grads: bool,
) -> Lists2:
    _check_lengths("grad_out", grad_out, grad_trace=grad_trace or grad_out)
    return _like(grad_out), _like(grad_out) if trace_grads else []


def _setup_trace(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    grads, trace, params, count, momentum, dampening, nesterov, factor = inputs
    ctx.n = len(grads)
    ctx.has_params = len(params) > 0
    ctx.hyper = (momentum, dampening, nesterov, factor)
    # The step is linear: its backward needs no tensor of the forward, only the shapes (for
    # missing incoming gradients) and the step number.
    ctx.layout = _layout(grads)
    ctx.save_for_backward(count)


def _backward_trace(ctx: Any, d_out: Any, d_trace: Any) -> tuple[Any, ...]:
    n = ctx.n
    (count,) = ctx.saved_tensors
    trace_grads = _any_needed(ctx.needs_input_grad[1])
    hypers = (None,) * 5  # count and the hyper-parameters
    if _no_gradient(d_out) and _no_gradient(d_trace):
        return [None] * n, [None] * n, [None] * (n if ctx.has_params else 0), *hypers
    d_out_full = _zeros_for_missing(d_out, ctx.layout)
    (d_trace_full,) = _state_grads([d_trace], ctx.layout)
    if torch.is_grad_enabled():  # create_graph=True: differentiable, as for adam
        dg, db = _trace_backward_reference(d_out_full, d_trace_full, count, ctx.hyper)
    else:
        dg, db = torch.ops.difopt_accel.trace_backward(
            d_out_full, d_trace_full, count, *ctx.hyper, trace_grads
        )
    return (
        list(dg),
        _or_nones(db if trace_grads else None, n),
        list(d_out) if ctx.has_params else [],
        *hypers,
    )


def _trace_backward_reference(
    d_out: Tensors, d_trace_new: Tensors, count: torch.Tensor, hyper: tuple[Any, ...]
) -> Lists2:
    """The backward of ``trace`` in differentiable torch operations (same formula).

    The first step (``count == 1``) is selected arithmetically, so a device counter is never
    read on the host.
    """
    momentum, dampening, nesterov, factor = hyper
    dg, db = [], []
    for i, go in enumerate(d_out):
        later = (count != 1).to(go.dtype)  # 0 on the first step, 1 afterwards
        d_dir = factor * go
        g_buf = momentum * d_dir if nesterov else d_dir
        if d_trace_new:
            g_buf = g_buf + d_trace_new[i]
        d_g = (1.0 - dampening * later) * g_buf
        dg.append(d_g + d_dir if nesterov else d_g)
        db.append((momentum * later) * g_buf)
    return dg, db


torch.library.register_autograd(f"{_LIB}::trace", _backward_trace, setup_context=_setup_trace)


def trace_op(
    grads: Tensors,
    trace: Tensors,
    count: torch.Tensor,
    *,
    params: Tensors = (),
    momentum: float = 0.9,
    dampening: float = 0.0,
    nesterov: bool = False,
    factor: float = 1.0,
) -> Lists2:
    """One fused, differentiable heavy-ball momentum step for a list of tensors.

    The op ``torch.ops.difopt_accel.trace`` (exported as ``trace_op``: ``difopt_accel.trace``
    is the transformation). On the first step (``count == 1``) the buffer becomes ``g``,
    afterwards ``momentum * trace + (1 - dampening) * g``; the direction is the new buffer, or
    ``g + momentum * trace'`` with ``nesterov`` (difopt's ``trace``).

    Args:
        grads: the updates (gradients), one tensor per parameter.
        trace: the momentum buffers, same shapes and dtypes as ``grads``.
        count: the step number ``t >= 1`` of this update, a 0-d int64 tensor.
        params: the parameters; when given the first output is
            ``params + factor * direction``, otherwise ``factor * direction``.
        momentum: the momentum coefficient, ``>= 0``.
        dampening: dampening of the update added to the buffer, in ``[0, 1]``.
        nesterov: use Nesterov momentum.
        factor: scale of the direction (e.g. ``-lr``).

    Returns:
        ``(out, trace_new)``, new tensors; differentiable with respect to ``grads``, ``trace``
        and ``params`` (the backward is exact and itself differentiable).

    Examples:
        >>> import torch, difopt_accel
        >>> g, buf = [torch.ones(2)], [torch.full((2,), 2.0)]
        >>> out, buf = difopt_accel.trace_op(g, buf, torch.tensor(2), momentum=0.5)
        >>> out[0]
        tensor([2., 2.])
    """
    out, trace_new = torch.ops.difopt_accel.trace(
        list(grads), list(trace), list(params), count, momentum, dampening, nesterov, factor
    )
    return list(out), list(trace_new)


def trace_(
    out: Tensors,
    trace: Tensors,
    grads: Tensors,
    count: torch.Tensor,
    *,
    momentum: float = 0.9,
    dampening: float = 0.0,
    nesterov: bool = False,
    factor: float = 1.0,
    accumulate: bool = True,
) -> None:
    """One fused momentum step in place (not differentiable; for ``torch.no_grad`` training).

    ``trace`` is updated, and ``out`` becomes ``out + factor * direction`` when
    ``accumulate`` (pass the parameters and ``factor=-lr`` for a whole optimizer step), or
    ``factor * direction`` otherwise. Arguments are as for :func:`trace_op`. Every argument
    is checked before anything is written.

    Examples:
        >>> import torch, difopt_accel
        >>> p, g, buf = [torch.ones(2)], [torch.ones(2)], [torch.zeros(2)]
        >>> difopt_accel.trace_(p, buf, g, torch.tensor(1), factor=-0.5)  # first step
        >>> p[0], buf[0]
        (tensor([0.5000, 0.5000]), tensor([1., 1.]))
    """
    torch.ops.difopt_accel.trace_(
        list(out),
        list(trace),
        list(grads),
        count,
        momentum,
        dampening,
        nesterov,
        factor,
        accumulate,
    )


def trace_backward(
    grad_out: Tensors,
    grad_trace: Tensors,
    count: torch.Tensor,
    *,
    momentum: float = 0.9,
    dampening: float = 0.0,
    nesterov: bool = False,
    factor: float = 1.0,
    trace_grads: bool = True,
) -> Lists2:
    """The vector-Jacobian product of :func:`trace_op` (what its autograd backward calls).

    The step is linear, so nothing of the forward is needed but the step number.

    Args:
        grad_out: gradient of the loss with respect to ``trace_op``'s first output.
        grad_trace: gradient with respect to ``trace_new``, or an empty list for zero.
        count: the step number the step was taken with.
        momentum: as for :func:`trace_op`.
        dampening: as for :func:`trace_op`.
        nesterov: as for :func:`trace_op`.
        factor: as for :func:`trace_op`.
        trace_grads: also return the gradients with respect to ``trace`` (zero on the first
            step, where the buffer is replaced).

    Returns:
        ``(d_grads, d_trace)``; ``d_trace`` is empty unless ``trace_grads``. The gradient
        with respect to ``params`` is ``grad_out`` itself.

    Examples:
        >>> import torch, difopt_accel
        >>> dg, db = difopt_accel.trace_backward(
        ...     [torch.ones(2)], [], torch.tensor(2), momentum=0.5, dampening=0.25
        ... )
        >>> dg[0], db[0]
        (tensor([0.7500, 0.7500]), tensor([0.5000, 0.5000]))
    """
    dg, db = torch.ops.difopt_accel.trace_backward(
        list(grad_out), list(grad_trace), count, momentum, dampening, nesterov, factor, trace_grads
    )
    return list(dg), list(db)


# ----------------------------------------------------------------------------- anderson


@torch.library.register_fake(f"{_LIB}::anderson_step_")
def _anderson_step_fake(
    images: torch.Tensor,
    residuals: torch.Tensor,
    gram: torch.Tensor,
    z: torch.Tensor,
    g: torch.Tensor,
    slot: int,
    k: int,
    ridge: float,
    damping: float,
) -> torch.Tensor:
    return torch.empty_like(z)


def anderson_step_(
    images: torch.Tensor,
    residuals: torch.Tensor,
    gram: torch.Tensor,
    z: torch.Tensor,
    g: torch.Tensor,
    slot: int,
    k: int,
    *,
    ridge: float,
    damping: float = 1.0,
) -> torch.Tensor:
    """One step of Anderson acceleration on a batch of ``B`` fixed-point problems, in place.

    The memory holds, per sample, the last ``m`` images ``f_j = z_j + g_j`` (``images``,
    ``(B, m, n)``) and residuals ``g_j`` (``residuals``, ``(B, m, n)``) in slots, and their
    Gram matrix ``G G^T`` (``gram``, ``(B, m, m)``). The call writes ``z + g`` and ``g`` into
    slot ``slot`` and row and column ``slot`` of the Gram matrix over the first ``k`` slots
    (those in use; ``0 <= slot < k <= m``), then returns, per sample,
    ``sum_j alpha_j (f_j - (1 - damping) g_j)`` over the first ``k`` slots, where ``alpha``
    minimises ``|G^T alpha|^2 + ridge * s * |alpha|^2`` subject to ``sum(alpha) = 1`` (``s``
    the mean of the Gram matrix's diagonal, 1 where it is zero): ``alpha = y / sum(y)`` with
    ``(G G^T + ridge s I) y = 1``. With ``k = 1`` it returns ``z + damping * g``.

    The small solve (Gaussian elimination with partial pivoting) is done in double precision,
    the dot products and the mix in the tensors' dtype, as the pure step does. No autograd:
    for the solves that build no graph. CPU, float32 or float64, contiguous tensors of one
    dtype; anything else raises a ``RuntimeError`` naming the argument.

    Examples:
        >>> import torch, difopt_accel
        >>> z, g = torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])
        >>> F, G, GG = torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)
        >>> difopt_accel.anderson_step_(F, G, GG, z, g, 0, 1, ridge=0.0)  # k = 1: z + g
        tensor([[1., 0.]])
        >>> z, g = torch.tensor([[1.0, 0.0]]), torch.tensor([[-1.0, 1.0]])
        >>> # alpha = (0.6, 0.4) minimises |alpha_0 (1, 0) + alpha_1 (-1, 1)|
        >>> difopt_accel.anderson_step_(F, G, GG, z, g, 1, 2, ridge=0.0)
        tensor([[0.6000, 0.4000]])
    """
    return torch.ops.difopt_accel.anderson_step_(
        images, residuals, gram, z, g, slot, k, float(ridge), float(damping)
    )
