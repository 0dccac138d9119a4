"""TorchOpt's ``torchopt.diff.implicit.nn.module``: the module class and the two class
decorators that ``ImplicitMetaGradientModule`` applies to each subclass."""

from difopt_implicit.nn._module import (
    ImplicitMetaGradientModule,
    enable_implicit_gradients,
    make_optimality_from_objective,
)

__all__ = [
    "ImplicitMetaGradientModule",
    "enable_implicit_gradients",
    "make_optimality_from_objective",
]
