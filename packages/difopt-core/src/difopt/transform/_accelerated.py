"""Transformations computed by a fused native op when a ``difopt.ops`` plugin provides one.

Each function here takes exactly the arguments of its pure transformation and keeps exactly its
state, so the two are interchangeable mid-training. The op comes from the plugin registry: the
``difopt.ops`` entry point named after the optimizer family (``adam``, ``rmsprop``, ``sgd``;
``difopt-accel`` registers all three) gives a provider object with ``is_available(device)``
and one factory method per transformation. When no provider is installed, it lacks the method,
or it does not support the updates' device, difopt warns once and runs the pure
transformation, which computes the same values up to rounding.
"""

from __future__ import annotations

from typing import Any, Callable

from difopt import _leafwise as lw
from difopt._factory import transformation
from difopt.base import GradientTransformation
from difopt.plugin import fast_path
from difopt.transform._adaptive import scale_by_adam, scale_by_rms, scale_by_stddev
from difopt.transform._core import trace

__all__ = [
    "accelerated_trace",
    "scale_by_accelerated_adam",
    "scale_by_accelerated_rms",
    "scale_by_accelerated_stddev",
]


def _fused_or_pure(
    op: str, factory: Callable[..., GradientTransformation], *args: Any
) -> GradientTransformation:
    """``factory(*args)``, computed by the ``op`` provider's method of the same name (which
    takes the same arguments) where the provider supports it."""
    from difopt import registry as plugins

    pure, method = factory(*args), factory.__name__
    provider = plugins.op_provider(op)
    if provider is None:
        plugins.warn_once(
            "accelerated-op-missing",
            "use_accelerated_op=True but no fused op provider is installed "
            "(pip install difopt-accel); using the pure PyTorch implementation.",
        )
        return pure
    provided = getattr(provider, method, None)
    if not callable(provided):
        plugins.warn_once(
            f"accelerated-op-missing-{op}.{method}",
            f"the installed provider of the fused {op!r} op ({provider!r}) has no {method}(); "
            "using the pure PyTorch implementation.",
        )
        return pure
    fused = provided(*args)

    def why_not(updates: Any, state: Any, params: Any) -> str | None:
        first = next(iter(lw.leaves(updates)), None)
        if first is None or provider.is_available(first.device):
            return None
        return f"not available for device {first.device}"

    def apply_scaled(updates: Any, state: Any, *, params: Any, factor: float, inplace: bool) -> Any:
        # The provider's own one-pass step, if it has one. None (no such step, or it declines
        # these arguments) makes the caller run update(), which falls back with a warning.
        fused_apply = fused.properties.apply_scaled
        if fused_apply is None or why_not(updates, state, params) is not None:
            return None
        return fused_apply(updates, state, params=params, factor=factor, inplace=inplace)

    return fast_path(
        pure, fused.update, why_not, name=f"the fused {op!r} op", apply_scaled=apply_scaled
    )


@transformation
def scale_by_accelerated_adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    moment_requires_grad: bool = False,
) -> GradientTransformation:
    """:func:`scale_by_adam` computed by a fused native op when one is installed.

    The op is the ``adam`` entry point of the ``difopt.ops`` group (e.g. ``difopt-accel``).
    When no provider is installed, or it does not support the parameters' device, difopt warns
    once and runs :func:`scale_by_adam`, which computes the same values up to rounding.
    """
    return _fused_or_pure("adam", scale_by_adam, b1, b2, eps, eps_root, moment_requires_grad)


@transformation
def scale_by_accelerated_rms(
    alpha: float = 0.9, eps: float = 1e-8, initial_scale: float = 0.0
) -> GradientTransformation:
    """:func:`scale_by_rms` computed by a fused native op (``difopt.ops`` entry ``rmsprop``).

    Falls back to :func:`scale_by_rms` with a one-time warning, as
    :func:`scale_by_accelerated_adam` does.
    """
    return _fused_or_pure("rmsprop", scale_by_rms, alpha, eps, initial_scale)


@transformation
def scale_by_accelerated_stddev(
    alpha: float = 0.9, eps: float = 1e-8, initial_scale: float = 0.0
) -> GradientTransformation:
    """:func:`scale_by_stddev` (centered RMSprop) computed by a fused native op.

    The op is the ``difopt.ops`` entry ``rmsprop``; falls back to :func:`scale_by_stddev` with
    a one-time warning, as :func:`scale_by_accelerated_adam` does.
    """
    return _fused_or_pure("rmsprop", scale_by_stddev, alpha, eps, initial_scale)


@transformation
def accelerated_trace(
    momentum: float = 0.9,
    dampening: float = 0.0,
    nesterov: bool = False,
    moment_requires_grad: bool = False,
) -> GradientTransformation:
    """:func:`trace` (heavy-ball momentum) computed by a fused native op.

    The op is the ``difopt.ops`` entry ``sgd``; falls back to :func:`trace` with a one-time
    warning, as :func:`scale_by_accelerated_adam` does.
    """
    return _fused_or_pure("sgd", trace, momentum, dampening, nesterov, moment_requires_grad)
