"""Building-block transformations that keep little or no state."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import torch

from difopt import _leafwise as lw
from difopt import _step_counters as counters
from difopt import _validate as check
from difopt._factory import transformation
from difopt._missing_leaves import same_structure
from difopt._shapes import param_shaped
from difopt.base import EmptyState, GradientTransformation, _empty_init, identity

__all__ = [
    "MaskedState",
    "ScaleByScheduleState",
    "TraceState",
    "add_decayed_weights",
    "flip_sign_and_add_weight_decay",
    "masked",
    "nan_to_num",
    "scale",
    "scale_by_neg_lr",
    "scale_by_schedule",
    "trace",
]


def _params_like(updates_spec: Any, params: Any, who: str) -> list[Any]:
    """The leaves of ``params``, which must be given and have the updates' structure."""
    if params is None:
        raise ValueError(f"{who} needs 'params': call update(updates, state, params=params)")
    p_leaves, p_spec = lw.flatten(params)
    if p_spec != updates_spec:
        raise ValueError(
            f"{who}: 'params' has tree structure {p_spec}, which does not match the "
            f"structure of 'updates' {updates_spec}"
        )
    return p_leaves


@transformation
def scale(step_size: float) -> GradientTransformation:
    """Multiply updates by a constant ``step_size``.

    Args:
        step_size: the factor.
    """
    if not isinstance(step_size, (int, float)) or isinstance(step_size, bool):
        if not (torch.is_tensor(step_size) and step_size.ndim == 0):
            raise TypeError(
                f"Invalid value for 'step_size': {step_size!r} (expected a float or 0-d tensor)"
            )

    def update(updates: Any, state: Any, *, params: Any = None, inplace: bool = True) -> Any:
        xs, spec = lw.flatten(updates)
        return lw.unflatten(spec, lw.mul(xs, step_size)), state

    constant = float(step_size) if isinstance(step_size, (int, float)) else None
    return GradientTransformation(_empty_init, update).declare(scale=constant)


class ScaleByScheduleState(NamedTuple):
    """State of :func:`scale_by_schedule`: the number of steps taken."""

    count: Any  # TorchOpt's name; shadows tuple.count


@transformation
def scale_by_schedule(step_size_fn: Callable[[Any], Any]) -> GradientTransformation:
    """Multiply updates by ``step_size_fn(count)``, ``count`` being the steps taken so far.

    difopt's schedules (:mod:`difopt.schedule`) get the count as a Python int (a tensor inside
    ``torch.func`` transforms and compiled steps); any other callable gets a 0-d int64 tensor,
    as TorchOpt passes it (``lambda count: 0.1 * torch.cos(count / 10)`` works).

    Args:
        step_size_fn: a schedule, e.g. from :mod:`difopt.schedule`.
    """
    if not callable(step_size_fn):
        raise TypeError(f"Invalid value for 'step_size_fn': {step_size_fn!r} (expected a callable)")

    def init(params: Any) -> ScaleByScheduleState:
        return ScaleByScheduleState(count=counters.count_init(params))

    int_count = _takes_int_count(step_size_fn)

    def update(updates: Any, state: Any, *, params: Any = None, inplace: bool = True) -> Any:
        xs, spec = lw.flatten(updates)
        count = counters.step_value(state.count)
        if isinstance(count, int) and not int_count:
            count = torch.tensor(count)
        factor = step_size_fn(count)
        out = lw.mul(xs, factor)
        return lw.unflatten(spec, out), ScaleByScheduleState(
            counters.count_inc(state.count, inplace)
        )

    return GradientTransformation(init, update)


def _takes_int_count(fn: Any) -> bool:
    """Whether ``fn`` is difopt's own (its schedules and the aliases' internal ones take a
    Python int: cheaper, and exact in float64 arithmetic); a user's callable gets a tensor."""
    if isinstance(fn, _NegatedSchedule):
        fn = fn.schedule
    return str(getattr(fn, "__module__", None) or "").split(".")[0] == "difopt"


@dataclasses.dataclass(repr=False)
class _NegatedSchedule:
    """``-schedule(count)``, picklable where a lambda would not be."""

    schedule: Callable[[Any], Any]

    def __call__(self, count: Any) -> Any:
        return -self.schedule(count)

    def __repr__(self) -> str:
        return f"-{self.schedule!r}"


def _scale_by_neg_tensor(lr: torch.Tensor) -> GradientTransformation:
    """``-lr`` read at every update (not once): an in-place edit of ``lr`` takes effect."""

    def update(updates: Any, state: Any, *, params: Any = None, inplace: bool = True) -> Any:
        xs, spec = lw.flatten(updates)
        return lw.unflatten(spec, lw.mul(xs, torch.neg(lr))), state

    return GradientTransformation(_empty_init, update)


