"""TorchOpt's path of ``ImplicitMetaGradientModule`` (from ``difopt-implicit``)."""

import importlib
from typing import TYPE_CHECKING, Any

from difopt._plugin_modules import install

if TYPE_CHECKING:
    # For type checkers: the attributes are the plugin's, looked up at run time.
    def __getattr__(name: str) -> Any: ...


__all__ = ["ImplicitMetaGradientModule"]

install(__name__, "difopt.diff", "implicit", "difopt-implicit", path=("nn",))

# TorchOpt's ``nn.module`` submodule, imported without touching the plugin (it is lazy too).
importlib.import_module(f"{__name__}.module")
