"""Generate the classic and meta classes of an optimizer from its alias function.

An alias (``difopt.adam``) is the single source of an optimizer; the classes take its
parameters (after ``params``/``module``), its defaults (with the overrides recorded by
:func:`difopt.alias.forms`) and its documentation, so the three forms cannot drift.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import torch

from difopt.base import GradientTransformation
from difopt.optim.base import Optimizer
from difopt.optim.meta.base import MetaOptimizer, per_parameter_lr

Alias = Callable[..., GradientTransformation]

_CLASSIC_FIXED = {"moment_requires_grad": False}  # in-place state never needs a graph


def _forms(fn: Alias) -> dict[str, Any]:
    """What :func:`difopt.alias.forms` recorded for ``fn`` (nothing: an empty dict)."""
    return getattr(fn, "__difopt_forms__", None) or {}


def classic_forms(aliases: tuple[Alias, ...]) -> dict[str, type]:
    """The classic classes of ``aliases`` by name, TorchOpt's other spellings included."""
    out: dict[str, type] = {}
    for fn in aliases:
        cls = classic_class(fn)
        for name in (cls.__name__, *_forms(fn).get("spellings", ())):
            out[name] = cls
    return out


def meta_forms(aliases: tuple[Alias, ...]) -> dict[str, type]:
    """The meta classes of ``aliases`` by name, TorchOpt's other spellings included."""
    out: dict[str, type] = {}
    for fn in aliases:
        cls = meta_class(fn)
        for name in (cls.__name__, *("Meta" + s for s in _forms(fn).get("spellings", ()))):
            out[name] = cls
    return out


def default_name(fn: Alias) -> str:
    name = fn.__name__
    return name[:1].upper() + name[1:]


def _signature(
    fn: Alias,
    first: str,
    defaults: dict[str, Any],
    drop: set[str],
    positional: tuple[str, ...] | None = None,
) -> inspect.Signature:
    """The class's signature: ``first``, then the alias' parameters (without ``drop``), with
    ``defaults`` applied; ``positional``, when given, is the order of the positional ones
    (TorchOpt's classes sometimes order them unlike its functions), the rest keyword-only."""
    params = [inspect.Parameter(first, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    own = {
        p.name: p.replace(default=defaults.get(p.name, p.default))
        for p in inspect.signature(fn).parameters.values()
        if p.name not in drop
    }
    if positional is None:
        return inspect.Signature(params + list(own.values()))
    ordered = [own[n].replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in positional]
    rest = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for n, p in own.items()]
    return inspect.Signature(params + ordered + [p for p in rest if p.name not in positional])


def _python_scalar(value: Any) -> Any:
    """A numpy scalar (``np.float32(1e-3)``, ``np.bool_(True)``), or a tuple of them (betas), as
    the Python number TorchOpt's arithmetic would have used; anything else as it is."""
    if (
        type(value).__module__ == "numpy"
        and hasattr(value, "item")
        and getattr(value, "ndim", 1) == 0
    ):
        return value.item()
    if type(value).__module__ == "numpy" and getattr(value, "ndim", 0) == 1:
        return tuple(value.tolist())  # betas=np.array([0.9, 0.999])
    if isinstance(value, tuple) and any(type(v).__module__ == "numpy" for v in value):
        return tuple(_python_scalar(v) for v in value)
    return value


def _is_lr_tree(lr: Any) -> bool:
    """Whether ``lr`` has the form of per-parameter learning rates (a container, or a tensor
    that is not 0-d), which only the functional and meta forms take."""
    return isinstance(lr, (list, tuple, dict)) or (isinstance(lr, torch.Tensor) and lr.ndim > 0)


def _build(
    fn: Alias,
    base: type,
    first: str,
    name: str,
    overrides: dict[str, Any],
    fixed: dict[str, Any],
    doc_head: str,
    positional: tuple[str, ...] | None = None,
) -> type:
    alias_params = inspect.signature(fn).parameters
    fixed = {k: v for k, v in fixed.items() if k in alias_params}
    overrides = {k: v for k, v in overrides.items() if k in alias_params}
    sig = _signature(fn, first, overrides, set(fixed), positional)

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        target = bound.arguments.pop(first)
        hyper = {k: _python_scalar(v) for k, v in bound.arguments.items()}
        if "lr" in hyper:
            if base is MetaOptimizer:
                hyper["lr"] = per_parameter_lr(target, hyper["lr"])
            elif _is_lr_tree(hyper["lr"]):
                raise ValueError(
                    f"Invalid value for 'lr': a {type(hyper['lr']).__name__} ({name} takes one "
                    "learning rate per parameter group: a finite float >= 0, a 0-d "
                    "floating-point tensor or a schedule; for per-parameter learning rates use "
                    f"parameter groups, or the functional ({fn.__name__}(lr=tree)) and meta "
                    "forms)"
                )
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
    name = f.get("classic_name") or default_name(fn)
    head = (
        f"The torch.optim-style form of :func:`{fn.__module__}.{fn.__name__}`: "
        f"``{name}(params, ...)`` with ``step(closure)``, ``zero_grad``, ``state_dict``."
    )
    return _build(
        fn,
        Optimizer,
        "params",
        name,
        f.get("classic_defaults", {}),
        _CLASSIC_FIXED,
        head,
        f.get("classic_positional"),
    )


@functools.lru_cache(maxsize=None)
def meta_class(fn: Alias) -> type:
    """The differentiable class of alias ``fn`` (cached: one class per alias)."""
    f = _forms(fn)
    name = f.get("meta_name") or "Meta" + default_name(fn)
    overrides = dict(f.get("meta_defaults", {}))
    if not getattr(fn, "__difopt_forms__", None):
        overrides.setdefault("moment_requires_grad", True)
    head = (
        f"The differentiable form of :func:`{fn.__module__}.{fn.__name__}`: "
        f"``{name}(module, ...)`` whose ``step(loss)`` keeps the update on the autograd graph."
    )
    return _build(fn, MetaOptimizer, "module", name, overrides, {}, head, f.get("meta_positional"))
