"""Zero-order differentiation (``zero_order``, ``ZeroOrderGradientModule``).

Provided by the ``difopt-zeroorder`` plugin (entry point ``difopt.diff:zero_order``). The
module itself is callable, as in TorchOpt: ``@difopt.diff.zero_order(distribution, method)``.
"""

import importlib
from typing import TYPE_CHECKING, Any

from difopt._plugin_modules import install

if TYPE_CHECKING:
    # For type checkers: the attributes are the plugin's, looked up at run time.
    def __getattr__(name: str) -> Any: ...


__all__ = ["ZeroOrderGradientModule", "nn", "zero_order"]

install(__name__, "difopt.diff", "zero_order", "difopt-zeroorder", call="zero_order")

# TorchOpt's ``nn`` submodule, imported without touching the plugin (it is lazy too).
importlib.import_module(f"{__name__}.nn")
