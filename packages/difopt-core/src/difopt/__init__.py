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
from difopt.alias import OPTIMIZERS
from difopt.base import GradientTransformation, identity
from difopt.clip import clip_grad_norm
from difopt.combine import chain
from difopt.hook import register_hook
from difopt.optim import FuncOptimizer, MetaOptimizer, Optimizer
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

# The built-in optimizers in their three forms (sgd, SGD, MetaSGD, ...), generated from the
# table difopt.alias.OPTIMIZERS.
_GENERATED = {
    **{fn.__name__: fn for fn in OPTIMIZERS},
    **{name: getattr(optim, name) for name in optim.__all__ if name[:1].isupper()},
}
globals().update(_GENERATED)

__all__ = sorted(
    [
        "FuncOptimizer",
        "GradientTransformation",
        "MetaOptimizer",
        "Optimizer",
        "__version__",
        "accelerated_op_available",
        "apply_updates",
        "chain",
        "clip_grad_norm",
        "extract_state_dict",
        "identity",
        "module_clone",
        "module_detach_",
        "nan_to_num",
        "plugins",
        "recover_state_dict",
        "register_hook",
        "stop_gradient",
        *_GENERATED,
    ]
)


if _plugins.strict_mode():
    _plugins.load_all()


def plugins() -> list:
    """List installed plugin entry points: group, name, distribution, version, load status."""
    return _plugins.plugins()


def __getattr__(name: str) -> Any:
    """Third-party optimizers: ``difopt.<name>``, ``difopt.<Name>``, ``difopt.Meta<Name>``."""
    from difopt.optim._lookup import resolve

    return resolve(name, __name__)
