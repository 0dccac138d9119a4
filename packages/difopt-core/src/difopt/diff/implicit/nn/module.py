"""TorchOpt's ``torchopt.diff.implicit.nn.module`` path: ``ImplicitMetaGradientModule`` and the
two class decorators it applies to its subclasses, ``enable_implicit_gradients`` and
``make_optimality_from_objective`` (from ``difopt-implicit``)."""

from typing import TYPE_CHECKING, Any

from difopt._plugin_modules import install

if TYPE_CHECKING:
    # For type checkers: the attributes are the plugin's, looked up at run time.
    def __getattr__(name: str) -> Any: ...


__all__ = [
    "ImplicitMetaGradientModule",
    "enable_implicit_gradients",
    "make_optimality_from_objective",
]

install(__name__, "difopt.diff", "implicit", "difopt-implicit", path=("nn", "module"))
