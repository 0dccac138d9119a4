"""Linear solvers for implicit differentiation, provided by the ``difopt-implicit`` plugin."""

from typing import TYPE_CHECKING, Any

from difopt._plugin_modules import install

if TYPE_CHECKING:
    # For type checkers: the attributes are the plugin's, looked up at run time.
    def __getattr__(name: str) -> Any: ...


__all__ = ["solve_bicgstab", "solve_cg", "solve_gmres", "solve_inv", "solve_normal_cg"]

install(__name__, "difopt.diff", "implicit", "difopt-implicit", path=("linear_solve",))
