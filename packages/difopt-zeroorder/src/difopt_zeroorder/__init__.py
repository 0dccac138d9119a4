"""difopt-zeroorder: zero-order (evolution-strategies) differentiation for difopt.

This plugin provides the ``difopt.diff`` entry point ``zero_order``: with it installed,
``difopt.diff.zero_order.zero_order``, the callable module ``difopt.diff.zero_order(...)``,
``difopt.diff.ZeroOrderGradientModule`` and ``difopt.nn.ZeroOrderGradientModule`` resolve to
the objects below (TorchOpt 0.7.3's ``torchopt.diff.zero_order`` API).
"""

from difopt_zeroorder import decorator, module
from difopt_zeroorder.decorator import METHODS, Method, zero_order
from difopt_zeroorder.module import ZeroOrderGradientModule

__version__ = "0.1.0"

#: The difopt plugin API this package implements (``difopt.registry.PLUGIN_API_VERSION``).
DIFOPT_PLUGIN_API = "1.0"

__all__ = [
    "DIFOPT_PLUGIN_API",
    "METHODS",
    "Method",
    "ZeroOrderGradientModule",
    "__version__",
    "zero_order",
]
