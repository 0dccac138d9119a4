"""torch.optim-style optimizers, generated from the alias functions, and the base classes."""

from typing import Any

from difopt.alias import OPTIMIZERS
from difopt.optim import func, meta
from difopt.optim._forms import classic_class, classic_forms, meta_class
from difopt.optim.base import Optimizer
from difopt.optim.func import FuncOptimizer
from difopt.optim.meta import MetaOptimizer

# SGD, Adam, ... (and TorchOpt's other spellings, AdaGrad beside Adagrad), and the meta
# classes as TorchOpt's difopt.optim has them: generated from the table of built-in
# optimizers.
_GENERATED = {**classic_forms(OPTIMIZERS), **{name: getattr(meta, name) for name in meta.__all__}}
globals().update(_GENERATED)

__all__ = sorted(
    [
        "FuncOptimizer",
        "Optimizer",
        "classic_class",
        "func",
        "meta",
        "meta_class",
        *_GENERATED,
    ]
)


def __getattr__(name: str) -> Any:
    from difopt.optim._lookup import resolve

    return resolve(name, __name__)
