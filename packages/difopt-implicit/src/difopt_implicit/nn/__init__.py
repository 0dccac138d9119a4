"""The implicit meta-gradient module (TorchOpt's ``torchopt.diff.implicit.nn``)."""

from difopt_implicit.nn._module import ImplicitMetaGradientModule

__all__ = ["ImplicitMetaGradientModule"]
