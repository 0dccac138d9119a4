"""Differentiable (meta) optimizers, generated from the alias functions."""

from typing import Any

from difopt import alias as _alias
from difopt.optim._forms import meta_class
from difopt.optim.meta.base import MetaOptimizer

MetaSGD = meta_class(_alias.sgd)
MetaAdam = meta_class(_alias.adam)
MetaAdamW = meta_class(_alias.adamw)
MetaAdamax = meta_class(_alias.adamax)
MetaRAdam = meta_class(_alias.radam)
MetaAdadelta = meta_class(_alias.adadelta)
MetaAdagrad = meta_class(_alias.adagrad)
MetaRMSProp = meta_class(_alias.rmsprop)
MetaNAdam = meta_class(_alias.nadam)
MetaLion = meta_class(_alias.lion)
MetaAdan = meta_class(_alias.adan)
MetaAdafactor = meta_class(_alias.adafactor)
MetaRprop = meta_class(_alias.rprop)
MetaMuon = meta_class(_alias.muon)
MetaASGD = meta_class(_alias.asgd)

# TorchOpt's alternative spellings: the same objects.
MetaAdaMax = MetaAdamax
MetaAdaDelta = MetaAdadelta
MetaAdaGrad = MetaAdagrad
MetaRMSprop = MetaRMSProp

__all__ = [
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
]


def __getattr__(name: str) -> Any:
    from difopt.optim._lookup import resolve

    return resolve(name, __name__)
