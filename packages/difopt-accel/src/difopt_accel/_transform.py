"""Transformations on the fused ops, and the ``difopt.ops`` provider object.

Each transformation here takes exactly the arguments of its pure counterpart in
:mod:`difopt.transform` and keeps exactly its state (the same NamedTuple, a step ``count`` as a
0-d int64 CPU tensor where the pure one has it), so the two are interchangeable mid-training,
and computes the same values (up to rounding: operations may be fused in another order):

- :func:`scale_by_adam` (op ``adam``),
- :func:`scale_by_rms` and :func:`scale_by_stddev` (op ``rms``, uncentered and centered),
- :func:`trace` (op ``trace``, heavy-ball momentum).

Their ``update`` is one fused kernel call for the whole list of tensors: in place (the state
is written) with ``inplace=True`` and no autograd graph to keep, otherwise the functional,
differentiable op. Their fused apply (``apply_scaled``, see :class:`difopt.base.Properties`)
also folds the learning-rate step into the parameters, so a classic optimizer step is a single
kernel call. Where an op cannot run (unsupported device or dtype, non-contiguous state, inside
``torch.func`` transforms) the transformation warns once and runs the pure one instead.
"""

from __future__ import annotations

from itertools import chain, repeat
from operator import attrgetter
from typing import Any, Callable, NamedTuple, Sequence

import torch

from difopt import transform as pure_transforms
from difopt.base import GradientTransformation
from difopt.plugin import fast_path, flatten, leaves, on_graph, same_step, transformation, unflatten
from difopt.transform import ScaleByAdamState, ScaleByRmsState, ScaleByRStdDevState, TraceState
from difopt_accel import _ops

__all__ = [
    "AdamOps",
    "FusedOps",
    "is_available",
    "ops",
    "scale_by_adam",
    "scale_by_rms",
    "scale_by_stddev",
    "trace",
]

_DTYPES = {
    "cpu": frozenset({torch.float32, torch.float64}),
    "cuda": frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64}),
}

Tensors = list[torch.Tensor]


def is_available(device: Any = None) -> bool:
    """Whether the fused ops can run on ``device`` (default: the CPU).

    Args:
        device: a ``torch.device`` or its string (``"cpu"``, ``"cuda"``, ``"cuda:1"``).

    Returns:
        True for the CPU; for CUDA, when this build has the CUDA kernels and a GPU is present.
    """
    dev = torch.device("cpu" if device is None else device)
    return _available_on(dev.type)


# Which device types the ops run on. The kernels are registered when the library loads and
# never change, and torch caches whether a GPU is present, so each answer is computed once: a
# classic step asks on every call.
_AVAILABLE: dict[str, bool] = {}


@torch.compiler.assume_constant_result  # traced as a constant: no graph break under compile
def _available_on(device_type: str) -> bool:
    known = _AVAILABLE.get(device_type)
    if known is None:
        known = _ops.has_kernel(device_type)
        if device_type == "cuda":
            known = known and torch.cuda.is_available()
        _AVAILABLE[device_type] = known
    return known


# ----------------------------------------------------------------------------- shared logic

_dtype_of = attrgetter("dtype")
_shape_of = attrgetter("shape")


def _why_not_fusable(
    grads: Sequence[Any], states: Sequence[Sequence[Any]], params: Sequence[Any] | None
) -> str | None:
    """None when a fused op accepts these lists, else why not (for a one-time warning).

    A classic step asks this on every call, for every tensor, so the accepted case is checked
    list by list with C-level loops (``map``) and the reason is worked out only on rejection.
    """
    if not grads:
        return "empty"
    if torch._C._are_functorch_transforms_active():
        return "inside torch.func transforms (vmap/grad have no rule for the fused op)"
    others = [*states, *([] if params is None else [params])]
    n = len(grads)
    if any(len(xs) != n for xs in others):
        return "state and updates differ in length"
    if torch.compiler.is_compiling():
        # Dynamo traces the per-tensor checks (metadata it guards on) but not the C-level
        # loops below; the compiled graph has none of this cost.
        return _rejection(grads, others)
    every = [*grads, *chain.from_iterable(others)]
    if all(map(isinstance, every, repeat(torch.Tensor))):
        dtypes = list(map(_dtype_of, grads))
        shapes = list(map(_shape_of, grads))
        first = grads[0]
        if (
            _available_on(first.device.type)
            and set(dtypes) <= _DTYPES[first.device.type]
            and len(set(map(torch.Tensor.get_device, every))) == 1
            and all(list(map(_dtype_of, xs)) == dtypes for xs in others)
            and all(list(map(_shape_of, xs)) == shapes for xs in others)
            and all(map(torch.Tensor.is_contiguous, every[n:]))
        ):
            return None
    return _rejection(grads, others)


