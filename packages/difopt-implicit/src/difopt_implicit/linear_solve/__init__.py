"""Linear solvers for implicit differentiation: ``solve_*(**options) -> solver(matvec, b)``.

TorchOpt 0.7.3's ``torchopt.linear_solve`` names (``solve_cg``, ``solve_normal_cg``,
``solve_inv``) keep their keywords and defaults; ``solve_gmres`` and ``solve_bicgstab`` solve
the non-symmetric systems of fixed-point conditions.
"""

from difopt_implicit.linear_solve._solvers import (
    LinearSolver,
    solve_bicgstab,
    solve_cg,
    solve_gmres,
    solve_inv,
    solve_normal_cg,
)

__all__ = [
    "LinearSolver",
    "solve_bicgstab",
    "solve_cg",
    "solve_gmres",
    "solve_inv",
    "solve_normal_cg",
]
