"""``@transformation``: factories whose transformations repr, compare, pickle and take
missing update leaves.

Public as :func:`difopt.plugin.transformation` (and :func:`difopt.transform.transformation`);
every transformation of difopt is declared with it.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, TypeVar

from difopt._missing_leaves import by_step, none_aware
from difopt.base import GradientTransformation, Properties

__all__ = ["RecordedTransformation", "transformation"]

_F = TypeVar("_F", bound=Callable[..., GradientTransformation])


class RecordedTransformation(GradientTransformation):
    """A transformation that remembers the factory call that built it.

    That record gives every transformation a readable ``repr`` (the call), value equality
    (same factory, same arguments) and pickling (by re-running the call), which closures
    alone cannot have. ``factory`` and ``arguments`` are the call.
    """

    _declared: Properties
    factory: Callable[..., GradientTransformation]
    # The call as made: bound to the factory's signature (defaults applied) on first use of
    # ``arguments``, not at every construction (a meta optimizer is often built per task).
    _call: tuple[inspect.Signature, tuple[Any, ...], dict[str, Any]]

    @property
    def arguments(self) -> tuple[tuple[str, Any], ...]:
        """The factory's arguments, by name, defaults included."""
        bound = self.__dict__.get("_arguments")
        if bound is None:
            signature, args, kwargs = self._call
            call = signature.bind(*args, **kwargs)
            call.apply_defaults()
            bound = self.__dict__["_arguments"] = tuple(call.arguments.items())
        return bound

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.arguments)
        return f"{self.factory.__name__}({args})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RecordedTransformation):
            return (self.factory, self.arguments) == (other.factory, other.arguments)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.factory)

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return _call_with_kwargs, (self.factory, dict(self.arguments))


def _call_with_kwargs(factory: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    return factory(**kwargs)


def transformation(factory: _F) -> _F:
    """Decorate a factory of ``GradientTransformation`` so its results repr, compare, pickle
    and accept missing update leaves.

    The factory's arguments must be passable by keyword. What the built transformation
    declares (:meth:`~difopt.base.GradientTransformation.declare`) is kept. Its ``update``
    is written for complete updates whose step counters agree: the wrapper hides ``None``
    leaves (and their state) from it, and splits a call whose parameters are at different
    steps into one call per step value.

    Examples:
        >>> import torch, difopt
        >>> @difopt.plugin.transformation
        ... def scale_by_two() -> difopt.GradientTransformation:
        ...     def update(updates, state, *, params=None, inplace=True):
        ...         return difopt.pytree.tree_map(lambda u: 2.0 * u, updates), state
        ...     return difopt.GradientTransformation(lambda params: (), update)
        >>> scale_by_two()
        scale_by_two()
        >>> scale_by_two().update([torch.ones(2), None], ())[0]
        [tensor([2., 2.]), None]
    """
    signature = inspect.signature(factory)

    @functools.wraps(factory)
    def wrapper(*args: Any, **kwargs: Any) -> GradientTransformation:
        inner = factory(*args, **kwargs)  # a wrong argument raises the factory's TypeError
        out = RecordedTransformation(inner.init, none_aware(by_step(inner.update)))
        out._declared = inner.properties._replace(accepts_missing=True)
        out.factory = wrapper
        out._call = (signature, args, kwargs)
        return out

    return wrapper  # type: ignore[return-value]