def _rejection(grads: Sequence[Any], others: list[Sequence[Any]]) -> str | None:
    """Why the lists cannot go to a fused op (None when they can), tensor by tensor."""
    first = grads[0]
    if not torch.is_tensor(first):
        return "updates are not tensors"
    device = first.device
    if not _available_on(device.type):
        return f"the fused op is not available for device {device}"
    dtypes = _DTYPES[device.type]
    for i, g in enumerate(grads):
        if not torch.is_tensor(g) or g.device != device or g.dtype not in dtypes:
            return f"tensor dtype/device {getattr(g, 'dtype', None)}/{getattr(g, 'device', None)} is not supported"
        for xs in others:
            x = xs[i]
            if not torch.is_tensor(x) or x.dtype != g.dtype or x.device != device:
                return "state or parameters differ in dtype or device from the updates"
            if x.shape != g.shape or not x.is_contiguous():
                return "state or parameters are not contiguous or differ in shape"
    return None


def _contiguous(xs: Sequence[torch.Tensor]) -> Tensors:
    return [x if x.is_contiguous() else x.contiguous() for x in xs]


class _Kernel(NamedTuple):
    """How a transformation runs on its fused op.

    ``fields`` are the state's tensor trees the op reads and writes, in the op's order; a
    state with a ``count`` field passes the step number ``count + 1`` to the op.
    ``inplace(out, states, grads, step, factor, accumulate)`` calls the in-place op;
    ``functional(grads, states, params, step, factor) -> (out, *new_states)`` the functional
    one (``params`` empty: ``out`` is ``factor * direction``).
    """

    op: str
    state_type: Callable[..., Any]
    fields: tuple[str, ...]
    inplace: Callable[[Tensors, list[Tensors], Tensors, Any, float, bool], None]
    functional: Callable[[Tensors, list[Tensors], Tensors, Any, float], Sequence[Tensors]]


def _fused(pure: GradientTransformation, kernel: _Kernel) -> GradientTransformation:
    """``pure`` computed by ``kernel``'s op where it can run; elsewhere ``pure`` itself, after
    one warning that says why (:func:`difopt.plugin.fast_path`)."""
    counted = "count" in getattr(kernel.state_type, "_fields", ())

    def run(
        gs: Sequence[torch.Tensor],
        updates: Any,
        states: list[Tensors],
        counts: Tensors,
        params: Tensors | None,
        factor: float,
        inplace: bool,
    ) -> tuple[Tensors, Any]:
        gs = _contiguous(gs)
        # The counters (one per parameter) agree here: update() is wrapped by core's
        # transformation decorator, and apply_scaled checks them. The op takes the step as
        # one 0-d tensor.
        step = counts[0] + 1 if counts else None
        if inplace and not on_graph(gs, *states, params or []):
            out = params if params is not None else [torch.empty_like(g) for g in gs]
            kernel.inplace(out, states, gs, step, factor, params is not None)
            if counts:
                torch._foreach_add_(counts, 1)
            return list(out), None
        out, *new_states = kernel.functional(gs, states, params or [], step, factor)
        spec = flatten(updates)[1]
        trees = {f: unflatten(spec, xs) for f, xs in zip(kernel.fields, new_states)}
        if counted:
            trees["count"] = unflatten(spec, list(torch._foreach_add(counts, 1)))
        return out, kernel.state_type(**trees)

    def counters(state: Any) -> Tensors:
        return leaves(state.count) if counted else []

    def state_leaves(state: Any) -> list[Tensors]:
        return [leaves(getattr(state, f)) for f in kernel.fields]

    def why_not(updates: Any, state: Any, params: Any) -> str | None:
        return _why_not_fusable(leaves(updates), state_leaves(state), None)

    def update(
        updates: Any, state: Any, *, params: Any = None, inplace: bool = True
    ) -> tuple[Any, Any]:
        gs, spec = flatten(updates)
        out, new_state = run(gs, updates, state_leaves(state), counters(state), None, 1.0, inplace)
        return unflatten(spec, out), state if new_state is None else new_state

    def apply_scaled(
        updates: Any, state: Any, *, params: Any, factor: float, inplace: bool
    ) -> tuple[Tensors, Any] | None:
        gs, ps, states = leaves(updates), leaves(params), state_leaves(state)
        if _why_not_fusable(gs, states, ps) is not None:
            return None  # the caller falls back to update(), which warns
        counts = counters(state)
        if counted and not same_step(counts):
            return None  # update() runs the op once per step value
        out, new_state = run(gs, updates, states, counts, ps, factor, inplace)
        return out, state if new_state is None else new_state

    name = f"difopt-accel: the fused {kernel.op} op"
    return fast_path(pure, update, why_not, name=name, apply_scaled=apply_scaled)


