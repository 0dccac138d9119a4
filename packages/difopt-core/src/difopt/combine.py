"""Composition of gradient transformations."""

from __future__ import annotations

from typing import Any, Callable

from difopt._missing_leaves import none_aware
from difopt.base import ChainedGradientTransformation, GradientTransformation, Properties

__all__ = ["chain", "chain_flat"]


def chain(*transformations: GradientTransformation) -> ChainedGradientTransformation:
    """Apply ``transformations`` one after the other.

    Nested chains are flattened and :func:`identity` parts dropped. The state is the tuple of
    the parts' states. A part that does not declare it accepts missing (``None``) update
    leaves, such as a plain ``GradientTransformation(init, update)``, gets them hidden, with
    its state for them.

    Examples:
        >>> import difopt
        >>> difopt.chain(difopt.clip_grad_norm(1.0), difopt.chain(difopt.transform.scale(-0.1)))
        ChainedGradientTransformation(
            clip_grad_norm(max_norm=1.0, norm_type=2.0, error_if_nonfinite=False, detach_factor=False),
            scale(step_size=-0.1)
        )
    """
    return ChainedGradientTransformation(*(_accepting_missing(t) for t in transformations))


def _accepting_missing(t: Any) -> Any:
    if not isinstance(t, GradientTransformation) or t.properties.accepts_missing:
        return t  # a chain's own parts were made to accept them when it was built
    return _HidingMissing(t)


class _HidingMissing(GradientTransformation):
    """``part``, with missing update leaves hidden from its ``update``; equal to ``part``,
    printed and pickled as it."""

    part: GradientTransformation
    _declared: Properties

    def __new__(cls, part: GradientTransformation) -> _HidingMissing:
        obj = super().__new__(cls, part.init, none_aware(part.update))
        obj.part = part
        obj._declared = part.properties._replace(accepts_missing=True)
        return obj

    def __repr__(self) -> str:
        return repr(self.part)

    def __eq__(self, other: object) -> bool:
        return self.part == (other.part if isinstance(other, _HidingMissing) else other)

    def __hash__(self) -> int:
        return hash(self.part)

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return _HidingMissing, (self.part,)


chain_flat = chain
"""TorchOpt's name for a chain over flattened leaves; every difopt chain already is one."""

chain.flat = chain_flat  # type: ignore[attr-defined]  # TorchOpt's spelling: chain.flat(...)
