"""Gradient transformations: the building blocks optimizers are chained from.

Each module here lists its public names in ``__all__``; this namespace is their union, so a
transformation added to a module is exported without touching this file.
"""

from difopt.transform import _accelerated, _adafactor, _adaptive, _asgd, _core, _muon, _rprop
from difopt.transform._accelerated import *  # noqa: F403
from difopt.transform._adafactor import *  # noqa: F403
from difopt.transform._adaptive import *  # noqa: F403
from difopt.transform._asgd import *  # noqa: F403
from difopt.transform._core import *  # noqa: F403
from difopt.transform._muon import *  # noqa: F403
from difopt.transform._rprop import *  # noqa: F403

__all__: list[str] = []
__all__ += _accelerated.__all__
__all__ += _adafactor.__all__
__all__ += _adaptive.__all__
__all__ += _asgd.__all__
__all__ += _core.__all__
__all__ += _muon.__all__
__all__ += _rprop.__all__
__all__.sort()
