"""Differentiable (meta) optimizers, generated from the alias functions."""

from typing import Any

from difopt.alias import OPTIMIZERS
from difopt.optim._forms import meta_forms
from difopt.optim.meta.base import MetaOptimizer

# MetaSGD, MetaAdam, ... (and TorchOpt's other spellings, MetaAdaGrad beside MetaAdagrad):
# generated from the table of built-in optimizers.
_GENERATED = meta_forms(OPTIMIZERS)
globals().update(_GENERATED)

__all__ = sorted(["MetaOptimizer", *_GENERATED])


def __getattr__(name: str) -> Any:
    from difopt.optim._lookup import resolve

    return resolve(name, __name__)
