"""Modules for meta-learning; the implicit and zero-order ones come from plugins."""

from typing import Any

from difopt.nn.module import MetaGradientModule
from difopt.nn.stateless import reparameterize, reparametrize, swap_state

__all__ = [
    "ImplicitMetaGradientModule",
    "MetaGradientModule",
    "ZeroOrderGradientModule",
    "reparameterize",
    "reparametrize",
    "swap_state",
]

_FROM_PLUGINS = {
    "ImplicitMetaGradientModule": ("implicit", "difopt-implicit"),
    "ZeroOrderGradientModule": ("zero_order", "difopt-zeroorder"),
}


def __getattr__(name: str) -> Any:
    if name in _FROM_PLUGINS:
        from difopt import registry as plugins

        mode, package = _FROM_PLUGINS[name]
        provider = plugins.require("difopt.diff", mode, package, f"difopt.nn.{name}")
        return getattr(provider, name)
    raise AttributeError(f"module 'difopt.nn' has no attribute {name!r}")
