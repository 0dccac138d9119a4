"""TorchOpt's ``torchopt.diff.zero_order.nn.module`` path: ``ZeroOrderGradientModule`` and the
class decorator it applies to its subclasses, ``enable_zero_order_gradients`` (from
``difopt-zeroorder``)."""

from typing import TYPE_CHECKING, Any

from difopt._plugin_modules import install

if TYPE_CHECKING:
    # For type checkers: the attributes are the plugin's, looked up at run time.
    def __getattr__(name: str) -> Any: ...


__all__ = ["ZeroOrderGradientModule", "enable_zero_order_gradients"]

install(__name__, "difopt.diff", "zero_order", "difopt-zeroorder", path=("module",))
