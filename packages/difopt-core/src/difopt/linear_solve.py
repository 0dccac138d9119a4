"""Linear solvers for implicit differentiation, provided by the ``difopt-implicit`` plugin."""

from difopt._lazy import install

__all__ = ["solve_cg", "solve_inv", "solve_normal_cg"]

install(__name__, "difopt.diff", "implicit", "difopt-implicit", path=("linear_solve",))
