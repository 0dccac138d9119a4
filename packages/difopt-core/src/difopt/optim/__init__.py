"""torch.optim-style optimizers, generated from the alias functions, and the base classes."""

from typing import Any

from difopt import alias as _alias
from difopt.optim import func, meta
from difopt.optim._forms import classic_class
from difopt.optim.base import Optimizer
from difopt.optim.func import FuncOptimizer
from difopt.optim.meta import (
    MetaAdaDelta,
    MetaAdadelta,
    MetaAdafactor,
    MetaAdaGrad,
    MetaAdagrad,
    MetaAdam,
    MetaAdaMax,
    MetaAdamax,
    MetaAdamW,
    MetaAdan,
    MetaASGD,
    MetaLion,
    MetaMuon,
    MetaNAdam,
    MetaOptimizer,
    MetaRAdam,
    MetaRMSProp,
    MetaRMSprop,
    MetaRprop,
    MetaSGD,
)

SGD = classic_class(_alias.sgd)
Adam = classic_class(_alias.adam)
AdamW = classic_class(_alias.adamw)
Adamax = classic_class(_alias.adamax)
RAdam = classic_class(_alias.radam)
Adadelta = classic_class(_alias.adadelta)
Adagrad = classic_class(_alias.adagrad)
RMSProp = classic_class(_alias.rmsprop)
NAdam = classic_class(_alias.nadam)
Lion = classic_class(_alias.lion)
Adan = classic_class(_alias.adan)
Adafactor = classic_class(_alias.adafactor)
Rprop = classic_class(_alias.rprop)
Muon = classic_class(_alias.muon)
ASGD = classic_class(_alias.asgd)

# TorchOpt's alternative spellings: the same objects.
AdaMax = Adamax
AdaDelta = Adadelta
AdaGrad = Adagrad
RMSprop = RMSProp

__all__ = [
    "ASGD",
    "SGD",
    "AdaDelta",
    "AdaGrad",
    "AdaMax",
    "Adadelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Adan",
    "FuncOptimizer",
    "Lion",
    "MetaASGD",
    "MetaAdaDelta",
    "MetaAdaGrad",
    "MetaAdaMax",
    "MetaAdadelta",
    "MetaAdafactor",
    "MetaAdagrad",
    "MetaAdam",
    "MetaAdamW",
    "MetaAdamax",
    "MetaAdan",
    "MetaLion",
    "MetaMuon",
    "MetaNAdam",
    "MetaOptimizer",
    "MetaRAdam",
    "MetaRMSProp",
    "MetaRMSprop",
    "MetaRprop",
    "MetaSGD",
    "Muon",
    "NAdam",
    "Optimizer",
    "RAdam",
    "RMSProp",
    "RMSprop",
    "Rprop",
    "func",
    "meta",
]


def __getattr__(name: str) -> Any:
    from difopt.optim._lookup import resolve

    return resolve(name, __name__)