# ----------------------------------------------------------------------------- transformations


@transformation
def scale_by_adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    moment_requires_grad: bool = False,
) -> GradientTransformation:
    """:func:`difopt.transform.scale_by_adam` computed by the fused op.

    Same arguments, state and values as the pure transformation. With ``inplace=True`` and no
    autograd graph to keep, the moments and step count are updated in place by one kernel
    call; otherwise the step is one differentiable op call whose backward is exact.

    Args:
        b1: decay rate of the first moment.
        b2: decay rate of the second moment.
        eps: term added to the denominator outside the square root.
        eps_root: term added inside the square root.
        moment_requires_grad: create the moments with ``requires_grad=True``.

    Returns:
        A transformation declaring a fused apply (:class:`difopt.base.Properties`).

    Examples:
        >>> import torch, difopt, difopt_accel
        >>> opt = difopt.chain(difopt_accel.scale_by_adam(), difopt.transform.scale(-0.1))
        >>> w = torch.ones(3)
        >>> g = torch.full((3,), 2.0)
        >>> updates, state = opt.update(g, opt.init(w))
        >>> updates
        tensor([-0.1000, -0.1000, -0.1000])
    """
    pure = pure_transforms.scale_by_adam(b1, b2, eps, eps_root, moment_requires_grad)
    kernel = _Kernel(
        "Adam",
        ScaleByAdamState,
        ("mu", "nu"),
        inplace=lambda out, s, gs, step, factor, acc: _ops.adam_(
            out, s[0], s[1], gs, step, b1=b1, b2=b2, eps=eps, eps_root=eps_root, factor=factor,
            accumulate=acc,
        ),
        functional=lambda gs, s, ps, step, factor: _ops.adam(
            gs, s[0], s[1], step, params=ps, b1=b1, b2=b2, eps=eps, eps_root=eps_root, factor=factor
        ),
    )  # fmt: skip
    return _fused(pure, kernel)


def _rms_kernel(alpha: float, eps: float, centered: bool) -> _Kernel:
    """The kernel of scale_by_stddev (``centered``, state fields mu and nu) or scale_by_rms
    (nu alone: the op then takes and returns an empty ``mu``)."""

    def moments(states: list[Tensors]) -> tuple[Tensors, Tensors]:
        return (states[0], states[1]) if centered else ([], states[0])

    def functional(
        gs: Tensors, states: list[Tensors], ps: Tensors, step: Any, factor: float
    ) -> Sequence[Tensors]:
        out, mu, nu = _ops.rms(
            gs, *moments(states), params=ps, alpha=alpha, eps=eps, factor=factor, centered=centered
        )
        return (out, mu, nu) if centered else (out, nu)

    return _Kernel(
        "RMSProp (centered)" if centered else "RMSProp",
        ScaleByRStdDevState if centered else ScaleByRmsState,
        ("mu", "nu") if centered else ("nu",),
        inplace=lambda out, s, gs, step, factor, acc: _ops.rms_(
            out, *moments(s), gs, alpha=alpha, eps=eps, factor=factor, centered=centered,
            accumulate=acc,
        ),
        functional=functional,
    )  # fmt: skip


