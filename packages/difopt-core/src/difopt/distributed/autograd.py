"""Distributed autograd (``context``, ``backward``, ``grad``, ...), from ``difopt-distributed``.

A module of its own so that TorchOpt's ``import torchopt.distributed.autograd`` spelling works.
"""

from typing import TYPE_CHECKING, Any

from difopt._plugin_modules import install

if TYPE_CHECKING:
    # For type checkers: the attributes are the plugin's, looked up at run time.
    def __getattr__(name: str) -> Any: ...


__all__ = ["backward", "context", "get_gradients", "grad", "is_available"]

install(__name__, "difopt.distributed", "distributed", "difopt-distributed", path=("autograd",))