def _check_lr_tree(
    lr_leaves: list[Any], lr_spec: Any, leaves: list[Any], spec: Any, what: str
) -> None:
    """Raise ``ValueError`` naming ``lr`` when the per-parameter learning rates do not line up
    with ``leaves`` (the parameters or the updates, ``None`` for a missing update): the same
    tree structure (a list and a tuple of the same length count as the same), and each rate
    0-d or broadcastable to its leaf's shape without changing it (a non-0-d rate must also have
    the leaf's dtype, which it would otherwise promote)."""
    if not same_structure(lr_spec, spec):
        raise ValueError(
            f"Invalid value for 'lr': the per-parameter learning rates have tree structure "
            f"{lr_spec}, which does not match the structure of the {what} {spec}"
        )
    for i, (rate, x) in enumerate(zip(lr_leaves, leaves)):
        if x is None or rate.ndim == 0:
            continue
        try:
            ok = torch.broadcast_shapes(rate.shape, x.shape) == x.shape
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(
                f"Invalid value for 'lr': leaf {i} has shape {tuple(rate.shape)}, which does not "
                f"broadcast to the shape {tuple(x.shape)} of its parameter (expected a 0-d "
                "tensor or a tensor broadcastable to the parameter)"
            )
        if rate.dtype != x.dtype:
            raise ValueError(
                f"Invalid value for 'lr': leaf {i} has dtype {rate.dtype} but its parameter "
                f"{x.dtype} (a non-0-d learning rate must have its parameter's dtype)"
            )


def _scale_by_neg_lr_tree(lr: Any) -> GradientTransformation:
    """``-lr_i * update_i`` for each leaf: per-parameter learning rates, read at every update
    (an in-place edit takes effect; rates that require grad get gradients through the step)."""
    lr_leaves, lr_spec = lw.flatten_with_none(lr)

    def init(params: Any) -> EmptyState:
        ps, spec = lw.flatten_with_none(params)
        _check_lr_tree(lr_leaves, lr_spec, ps, spec, "parameters")
        return EmptyState()

    def update(updates: Any, state: Any, *, params: Any = None, inplace: bool = True) -> Any:
        # With None leaves kept (missing updates, which stay None) so that the rates line up.
        xs, spec = lw.flatten_with_none(updates)
        _check_lr_tree(lr_leaves, lr_spec, xs, spec, "updates")
        out = [None if x is None else x * torch.neg(rate) for x, rate in zip(xs, lr_leaves)]
        return lw.unflatten(spec, out), state

    return GradientTransformation(init, update)


@transformation
def scale_by_neg_lr(lr: Any) -> GradientTransformation:
    """Multiply updates by ``-lr`` (``lr`` a float or a schedule): the last step of an alias.

    Args:
        lr: learning rate: a float, a 0-d tensor (read at every step), a schedule, or a tree
            of tensors with the parameters' structure (per-parameter learning rates, as
            Meta-SGD learns them), each leaf 0-d or broadcastable to its parameter and read at
            every step. Only a float is declared as the ``learning_rate`` (a constant factor
            the optimizers may fold into the parameter update).
    """
    check.learning_rate("lr", lr, per_parameter=True)
    if not check.is_scalar_learning_rate(lr):
        return _scale_by_neg_lr_tree(lr)
    if callable(lr):
        return scale_by_schedule(_NegatedSchedule(lr))
    if isinstance(lr, torch.Tensor):
        return _scale_by_neg_tensor(lr)
    return scale(-lr).declare(learning_rate=lr)


@transformation
def flip_sign_and_add_weight_decay(
    weight_decay: float = 0.0, maximize: bool = False
) -> GradientTransformation:
    """Negate updates when ``maximize`` and add ``weight_decay * params`` (coupled decay).

    This is torch.optim's handling of ``maximize`` and L2 ``weight_decay``: the gradient is
    negated first, then the decay term is added.

    Args:
        weight_decay: L2 penalty coefficient.
        maximize: maximize the objective instead of minimizing it.
    """
    check.non_negative("weight_decay", weight_decay)
    check.boolean("maximize", maximize)
    if weight_decay == 0.0 and not maximize:
        return identity()

    def update(updates: Any, state: Any, *, params: Any = None, inplace: bool = True) -> Any:
        xs, spec = lw.flatten(updates)
        if weight_decay != 0.0:
            ps = _params_like(spec, params, "flip_sign_and_add_weight_decay")
        if maximize:
            xs = lw.neg(xs)
        if weight_decay != 0.0:
            xs = lw.add(xs, ps, alpha=weight_decay)
        return lw.unflatten(spec, xs), state

    return GradientTransformation(_empty_init, update)


