"""Implicit differentiation (``custom_root``, ``ImplicitMetaGradientModule``).

Provided by the ``difopt-implicit`` plugin (entry point ``difopt.diff:implicit``).
"""

from difopt._lazy import install

__all__ = ["ImplicitMetaGradientModule", "custom_root"]

install(__name__, "difopt.diff", "implicit", "difopt-implicit")
