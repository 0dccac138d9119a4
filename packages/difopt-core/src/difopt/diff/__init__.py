"""Differentiation modes provided by plugins: implicit, zero-order, and long unrolls in
bounded memory.

Plain explicit (unrolled) differentiation needs nothing here: it is the Meta optimizers and
:mod:`difopt.utils`; :mod:`difopt.diff.unroll` runs long unrolls with checkpoints.
"""

from typing import Any

from difopt.diff import implicit, unroll, zero_order

__all__ = ["implicit", "unroll", "zero_order"]


def __getattr__(name: str) -> Any:
    # TorchOpt also exports the two module classes here.
    if name == "ImplicitMetaGradientModule":
        return implicit.ImplicitMetaGradientModule
    if name == "ZeroOrderGradientModule":
        return zero_order.ZeroOrderGradientModule
    raise AttributeError(f"module 'difopt.diff' has no attribute {name!r}")
