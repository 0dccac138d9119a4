"""The contract every optimizer is built on: ``GradientTransformation(init, update)``.

A gradient transformation is a pair of pure functions. ``init(params)`` builds the optimizer
state for a pytree of parameters; ``update(updates, state, *, params=None, inplace=True)``
turns a pytree of gradients into a pytree of updates and returns the new state. With
``inplace=False`` neither the inputs nor the state are mutated, so the whole update stays on
the autograd graph and can be differentiated through (meta-gradients).

State conventions:

- A transformation that counts steps keeps a field ``count``: one 0-d int64 CPU tensor per
  parameter (a tree shaped like the parameters), as torch.optim and TorchOpt count per
  parameter.
- An update leaf may be ``None`` (a parameter without a gradient this step): the output leaf
  is then ``None`` and that parameter's state, counter included, is left as it was.

A transformation may also declare :class:`Properties` (what it is, so that optimizers need
not guess): a constant factor, the learning rate it is the step of, a fused apply. This
module imports nothing of difopt: everything else builds on it.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol

__all__ = [
    "ChainedGradientTransformation",
    "EmptyState",
    "FusedApply",
    "FusedApplyTransformation",
    "GradientTransformation",
    "Properties",
    "UninitializedState",
    "identity",
]


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


class FusedApply(Protocol):
    """``apply_scaled(updates, state, *, params, factor, inplace) -> (new_params, new_state)``.

    Computes ``params + factor * update(updates, state, params=params, inplace=inplace)[0]``
    and the state ``update`` would return, in one pass (with ``inplace``, writing into
    ``params`` and the state); or returns ``None``, changing nothing, when it cannot for these
    arguments (the caller then runs ``update``). An optimization only: ``update`` stays the
    definition, and tests compare the two.
    """

    def __call__(
        self, updates: Any, state: Any, *, params: Any, factor: float, inplace: bool
    ) -> tuple[Any, Any] | None: ...


class Properties(NamedTuple):
    """What a transformation declares about itself; every field is optional.

    Attributes:
        scale: a constant: ``update`` multiplies the updates by it and keeps no state.
        learning_rate: the ``lr`` argument of an optimizer this transformation is the step
            of: it multiplies the updates by ``-learning_rate`` and is the only part of the
            optimizer that reads ``lr``. A classic optimizer then applies a scheduler's
            ``lr`` edit by changing one factor, without rebuilding the chain.
        apply_scaled: a :class:`FusedApply`: the transformation can add ``factor`` times its
            update to the parameters in one pass. Optimizers call it for the adaptive part
            that precedes the final constant scale.
        accepts_missing: ``update`` accepts ``None`` update leaves (see the module doc).
            Transformations from :func:`difopt.plugin.transformation` do; a chain hides the
            missing leaves from parts that do not.
    """

    scale: float | None = None
    learning_rate: Any = None
    apply_scaled: FusedApply | None = None
    accepts_missing: bool = False


_NO_PROPERTIES = Properties()


class GradientTransformation(NamedTuple):
    """A pair ``(init, update)`` of pure functions; see the module docstring.

    :attr:`properties` (not a tuple field: a transformation unpacks as ``init, update``)
    holds what it declares; see :meth:`declare`.
    """

    init: TransformInitFn
    update: TransformUpdateFn

    @property
    def properties(self) -> Properties:
        """What this transformation declares (:class:`Properties`); nothing for a plain pair.

        Subclasses store it as ``_declared`` (the plain pair, a NamedTuple, has no room).
        """
        return getattr(self, "_declared", _NO_PROPERTIES)

    def chain(self, next: GradientTransformation) -> ChainedGradientTransformation:  # noqa: A002
        """Return ``chain(self, next)`` (TorchOpt's spelling of :func:`difopt.chain`)."""
        return ChainedGradientTransformation(self, next)

    def declare(self, **properties: Any) -> GradientTransformation:
        """This transformation, declaring ``properties`` (fields of :class:`Properties`).

        Examples:
            >>> import torch, difopt
            >>> def update(updates, state, *, params=None, inplace=True):
            ...     return [2.0 * u for u in updates], state
            >>> t = difopt.GradientTransformation(lambda p: (), update).declare(scale=2.0)
            >>> t.properties.scale
            2.0
        """
        return DeclaredTransformation(self.init, self.update, self.properties, **properties)


class DeclaredTransformation(GradientTransformation):
    """A transformation with declared :class:`Properties` (built by
    :meth:`GradientTransformation.declare`)."""

    _declared: Properties

    def __new__(
        cls,
        init: TransformInitFn,
        update: TransformUpdateFn,
        base: Properties = _NO_PROPERTIES,
        **properties: Any,
    ) -> DeclaredTransformation:
        obj = super().__new__(cls, init, update)
        obj._declared = base._replace(**properties)
        return obj


class FusedApplyTransformation(DeclaredTransformation):
    """A transformation that declares a fused apply (:attr:`Properties.apply_scaled`).

    The same as ``GradientTransformation(init, update).declare(apply_scaled=apply_scaled)``;
    ``apply_scaled`` is also an attribute.
    """

    def __new__(
        cls, init: TransformInitFn, update: TransformUpdateFn, apply_scaled: FusedApply
    ) -> FusedApplyTransformation:
        return super().__new__(cls, init, update, apply_scaled=apply_scaled)  # type: ignore[return-value]

    @property
    def apply_scaled(self) -> FusedApply:
        fused = self.properties.apply_scaled
        assert fused is not None
        return fused


class ChainedGradientTransformation(GradientTransformation):
    """A flat sequence of transformations applied one after the other.

    Built by :func:`difopt.chain` (which also hides missing update leaves from parts that do
    not accept them). Nested chains are flattened, so ``chain(a, chain(b, c))`` equals
    ``chain(a, b, c)``, and identities are dropped. The state is the tuple of the parts'
    states. Chains compare equal when their parts do, print as the list of their parts, and
    pickle when their parts do.
    """

    transformations: tuple[GradientTransformation, ...]
    _declared: Properties

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
        # A part that declares the scale 1 leaves the updates and its (empty) state as they
        # are: ``identity()`` behind a factory (``flip_sign_and_add_weight_decay()``).
        updates_of = tuple(None if t.properties.scale == 1.0 else t.update for t in parts)

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
                if part_update is not None:
                    updates, s = part_update(updates, s, params=params, inplace=inplace)
                new_state.append(s)
            if all(new is old for new, old in zip(new_state, state)):
                return updates, state  # no part changed its state (e.g. nothing took a step)
            return updates, tuple(new_state)

        obj = super().__new__(cls, init, update)
        obj.transformations = parts
        obj._declared = Properties(accepts_missing=all(t.properties.accepts_missing for t in parts))
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
    _declared = Properties(scale=1.0, accepts_missing=True)

    def __new__(cls) -> IdentityGradientTransformation:
        return super().__new__(cls, _empty_init, _identity_update)

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


def _empty_init(params: Any) -> EmptyState:
    """The ``init`` of a transformation that keeps no state."""
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
