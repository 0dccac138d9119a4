"""difopt-implicit: implicit differentiation for difopt.

``custom_root`` differentiates the solution of ``F(x, theta) = 0`` with respect to ``theta``
through the implicit function theorem, without back-propagating through the solver;
``ImplicitMetaGradientModule`` does the same for an ``nn.Module`` whose ``solve`` fits its
parameters. ``fixed_point`` and ``root`` also solve the problem (Picard, Anderson, Broyden,
Newton-Krylov; batched, per-sample convergence) with an implicit, phantom, Jacobian-free or
unrolled backward, and ``DEQ`` wraps a module ``f`` into a deep-equilibrium layer. The linear systems of the backward pass are solved by :mod:`.linear_solve`
(built on :mod:`.linalg`). Registered with difopt-core as the ``difopt.diff:implicit`` entry
point, so ``difopt.diff.implicit``, ``difopt.linear_solve``, ``difopt.linalg`` and
``difopt.nn.ImplicitMetaGradientModule`` resolve here.
"""

from difopt_implicit import linalg, linear_solve, nn
from difopt_implicit._deq import DEQ
from difopt_implicit._fixed_point import (
    JFB,
    Anderson,
    Broyden,
    FixedPointInfo,
    Implicit,
    Newton,
    NotConvergedError,
    Phantom,
    Picard,
    Unrolled,
    fixed_point,
    root,
)
from difopt_implicit._root import custom_root
from difopt_implicit.linalg import ConvergenceWarning
from difopt_implicit.nn import ImplicitMetaGradientModule

__version__ = "0.1.0"

#: The difopt plugin API this package implements (``difopt.registry.PLUGIN_API_VERSION``).
DIFOPT_PLUGIN_API = "1.0"

__all__ = [
    "DEQ",
    "DIFOPT_PLUGIN_API",
    "JFB",
    "Anderson",
    "Broyden",
    "ConvergenceWarning",
    "FixedPointInfo",
    "Implicit",
    "ImplicitMetaGradientModule",
    "Newton",
    "NotConvergedError",
    "Phantom",
    "Picard",
    "Unrolled",
    "__version__",
    "custom_root",
    "fixed_point",
    "linalg",
    "linear_solve",
    "nn",
    "root",
]
