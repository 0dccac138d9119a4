"""Linear algebra on pytrees: iterative solvers and Neumann series.

Operators are functions ``x -> A x`` on pytrees shaped like ``b``, or pytrees of square
(batched) matrices. TorchOpt 0.7.3's ``torchopt.linalg`` names (``cg``, ``ns``, ``ns_inv``) keep
their signatures and defaults; ``gmres`` and ``bicgstab`` solve non-symmetric systems.
"""

from difopt_implicit.linalg import utils
from difopt_implicit.linalg._common import ConvergenceWarning
from difopt_implicit.linalg._krylov import bicgstab, cg, gmres
from difopt_implicit.linalg._ns import ns, ns_inv

__all__ = ["ConvergenceWarning", "bicgstab", "cg", "gmres", "ns", "ns_inv", "utils"]
