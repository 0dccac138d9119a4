"""The public API for plugins: what a fast transformation, an op provider or a third-party
optimizer needs from difopt-core, versioned by :data:`PLUGIN_API_VERSION`.

A plugin imports public names only (this module, :mod:`difopt.base`, :mod:`difopt.registry`
and the documented modules); private ones (``difopt._*``) may change in any release. A
change that breaks a name here raises the major version, and the registry refuses a plugin
built for another major version (its module declares ``DIFOPT_PLUGIN_API = "1.0"``).

What is here:

- :func:`transformation`: declare a factory of transformations (repr, equality, pickling,
  missing update leaves, step counters that agree within a call).
- Flat leaves of a tree: :func:`leaves`, :func:`flatten`, :func:`unflatten` (with a fast path
  for the plain list or tuple of tensors a classic optimizer passes on every step).
- Step counters (a 0-d int64 CPU tensor per parameter, field ``count``): :func:`count_init`,
  :func:`count_inc`, :func:`step_value`, :func:`same_step`.
- :func:`param_shaped`: declare which fields of a state type are shaped like the parameters
  (updates are then checked against them before anything is written).
- :func:`on_graph`: whether a step on some tensors would be recorded by autograd.
- A fused apply: declare it with ``GradientTransformation(...).declare(apply_scaled=...)``
  (see :class:`difopt.base.Properties`).
- :func:`fast_path`: a transformation that runs a fast implementation where it applies and
  the pure one elsewhere, with one warning that says why.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from difopt import _leafwise as lw
from difopt import _step_counters as counters
from difopt import registry as _registry
from difopt._factory import transformation
from difopt._shapes import param_shaped
from difopt.base import FusedApply, GradientTransformation, Properties
from difopt.registry import warn_once

__all__ = [
    "PLUGIN_API_VERSION",
    "FusedApply",
    "Properties",
    "count_inc",
    "count_init",
    "fast_path",
    "flatten",
    "leaves",
    "on_graph",
    "param_shaped",
    "same_step",
    "step_value",
    "transformation",
    "unflatten",
]

#: The version of this API: the same as ``difopt.registry.PLUGIN_API_VERSION``.
PLUGIN_API_VERSION = _registry.PLUGIN_API_VERSION
leaves = lw.leaves
flatten = lw.flatten
unflatten = lw.unflatten
count_init = counters.count_init
count_inc = counters.count_inc


def step_value(count: Any) -> int | torch.Tensor:
    """The step value of ``count``, whose counters agree (inside a
    :func:`transformation`'s ``update`` they do): a Python int where it can be read, else the
    counter tensor itself (traced by ``torch.compile``, batched by ``vmap``), for arithmetic
    that stays a tensor.

    Examples:
        >>> import torch, difopt
        >>> difopt.plugin.step_value(difopt.plugin.count_init([torch.ones(2), torch.ones(3)]))
        0
    """
    return counters.step_value(count)


def on_graph(*lists: Sequence[torch.Tensor]) -> bool:
    """Whether an operation on these tensors is recorded: grad mode is on and one of them
    requires grad, or a ``torch.func`` transform is active. An in-place fast path must then
    give way to a differentiable one.

    Examples:
        >>> import torch, difopt
        >>> difopt.plugin.on_graph([torch.ones(2)], [torch.ones(2, requires_grad=True)])
        True
        >>> with torch.no_grad():
        ...     difopt.plugin.on_graph([torch.ones(2, requires_grad=True)])
        False
    """
    return lw.on_graph([x for xs in lists for x in xs])


def same_step(counts: Sequence[torch.Tensor]) -> bool:
    """Whether the step counters ``counts`` hold one value, so one call steps them all.

    Under ``torch.compile``, where reading them would break the graph, returns True and adds a
    run-time check to the compiled step that fails with a clear error when they differ.

    Examples:
        >>> import torch, difopt
        >>> difopt.plugin.same_step([torch.tensor(3), torch.tensor(3)])
        True
        >>> difopt.plugin.same_step([torch.tensor(3), torch.tensor(2)])
        False
    """
    if torch.compiler.is_compiling():
        counters.assert_counters_agree(list(counts))
        return True
    return len({int(c) for c in counts}) <= 1


def fast_path(
    pure: GradientTransformation,
    fast_update: Callable[..., tuple[Any, Any]],
    why_not: Callable[[Any, Any, Any], str | None],
    *,
    name: str,
    apply_scaled: FusedApply | None = None,
) -> GradientTransformation:
    """``pure``, computed by ``fast_update`` wherever ``why_not`` finds nothing against it.

    Args:
        pure: the definition: its ``init`` is used, and its ``update`` wherever the fast path
            does not apply.
        fast_update: ``update(updates, state, *, params, inplace)`` with ``pure``'s state and
            values.
        why_not: ``why_not(updates, state, params) -> None`` when ``fast_update`` applies,
            else the reason (a short phrase). Each reason is warned about once, naming
            ``name``; the reason ``"empty"`` (nothing to compute) is not warned about.
        name: what the fast path is, for the warning (e.g. ``"difopt-accel: the fused Adam
            op"``).
        apply_scaled: the fast path's fused apply, declared on the result (it returns None
            where it does not apply, and the optimizer then calls ``update``).

    Returns:
        A transformation with ``pure``'s state, declaring ``apply_scaled``.
    """

    def update(
        updates: Any, state: Any, *, params: Any = None, inplace: bool = True
    ) -> tuple[Any, Any]:
        reason = why_not(updates, state, params)
        if reason is None:
            return fast_update(updates, state, params=params, inplace=inplace)
        if reason != "empty":
            warn_once(
                f"{name}: {reason}",
                f"{name} is not used ({reason}); using the pure PyTorch implementation, "
                "which computes the same values up to rounding.",
            )
        return pure.update(updates, state, params=params, inplace=inplace)

    return GradientTransformation(pure.init, update).declare(apply_scaled=apply_scaled)