@transformation
def scale_by_rms(
    alpha: float = 0.9, eps: float = 1e-8, initial_scale: float = 0.0
) -> GradientTransformation:
    """:func:`difopt.transform.scale_by_rms` (uncentered RMSProp) computed by the fused op.

    Same arguments, state (``ScaleByRmsState(nu)``) and values as the pure transformation:
    ``nu = alpha nu + (1 - alpha) g^2`` and the output ``g / (sqrt(nu) + eps)``. With
    ``inplace=True`` and no autograd graph to keep, ``nu`` is updated in place by one kernel
    call; otherwise the step is one differentiable op call whose backward is exact.

    Args:
        alpha: decay rate of the running mean square, in ``[0, 1]``.
        eps: term added to the root.
        initial_scale: initial value of the running mean square.

    Returns:
        A transformation declaring a fused apply (:class:`difopt.base.Properties`).

    Examples:
        >>> import torch, difopt_accel
        >>> t = difopt_accel.scale_by_rms(alpha=0.75, eps=0.0)
        >>> g = torch.full((3,), 2.0)
        >>> updates, state = t.update(g, t.init(g))
        >>> updates, state.nu
        (tensor([2., 2., 2.]), tensor([1., 1., 1.]))
    """
    pure = pure_transforms.scale_by_rms(alpha, eps, initial_scale)
    return _fused(pure, _rms_kernel(alpha, eps, centered=False))


@transformation
def scale_by_stddev(
    alpha: float = 0.9, eps: float = 1e-8, initial_scale: float = 0.0
) -> GradientTransformation:
    """:func:`difopt.transform.scale_by_stddev` (centered RMSProp) computed by the fused op.

    Same arguments, state (``ScaleByRStdDevState(mu, nu)``) and values as the pure
    transformation: ``mu = lerp(mu, g, 1 - alpha)``, ``nu = alpha nu + (1 - alpha) g^2`` and
    the output ``g / (sqrt(nu - mu^2) + eps)``. Arguments, return value, in-place and
    differentiable modes as for :func:`scale_by_rms`.

    Examples:
        >>> import torch, difopt_accel
        >>> t = difopt_accel.scale_by_stddev(alpha=0.5, eps=0.0)
        >>> g = torch.full((3,), 2.0)
        >>> updates, state = t.update(g, t.init(g))  # mu = 1, nu = 2: g / sqrt(2 - 1)
        >>> updates
        tensor([2., 2., 2.])
    """
    pure = pure_transforms.scale_by_stddev(alpha, eps, initial_scale)
    return _fused(pure, _rms_kernel(alpha, eps, centered=True))


@transformation
def trace(
    momentum: float = 0.9,
    dampening: float = 0.0,
    nesterov: bool = False,
    moment_requires_grad: bool = False,
) -> GradientTransformation:
    """:func:`difopt.transform.trace` (heavy-ball momentum) computed by the fused op.

    Same arguments, state (``TraceState(trace, count)``) and values as the pure
    transformation: the buffer starts as the first update, then
    ``buf = momentum buf + (1 - dampening) g``; the output is ``buf``, or
    ``g + momentum buf`` with ``nesterov``. With ``inplace=True`` and no autograd graph to
    keep, the buffer and step count are updated in place by one kernel call; otherwise the step
    is one differentiable op call whose backward is exact. (The op itself is
    :func:`difopt_accel.trace_op`.)

    Args:
        momentum: the momentum coefficient.
        dampening: dampening of the update added to the buffer.
        nesterov: use Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
        moment_requires_grad: create the buffer with ``requires_grad=True``.

    Returns:
        A transformation declaring a fused apply (:class:`difopt.base.Properties`).

    Examples:
        >>> import torch, difopt, difopt_accel
        >>> t = difopt_accel.trace(momentum=0.5)
        >>> g = torch.ones(3)
        >>> state = t.init(g)
        >>> _, state = t.update(g, state)  # the first step: buf = g
        >>> updates, state = t.update(g, state)  # 0.5 * 1 + 1
        >>> updates, int(state.count)
        (tensor([1.5000, 1.5000, 1.5000]), 2)
    """
    pure = pure_transforms.trace(momentum, dampening, nesterov, moment_requires_grad)
    kernel = _Kernel(
        "momentum (trace)",
        TraceState,
        ("trace",),
        inplace=lambda out, s, gs, step, factor, acc: _ops.trace_(
            out, s[0], gs, step, momentum=momentum, dampening=dampening, nesterov=nesterov,
            factor=factor, accumulate=acc,
        ),
        functional=lambda gs, s, ps, step, factor: _ops.trace_op(
            gs, s[0], step, params=ps, momentum=momentum, dampening=dampening, nesterov=nesterov,
            factor=factor,
        ),
    )  # fmt: skip
    return _fused(pure, kernel)


