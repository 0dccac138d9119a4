"""Implicit differentiation (``custom_root``, ``ImplicitMetaGradientModule``).

Provided by the ``difopt-implicit`` plugin (entry point ``difopt.diff:implicit``).
"""

import importlib
from typing import TYPE_CHECKING, Any

from difopt._lazy import install

if TYPE_CHECKING:
    # For type checkers: the attributes are the plugin's, looked up at run time.
    def __getattr__(name: str) -> Any: ...


__all__ = ["ImplicitMetaGradientModule", "custom_root", "nn"]

install(__name__, "difopt.diff", "implicit", "difopt-implicit")

# TorchOpt's ``nn`` submodule, imported without touching the plugin (it is lazy too).
importlib.import_module(f"{__name__}.nn")
