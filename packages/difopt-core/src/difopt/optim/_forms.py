"""Generate the classic and meta classes of an optimizer from its alias function.

An alias (``difopt.adam``) is the single source of an optimizer; the classes take its
parameters (after ``params``/``module``), its defaults (with the overrides recorded by
:func:`difopt.alias.forms`) and its documentation, so the three forms cannot drift.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from difopt.base import GradientTransformation
from difopt.optim.base import Optimizer
from difopt.optim.meta.base import MetaOptimizer

Alias = Callable[..., GradientTransformation]

_CLASSIC_FIXED = {"moment_requires_grad": False}  # in-place state never needs a graph


def _forms(fn: Alias) -> dict[str, Any]:
    return getattr(fn, "__difopt_forms__", None) or {
        "classic_name": None,
        "meta_name": None,
        "classic_defaults": {},
        "meta_defaults": {},
        "spellings": (),
    }


def classic_forms(aliases: tuple[Alias, ...]) -> dict[str, type]:
    """The classic classes of ``aliases`` by name, TorchOpt's other spellings included."""
    out: dict[str, type] = {}
    for fn in aliases:
        cls = classic_class(fn)
        for name in (cls.__name__, *_forms(fn)["spellings"]):
            out[name] = cls
    return out


def meta_forms(aliases: tuple[Alias, ...]) -> dict[str, type]:
    """The meta classes of ``aliases`` by name, TorchOpt's other spellings included."""
    out: dict[str, type] = {}
    for fn in aliases:
        cls = meta_class(fn)
        for name in (cls.__name__, *("Meta" + s for s in _forms(fn)["spellings"])):
            out[name] = cls
    return out


def default_name(fn: Alias) -> str:
    name = fn.__name__
    return name[:1].upper() + name[1:]


def _signature(
    fn: Alias, first: str, defaults: dict[str, Any], drop: set[str]
) -> inspect.Signature:
    params = [inspect.Parameter(first, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for p in inspect.signature(fn).parameters.values():
        if p.name in drop:
            continue
        if p.name in defaults:
            p = p.replace(default=defaults[p.name])
        params.append(p)
    return inspect.Signature(params)


def _build(
    fn: Alias,
    base: type,
    first: str,
    name: str,
    overrides: dict[str, Any],
    fixed: dict[str, Any],
    doc_head: str,
) -> type:
    alias_params = inspect.signature(fn).parameters
    fixed = {k: v for k, v in fixed.items() if k in alias_params}
    overrides = {k: v for k, v in overrides.items() if k in alias_params}
    sig = _signature(fn, first, overrides, set(fixed))

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        target = bound.arguments.pop(first)
        hyper = dict(bound.arguments)
        impl = fn(**hyper, **fixed)  # validates the hyper-parameters before any state exists
        self.defaults = hyper
        base.__init__(self, target, impl)  # type: ignore[misc]

    __init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            *sig.parameters.values(),
        ]
    )
    doc = f"{doc_head}\n\n{inspect.cleandoc(fn.__doc__ or '')}"
    if fn.__module__ == "difopt.alias":  # built-ins live where TorchOpt had them
        module = "difopt.optim" if base is Optimizer else "difopt.optim.meta"
    else:
        module = fn.__module__
    namespace = {
        "__init__": __init__,
        "__doc__": doc,
        "__module__": module,
        "alias": staticmethod(fn),
    }
    return type(name, (base,), namespace)


@functools.lru_cache(maxsize=None)
def classic_class(fn: Alias) -> type:
    """The torch.optim-style class of alias ``fn`` (cached: one class per alias)."""
    f = _forms(fn)
    name = f["classic_name"] or default_name(fn)
    head = (
        f"The torch.optim-style form of :func:`{fn.__module__}.{fn.__name__}`: "
        f"``{name}(params, ...)`` with ``step(closure)``, ``zero_grad``, ``state_dict``."
    )
    return _build(fn, Optimizer, "params", name, f["classic_defaults"], _CLASSIC_FIXED, head)


@functools.lru_cache(maxsize=None)
def meta_class(fn: Alias) -> type:
    """The differentiable class of alias ``fn`` (cached: one class per alias)."""
    f = _forms(fn)
    name = f["meta_name"] or "Meta" + default_name(fn)
    overrides = dict(f["meta_defaults"])
    if not getattr(fn, "__difopt_forms__", None):
        overrides.setdefault("moment_requires_grad", True)
    head = (
        f"The differentiable form of :func:`{fn.__module__}.{fn.__name__}`: "
        f"``{name}(module, ...)`` whose ``step(loss)`` keeps the update on the autograd graph."
    )
    return _build(fn, MetaOptimizer, "module", name, overrides, {}, head)
