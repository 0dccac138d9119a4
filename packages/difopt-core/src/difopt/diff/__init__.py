"""Differentiation modes beyond unrolling: implicit and zero-order, provided by plugins.

Explicit (unrolled) differentiation needs nothing here: it is the Meta optimizers and
:mod:`difopt.utils`.
"""

from typing import Any

from difopt.diff import implicit, zero_order

__all__ = ["implicit", "zero_order"]


def __getattr__(name: str) -> Any:
    # TorchOpt also exports the two module classes here.
    if name == "ImplicitMetaGradientModule":
        return implicit.ImplicitMetaGradientModule
    if name == "ZeroOrderGradientModule":
        return zero_order.ZeroOrderGradientModule
    raise AttributeError(f"module 'difopt.diff' has no attribute {name!r}")
