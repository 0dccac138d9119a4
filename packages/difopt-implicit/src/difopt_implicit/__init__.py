"""difopt-implicit: implicit differentiation for difopt.

``custom_root`` differentiates the solution of ``F(x, theta) = 0`` with respect to ``theta``
through the implicit function theorem, without back-propagating through the solver;
``ImplicitMetaGradientModule`` does the same for an ``nn.Module`` whose ``solve`` fits its
parameters. The linear systems of the backward pass are solved by :mod:`.linear_solve`
(built on :mod:`.linalg`). Registered with difopt-core as the ``difopt.diff:implicit`` entry
point, so ``difopt.diff.implicit``, ``difopt.linear_solve``, ``difopt.linalg`` and
``difopt.nn.ImplicitMetaGradientModule`` resolve here.
"""

from difopt_implicit import linalg, linear_solve, nn
from difopt_implicit._root import custom_root
from difopt_implicit.linalg import ConvergenceWarning
from difopt_implicit.nn import ImplicitMetaGradientModule

__version__ = "0.1.0"

# The difopt plugin API this package implements (difopt.registry.PLUGIN_API_VERSION).
DIFOPT_PLUGIN_API = "1.0"

__all__ = [
    "DIFOPT_PLUGIN_API",
    "ConvergenceWarning",
    "ImplicitMetaGradientModule",
    "__version__",
    "custom_root",
    "linalg",
    "linear_solve",
    "nn",
]