@param_shaped("trace")
class TraceState(NamedTuple):
    """State of :func:`trace`: the momentum buffer and the number of steps taken."""

    trace: Any
    count: Any  # TorchOpt's name; shadows tuple.count


@transformation
def trace(
    momentum: float = 0.9,
    dampening: float = 0.0,
    nesterov: bool = False,
    moment_requires_grad: bool = False,
) -> GradientTransformation:
    """Heavy-ball momentum, as torch.optim.SGD computes it.

    The buffer starts as the first update (no dampening on the first step), then
    ``buf = momentum * buf + (1 - dampening) * g``. The output is ``buf``, or
    ``g + momentum * buf`` with ``nesterov``.

    Args:
        momentum: the momentum coefficient.
        dampening: dampening of the update added to the buffer.
        nesterov: use Nesterov momentum.
        moment_requires_grad: create the buffer with ``requires_grad=True``.
    """
    check.non_negative("momentum", momentum)
    check.closed_unit_interval("dampening", dampening)
    check.boolean("nesterov", nesterov)
    if nesterov and (momentum <= 0.0 or dampening != 0.0):
        raise ValueError(
            "Invalid combination: 'nesterov=True' requires 'momentum' > 0 and 'dampening' == 0"
        )

    def init(params: Any) -> TraceState:
        ps, spec = lw.flatten(params)
        buf = lw.zeros_like(ps, moment_requires_grad)
        return TraceState(trace=lw.unflatten(spec, buf), count=counters.count_init(params))

    def update(updates: Any, state: Any, *, params: Any = None, inplace: bool = True) -> Any:
        gs, spec = lw.flatten(updates)
        buf = lw.leaves(state.trace)
        first = counters.step_value(state.count)
        if isinstance(first, int):
            if first == 0:
                # A new tensor when not in place (buf is zeros), as TorchOpt: the update itself
                # may be a view (an autograd gradient), which stop_gradient cannot detach.
                new = lw.assign(buf, gs, True) if inplace else lw.add(buf, gs)
            elif inplace:
                new = lw.mul_(buf, momentum)
                lw.add_(new, gs, alpha=1.0 - dampening)
            else:
                new = lw.add(lw.mul(buf, momentum), gs, alpha=1.0 - dampening)
        else:  # traced counter: select the first-step branch arithmetically
            damp = counters.where_first(first, 1.0, 1.0 - dampening, gs[0])
            mom = counters.where_first(first, 0.0, momentum, gs[0])
            new = [b * mom + damp * g for b, g in zip(buf, gs)]
            new = lw.assign(buf, new, inplace)
        out = lw.add(gs, new, alpha=momentum) if nesterov else new
        new_state = TraceState(lw.unflatten(spec, new), counters.count_inc(state.count, inplace))
        return lw.unflatten(spec, out), new_state

    return GradientTransformation(init, update)


class MaskedState(NamedTuple):
    """State of :func:`masked`: the inner transformation's state on the selected leaves."""

    inner_state: Any


def _mask_leaves(mask: Any, params: Any, spec: Any, unknown_ok: bool = False) -> list[Any]:
    """The mask's flags, one per leaf of ``spec``. With ``unknown_ok`` a ``None`` flag (a
    callable mask given a parameter that is hidden because its update is missing) is returned
    as ``None`` for the caller to resolve."""
    m = mask(params) if callable(mask) else mask
    flags, m_spec = lw.flatten_with_none(m) if spec.none_is_leaf else lw.flatten(m)
    if not same_structure(m_spec, spec):
        # TorchOpt's chains see the parameters as one flat sequence: a flat list or tuple of
        # one flag per parameter leaf is the mask too.
        if not (isinstance(m, (list, tuple)) and len(m) == spec.num_leaves == len(flags)):
            raise ValueError(
                f"'mask' has tree structure {m_spec}, which does not match the parameters "
                f"{spec} (nor is it a flat sequence of one flag per parameter)"
            )
    return [None if f is None and unknown_ok else _flag(f) for f in flags]


def _flag(f: Any) -> bool:
    """A mask leaf as a bool: a bool, a numpy bool or a one-element bool tensor."""
    if isinstance(f, bool):
        return f
    if torch.is_tensor(f) and f.dtype == torch.bool and f.numel() == 1:
        return bool(f)
    if check.numpy_bool(f):
        return bool(f)
    raise TypeError(f"'mask' leaves must be bools, got {type(f).__name__}")


