"""Resolve optimizer names (any capitalisation) to alias functions through the registry."""

from __future__ import annotations

from typing import Any, Callable

from difopt import registry as plugins

GROUP = "difopt.optimizers"


def alias_by_name(name: str) -> Callable[..., Any] | None:
    """The alias registered under ``name`` (case-insensitive), loading its plugin if needed."""
    wanted = name.lower()
    for entry_name in plugins.names(GROUP):
        if entry_name.lower() == wanted:
            return plugins.load(GROUP, entry_name)
    return None


def resolve(name: str, module: str) -> Any:
    """Module ``__getattr__`` for optimizer names: ``lion``, ``Lion``, ``MetaLion``, ..."""
    from difopt.optim._forms import classic_class, meta_class

    if not name or name.startswith("_"):
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    if name[0].islower():
        fn = alias_by_name(name) if module == "difopt" else None
        if fn is not None:
            return fn
    elif name.startswith("Meta") and len(name) > 4 and module in ("difopt", "difopt.optim.meta"):
        fn = alias_by_name(name[4:])
        if fn is not None:
            return meta_class(fn)
    elif module in ("difopt", "difopt.optim"):
        fn = alias_by_name(name)
        if fn is not None:
            return classic_class(fn)
    raise AttributeError(f"module {module!r} has no attribute {name!r}")
