"""Long unrolls in bounded memory: ``unroll``, ``unroll_module``, checkpoint policies.

Exact, truncated or first-order meta-gradients through K inner steps, with O(sqrt K) or fewer
stored steps. Provided by the ``difopt-unroll`` plugin (entry point ``difopt.diff:unroll``).
"""

from typing import TYPE_CHECKING, Any

from difopt._plugin_modules import install

if TYPE_CHECKING:
    # For type checkers: the attributes are the plugin's, looked up at run time.
    def __getattr__(name: str) -> Any: ...


__all__ = [
    "Binomial",
    "Every",
    "Sqrt",
    "UnrollResult",
    "inner_grad",
    "transformation_step",
    "unroll",
    "unroll_module",
]

install(__name__, "difopt.diff", "unroll", "difopt-unroll")
