"""Run a chain ``(*head, adaptive, scale(c))`` and add its updates to the parameters.

Every alias ends with a constant learning-rate scale, and the parameters are then updated by
``params + updates``. Folding that scale into the add (``params + c * updates``) saves a pass
over memory; when the last adaptive transformation declares a fused apply (see
:class:`difopt.base.Properties`) its division and the add fuse too (one
``addcdiv``), as torch.optim's foreach kernels do. In the differentiable mode this also cuts
the autograd graph of a step by a third. ``update`` stays the definition; the tests compare
both paths.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from difopt import _leafwise as lw
from difopt.base import ChainedGradientTransformation, GradientTransformation
from difopt.update import apply_updates


class StepPlan(NamedTuple):
    head: ChainedGradientTransformation
    adaptive: GradientTransformation | None
    factor: float


def make_plan(impl: GradientTransformation) -> StepPlan | None:
    """The plan for ``impl``, or None when it does not end with a constant scale.

    The head chain does not run its parts that declare the scale 1 (``identity()`` behind a
    factory, e.g. ``flip_sign_and_add_weight_decay()`` without decay or ``maximize``).
    """
    if not isinstance(impl, ChainedGradientTransformation) or len(impl.transformations) < 2:
        return None
    *head, last = impl.transformations
    factor = last.properties.scale
    if factor is None:
        return None
    adaptive = head.pop() if head and head[-1].properties.apply_scaled else None
    return StepPlan(ChainedGradientTransformation(*head), adaptive, factor)


def _whole(impl: GradientTransformation | None) -> GradientTransformation:
    # None only where the plan covers the step (Optimizer._refresh after an lr-only edit).
    if impl is None:
        raise RuntimeError("difopt internal error: this step needs the whole transformation")
    return impl


def step(
    impl: GradientTransformation | None,
    plan: StepPlan | None,
    grads: tuple[Any, ...],
    state: Any,
    params: tuple[Any, ...],
    inplace: bool,
) -> tuple[list[Any], Any]:
    """Return ``(new_params, new_state)``; with ``inplace`` the params are updated in place.

    A ``None`` gradient leaves its parameter (the same tensor) and its per-parameter state as
    they are (see :mod:`difopt._missing_leaves`); such a step takes the unfused path.
    """
    if any(g is None for g in grads):
        updates, state = _whole(impl).update(grads, state, params=params, inplace=inplace)
        return list(apply_updates(tuple(params), tuple(updates), inplace=inplace)), state
    if plan is None:
        updates, state = _whole(impl).update(grads, state, params=params, inplace=inplace)
        if inplace:
            return list(lw.add_(list(params), list(updates))), state
        return lw.add(list(params), list(updates)), state
    n = len(plan.head.transformations)
    updates, head_state = plan.head.update(grads, state[:n], params=params, inplace=inplace)
    if plan.adaptive is not None:
        fused = plan.adaptive.properties.apply_scaled(  # type: ignore[misc]
            updates, state[n], params=params, factor=plan.factor, inplace=inplace
        )
        if fused is not None:
            new_params, adaptive_state = fused
            return new_params, (*head_state, adaptive_state, state[-1])
        updates, adaptive_state = plan.adaptive.update(
            updates, state[n], params=params, inplace=inplace
        )
        head_state = (*head_state, adaptive_state)
    if inplace:
        new_params = list(lw.add_(list(params), list(updates), alpha=plan.factor))
    else:
        new_params = lw.add(list(params), list(updates), alpha=plan.factor)
    return new_params, (*head_state, state[-1])