# ----------------------------------------------------------------------------- provider


class FusedOps:
    """The ``difopt.ops`` provider of the fused ops (entry points ``adam``, ``rmsprop``,
    ``sgd`` and ``anderson``, all this one object).

    difopt-core's accelerated transformations (``use_accelerated_op=True``) ask the registry
    for it and call :meth:`is_available` and the factory of the transformation they replace,
    with the pure transformation's arguments.
    """

    DIFOPT_PLUGIN_API = "1.0"

    def is_available(self, device: Any = None) -> bool:
        """See :func:`difopt_accel.is_available`."""
        return is_available(device)

    def scale_by_adam(
        self,
        b1: float = 0.9,
        b2: float = 0.999,
        eps: float = 1e-8,
        eps_root: float = 0.0,
        moment_requires_grad: bool = False,
    ) -> GradientTransformation:
        """See :func:`difopt_accel.scale_by_adam`."""
        return scale_by_adam(b1, b2, eps, eps_root, moment_requires_grad)

    def scale_by_rms(
        self, alpha: float = 0.9, eps: float = 1e-8, initial_scale: float = 0.0
    ) -> GradientTransformation:
        """See :func:`difopt_accel.scale_by_rms`."""
        return scale_by_rms(alpha, eps, initial_scale)

    def scale_by_stddev(
        self, alpha: float = 0.9, eps: float = 1e-8, initial_scale: float = 0.0
    ) -> GradientTransformation:
        """See :func:`difopt_accel.scale_by_stddev`."""
        return scale_by_stddev(alpha, eps, initial_scale)

    def trace(
        self,
        momentum: float = 0.9,
        dampening: float = 0.0,
        nesterov: bool = False,
        moment_requires_grad: bool = False,
    ) -> GradientTransformation:
        """See :func:`difopt_accel.trace`."""
        return trace(momentum, dampening, nesterov, moment_requires_grad)

    def anderson_rejection(self, z: torch.Tensor) -> str | None:
        """None when :meth:`anderson_step_` runs on iterates like ``z``, else why not.

        It runs on CPU tensors of float32 or float64, outside ``torch.func`` transforms.
        """
        if torch._C._are_functorch_transforms_active():
            return "inside torch.func transforms (vmap has no rule for the fused op)"
        if z.device.type != "cpu" or z.dtype not in _DTYPES["cpu"]:
            return f"the fused Anderson step runs on CPU float32/float64, got {z.device} {z.dtype}"
        return None

    def anderson_step_(
        self,
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
        """See :func:`difopt_accel.anderson_step_` (entry point ``anderson``)."""
        return _ops.anderson_step_(
            images, residuals, gram, z, g, slot, k, ridge=ridge, damping=damping
        )

    def __repr__(self) -> str:
        return "difopt_accel.ops"


# The former name of FusedOps, when it provided Adam alone.
AdamOps = FusedOps

#: The provider object that the ``difopt.ops`` entry points ``adam``, ``rmsprop``, ``sgd`` and
#: ``anderson`` (difopt-implicit's ``Anderson(use_accelerated_op=True)``) name. difopt-core's ``use_accelerated_op=True`` loads it from the registry, asks
#: ``ops.is_available(device)``, and builds the fused transformation with the factory of the
#: pure one it replaces (``ops.scale_by_adam(...)``, ``scale_by_rms``, ``scale_by_stddev``,
#: ``trace``), with the same arguments.
ops = FusedOps()
