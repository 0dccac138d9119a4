"""The implicit meta-gradient module (TorchOpt's ``torchopt.diff.implicit.nn``)."""

from difopt_implicit.nn import module
from difopt_implicit.nn.module import ImplicitMetaGradientModule

__all__ = ["ImplicitMetaGradientModule", "module"]
