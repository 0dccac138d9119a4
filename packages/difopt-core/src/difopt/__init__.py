"""difopt: differentiable optimization for PyTorch.

Optimizers in three forms (functional ``difopt.adam``, torch.optim-style ``difopt.Adam``,
differentiable ``difopt.MetaAdam``), gradient transformations to build more, schedules, and
the utilities of unrolled meta-learning. Implicit and zero-order differentiation, fused
native ops, distributed execution and graph drawing come from plugin packages, discovered
through entry points (see :func:`difopt.plugins`).

TorchOpt 0.7.3's public API is a subset: ``import difopt as torchopt`` runs TorchOpt code.
"""

from typing import Any

from difopt import (
    accelerated_op,
    alias,
    base,
    clip,
    combine,
    diff,
    distributed,
    hook,
    linalg,
    linear_solve,
    nn,
    optim,
    pytree,
    schedule,
    transform,
    typing,
    update,
    utils,
    visual,
)
from difopt import registry as _plugins
from difopt.accelerated_op import is_available as accelerated_op_available
from difopt.alias import (
    adadelta,
    adafactor,
    adagrad,
    adam,
    adamax,
    adamw,
    adan,
    asgd,
    lion,
    muon,
    nadam,
    radam,
    rmsprop,
    rprop,
    sgd,
)
from difopt.base import GradientTransformation, identity
from difopt.clip import clip_grad_norm
from difopt.combine import chain
from difopt.hook import register_hook
from difopt.optim import (
    ASGD,
    SGD,
    AdaDelta,
    Adadelta,
    Adafactor,
    AdaGrad,
    Adagrad,
    Adam,
    AdaMax,
    Adamax,
    AdamW,
    Adan,
    FuncOptimizer,
    Lion,
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
    Muon,
    NAdam,
    Optimizer,
    RAdam,
    RMSProp,
    RMSprop,
    Rprop,
)
from difopt.transform import nan_to_num
from difopt.update import apply_updates
from difopt.utils import (
    extract_state_dict,
    module_clone,
    module_detach_,
    recover_state_dict,
    stop_gradient,
)
from difopt.version import __version__

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
    "GradientTransformation",
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
    "__version__",
    "accelerated_op_available",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "adan",
    "apply_updates",
    "asgd",
    "chain",
    "clip_grad_norm",
    "extract_state_dict",
    "identity",
    "lion",
    "module_clone",
    "module_detach_",
    "muon",
    "nadam",
    "nan_to_num",
    "plugins",
    "radam",
    "recover_state_dict",
    "register_hook",
    "rmsprop",
    "rprop",
    "sgd",
    "stop_gradient",
]


if _plugins.strict_mode():
    _plugins.load_all()


def plugins() -> list:
    """List installed plugin entry points: group, name, distribution, version, load status."""
    return _plugins.plugins()


def __getattr__(name: str) -> Any:
    """Third-party optimizers: ``difopt.<name>``, ``difopt.<Name>``, ``difopt.Meta<Name>``."""
    from difopt.optim._lookup import resolve

    return resolve(name, __name__)
