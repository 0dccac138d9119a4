"""The contract every optimizer is built on: ``GradientTransformation(init, update)``.

A gradient transformation is a pair of pure functions. ``init(params)`` builds the optimizer
state for a pytree of parameters; ``update(updates, state, *, params=None, inplace=True)``
turns a pytree of gradients into a pytree of updates and returns the new state. With
``inplace=False`` neither the inputs nor the state are mutated, so the whole update stays on
the autograd graph and can be differentiated through (meta-gradients).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, NamedTuple, Protocol, TypeVar

from difopt._missing import by_step, complete_update, none_aware

__all__ = [
    "ChainedGradientTransformation",
    "EmptyState",
    "FusedApplyTransformation",
    "GradientTransformation",
    "UninitializedState",
    "identity",
    "transformation",
]

_F = TypeVar("_F", bound=Callable[..., "GradientTransformation"])


class EmptyState(NamedTuple):
    """The state of a transformation that keeps none."""


class UninitializedState(NamedTuple):
    """State placeholder for a transformation that has not been initialised yet."""


class TransformInitFn(Protocol):
    def __call__(self, params: Any) -> Any: ...


class TransformUpdateFn(Protocol):
    def __call__(
        self, updates: Any, state: Any, *, params: Any = None, inplace: bool = True
    ) -> tuple[Any, Any]: ...


class GradientTransformation(NamedTuple):
    """A pair ``(init, update)`` of pure functions; see the module docstring."""

    init: TransformInitFn
    update: TransformUpdateFn

    def chain(self, next: GradientTransformation) -> ChainedGradientTransformation:  # noqa: A002
        """Return ``chain(self, next)``."""
        from difopt.combine import chain

        return chain(self, next)


class ChainedGradientTransformation(GradientTransformation):
    """A flat sequence of transformations applied one after the other.

    Built by :func:`difopt.chain`. Nested chains are flattened, so ``chain(a, chain(b, c))``
    equals ``chain(a, b, c)``. Chains compare equal when their parts do, print as the list of
    their parts, and pickle when their parts do.
    """

    transformations: tuple[GradientTransformation, ...]

    def __new__(cls, *transformations: GradientTransformation) -> ChainedGradientTransformation:
        flat: list[GradientTransformation] = []
        for i, t in enumerate(transformations):
            if isinstance(t, ChainedGradientTransformation):
                flat.extend(t.transformations)
            elif isinstance(t, GradientTransformation):
                if not isinstance(t, IdentityGradientTransformation):
                    flat.append(t)
            else:
                raise TypeError(
                    f"chain() argument {i} must be a GradientTransformation, got {type(t).__name__}"
                )
        parts = tuple(flat)
        # The chain's own wrapper hides missing update leaves for every part's state, so it
        # calls the parts' unwrapped updates: one check per step, not one per part.
        updates_of = tuple(complete_update(t.update) for t in parts)

        def init(params: Any) -> tuple[Any, ...]:
            return tuple(t.init(params) for t in parts)

        def update(
            updates: Any, state: Any, *, params: Any = None, inplace: bool = True
        ) -> tuple[Any, Any]:
            if len(state) != len(parts):
                raise ValueError(
                    f"'state' has {len(state)} entries but the chain has {len(parts)} "
                    "transformations; was it built by this chain's init()?"
                )
            new_state = []
            for part_update, s in zip(updates_of, state):
                updates, s = part_update(updates, s, params=params, inplace=inplace)
                new_state.append(s)
            return updates, tuple(new_state)

        obj = super().__new__(cls, init, none_aware(update))
        obj.transformations = parts
        return obj

    def __repr__(self) -> str:
        inner = ",\n".join("    " + repr(t).replace("\n", "\n    ") for t in self.transformations)
        return f"{type(self).__name__}(\n{inner}\n)" if inner else f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ChainedGradientTransformation):
            return self.transformations == other.transformations
        if isinstance(other, IdentityGradientTransformation):
            return not self.transformations  # an empty chain is the identity, as in TorchOpt
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.transformations)

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return ChainedGradientTransformation, self.transformations

    def __getnewargs__(self) -> tuple[Any, ...]:
        return self.transformations


class IdentityGradientTransformation(GradientTransformation):
    def __new__(cls) -> IdentityGradientTransformation:
        return super().__new__(cls, _identity_init, _identity_update)

    def __repr__(self) -> str:
        return "identity()"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, IdentityGradientTransformation):
            return True
        if isinstance(other, ChainedGradientTransformation):
            return not other.transformations
        return NotImplemented

    def __hash__(self) -> int:
        return hash(())  # equal to the empty chain's

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return identity, ()


def _identity_init(params: Any) -> EmptyState:
    return EmptyState()


def _identity_update(
    updates: Any, state: Any, *, params: Any = None, inplace: bool = True
) -> tuple[Any, Any]:
    return updates, state


def identity() -> GradientTransformation:
    """Return the transformation that leaves updates unchanged and keeps no state.

    Examples:
        >>> import torch, difopt
        >>> t = difopt.base.identity()
        >>> g = {"w": torch.ones(2)}
        >>> t.update(g, t.init(g))[0]["w"]
        tensor([1., 1.])
    """
    return IdentityGradientTransformation()


class FusedApplyTransformation(GradientTransformation):
    """A transformation that can also apply its own update to parameters in one pass.

    ``apply_scaled(updates, state, *, params, factor, inplace) -> (new_params, new_state)``
    computes ``params + factor * update(updates, state, params=params, inplace=inplace)[0]``
    and the state ``update`` would return (with ``inplace``, writing into ``params`` and the
    state), or returns ``None`` (changing nothing) when it cannot for these arguments. The
    classic and meta optimizers use it for a chain's last adaptive transformation followed by
    a constant learning-rate scale (see :mod:`difopt.optim._plan`). It is an optimization
    only: ``update`` remains the definition, and tests compare the two. On a transformation
    built by a :func:`transformation`-decorated factory the function is kept as the
    attribute ``_difopt_apply`` (None when the factory offers none), which is what the
    optimizers and op providers call.
    """

    def __new__(
        cls, init: TransformInitFn, update: TransformUpdateFn, apply_scaled: Callable[..., Any]
    ) -> FusedApplyTransformation:
        obj = super().__new__(cls, init, update)
        obj.apply_scaled = apply_scaled  # type: ignore[attr-defined]
        return obj


class _RecordedTransformation(GradientTransformation):
    """A transformation that remembers the factory call that built it.

    That record gives every transformation a readable ``repr`` (the call), value equality
    (same factory, same arguments) and pickling (by re-running the call), which closures
    alone cannot have.
    """

    _difopt_call: tuple[Callable[..., Any], tuple[tuple[str, Any], ...]]
    _difopt_apply: Callable[..., Any] | None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._difopt_call[1])
        return f"{self._difopt_call[0].__name__}({args})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _RecordedTransformation):
            return self._difopt_call == other._difopt_call
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._difopt_call[0])

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        factory, arguments = self._difopt_call
        return _call_with_kwargs, (factory, dict(arguments))


def _call_with_kwargs(factory: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    return factory(**kwargs)


def transformation(factory: _F) -> _F:
    """Decorate a factory of ``GradientTransformation`` so its results repr, compare and pickle.

    The factory's arguments must be passable by keyword. This is how every transformation in
    difopt is declared; third-party transforms may use it too.
    """
    signature = inspect.signature(factory)

    @functools.wraps(factory)
    def wrapper(*args: Any, **kwargs: Any) -> GradientTransformation:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        inner = factory(*bound.args, **bound.kwargs)
        out = _RecordedTransformation(inner.init, none_aware(by_step(inner.update)))
        out._difopt_call = (wrapper, tuple(bound.arguments.items()))
        out._difopt_apply = getattr(inner, "apply_scaled", None)
        return out

    return wrapper  # type: ignore[return-value]
