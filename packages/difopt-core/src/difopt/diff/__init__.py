"""Differentiation modes beyond unrolling: implicit and zero-order, provided by plugins.

Explicit (unrolled) differentiation needs nothing here: it is the Meta optimizers and
:mod:`difopt.utils`.
"""

from difopt.diff import implicit, zero_order

__all__ = ["implicit", "zero_order"]
