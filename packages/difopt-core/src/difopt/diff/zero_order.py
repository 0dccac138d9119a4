"""Zero-order differentiation (``zero_order``, ``ZeroOrderGradientModule``).

Provided by the ``difopt-zeroorder`` plugin (entry point ``difopt.diff:zero_order``). The
module itself is callable, as in TorchOpt: ``@difopt.diff.zero_order(distribution, method)``.
"""

from typing import TYPE_CHECKING, Any

from difopt._lazy import install

if TYPE_CHECKING:
    # For type checkers: the attributes are the plugin's, looked up at run time.
    def __getattr__(name: str) -> Any: ...


__all__ = ["ZeroOrderGradientModule", "zero_order"]

install(__name__, "difopt.diff", "zero_order", "difopt-zeroorder", call="zero_order")