@transformation
def masked(inner: GradientTransformation, mask: Any) -> GradientTransformation:
    """Apply ``inner`` only to the leaves where ``mask`` is True; pass the others through.

    Args:
        inner: the transformation to apply.
        mask: a pytree of bools with the structure of the parameters, or a callable that
            returns one given the parameters.
    """
    if not isinstance(inner, GradientTransformation):
        raise TypeError(f"Invalid value for 'inner': {inner!r} (expected a GradientTransformation)")

    # A callable mask cannot be evaluated on a parameter whose update is missing (the chain
    # hides it, see difopt._missing_leaves); its flag is then the one computed at init for the same
    # tree structure.
    flags_at_init: dict[Any, list[bool]] = {}

    def init(params: Any) -> MaskedState:
        ps, spec = lw.flatten(params)
        flags = _mask_leaves(mask, params, spec)
        if callable(mask):
            flags_at_init[lw.flatten_with_none(params)[1]] = flags
        return MaskedState(inner.init([p for p, f in zip(ps, flags) if f]))

    def update(updates: Any, state: Any, *, params: Any = None, inplace: bool = True) -> Any:
        # None leaves (missing updates) are kept as leaves so that the mask lines up; the
        # inner transformation receives them and passes them through (difopt._missing_leaves).
        xs, spec = lw.flatten_with_none(updates)
        if callable(mask) and params is None:
            raise ValueError("masked() with a callable 'mask' needs 'params' in update()")
        flags = _mask_leaves(mask, params if callable(mask) else None, spec, unknown_ok=True)
        if any(f is None for f in flags):
            known = flags_at_init.get(spec)
            if known is None or any(f is None and x is not None for f, x in zip(flags, xs)):
                raise TypeError(
                    "'mask' leaves must be bools, got NoneType (a callable mask returned None "
                    "for a parameter; where its update is missing the flag is taken from "
                    "init(), which was not called with parameters of this structure)"
                )
            flags = [k if f is None else f for f, k in zip(flags, known)]
        sel = [x for x, f in zip(xs, flags) if f]
        sel_params = None
        if params is not None:
            ps, p_spec = lw.flatten_with_none(params)
            if p_spec != spec:
                raise ValueError(
                    f"masked: 'params' has tree structure {p_spec}, which does not match the "
                    f"structure of 'updates' {spec}"
                )
            sel_params = [p for p, f in zip(ps, flags) if f]
        new_sel, inner_state = inner.update(
            sel, state.inner_state, params=sel_params, inplace=inplace
        )
        it = iter(new_sel)
        out = [next(it) if f else x for x, f in zip(xs, flags)]
        return lw.unflatten(spec, out), MaskedState(inner_state)

    return GradientTransformation(init, update)


@transformation
def add_decayed_weights(weight_decay: float = 0.0, mask: Any = None) -> GradientTransformation:
    """Add ``weight_decay * params`` to the updates (decoupled decay when placed after scaling).

    Args:
        weight_decay: the decay coefficient.
        mask: optional pytree of bools (or callable returning one) selecting decayed leaves.
    """
    check.non_negative("weight_decay", weight_decay)

    def update(updates: Any, state: Any, *, params: Any = None, inplace: bool = True) -> Any:
        if weight_decay == 0.0:
            return updates, state
        xs, spec = lw.flatten(updates)
        ps = _params_like(spec, params, "add_decayed_weights")
        return lw.unflatten(spec, lw.add(xs, ps, alpha=weight_decay)), state

    plain = GradientTransformation(_empty_init, update)
    if mask is not None:
        return masked(plain, mask)
    return plain


@transformation
def nan_to_num(
    nan: float = 0.0, posinf: float | None = None, neginf: float | None = None
) -> GradientTransformation:
    """Replace NaN and infinite values in the updates, as :func:`torch.nan_to_num` does.

    Args:
        nan: the value for NaN.
        posinf: the value for +inf (default: the dtype's largest finite value).
        neginf: the value for -inf (default: the dtype's lowest finite value).
    """
    for name, v in (("nan", nan), ("posinf", posinf), ("neginf", neginf)):
        if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool)):
            raise TypeError(f"Invalid value for '{name}': {v!r} (expected a float or None)")
    if nan is not None and math.isnan(nan):
        raise ValueError("Invalid value for 'nan': nan (expected a number)")

    def update(updates: Any, state: Any, *, params: Any = None, inplace: bool = True) -> Any:
        xs, spec = lw.flatten(updates)
        # In place (TorchOpt's contract: the same tensors come back) unless that would write
        # into a leaf that requires grad.
        out = [
            x.nan_to_num_(nan=nan, posinf=posinf, neginf=neginf)
            if inplace and not (x.is_leaf and x.requires_grad)
            else torch.nan_to_num(x, nan=nan, posinf=posinf, neginf=neginf)
            for x in xs
        ]
        return lw.unflatten(spec, out), state

    return GradientTransformation(_empty_init, update)
