"""Implicit differentiation (``custom_root``, ``ImplicitMetaGradientModule``) and fixed points
(``fixed_point``, ``root``, the ``DEQ`` layer).

Provided by the ``difopt-implicit`` plugin (entry point ``difopt.diff:implicit``).
"""

import importlib
from typing import TYPE_CHECKING, Any

from difopt._plugin_modules import install

if TYPE_CHECKING:
    # For type checkers: the attributes are the plugin's, looked up at run time.
    def __getattr__(name: str) -> Any: ...


__all__ = [
    "DEQ",
    "JFB",
    "Anderson",
    "Broyden",
    "FixedPointInfo",
    "Implicit",
    "ImplicitMetaGradientModule",
    "Newton",
    "NotConvergedError",
    "Phantom",
    "Picard",
    "Unrolled",
    "custom_root",
    "fixed_point",
    "nn",
    "root",
]

install(__name__, "difopt.diff", "implicit", "difopt-implicit")

# TorchOpt's ``nn`` submodule, imported without touching the plugin (it is lazy too).
importlib.import_module(f"{__name__}.nn")
