"""difopt-unroll: long unrolls in bounded memory for difopt.

Differentiate through K inner optimization steps with the memory of a checkpoint policy
instead of K steps of autograd graph: the exact meta-gradient (equal to the plain unrolled
loop's), the truncated one (last k steps) or the first-order one, with respect to the initial
parameters and every declared meta-parameter the step reads.

- :func:`unroll`: functional form, a step ``(params, state, batch) -> (params, state, loss)``
  (e.g. :func:`transformation_step` from any ``difopt.GradientTransformation``).
- :func:`unroll_module`: object-oriented form, a ``difopt.MetaOptimizer`` stepping modules.
- Policies: ``"none"``, ``"sqrt"``, :class:`Every`, :class:`Binomial` (Revolve).

This plugin provides the ``difopt.diff`` entry point ``unroll``.
"""

from difopt_unroll import api, engine, policies
from difopt_unroll.api import (
    UnrollResult,
    inner_grad,
    transformation_step,
    unroll,
    unroll_module,
)
from difopt_unroll.engine import MODES, StepContext, UnrollStats, current_context
from difopt_unroll.policies import (
    POLICY_NAMES,
    Binomial,
    Every,
    NoCheckpoint,
    Policy,
    Sqrt,
    revolve_recomputations,
)

__version__ = "0.1.0"

#: The difopt plugin API this package implements (``difopt.registry.PLUGIN_API_VERSION``).
DIFOPT_PLUGIN_API = "1.0"

__all__ = [
    "DIFOPT_PLUGIN_API",
    "MODES",
    "POLICY_NAMES",
    "Binomial",
    "Every",
    "NoCheckpoint",
    "Policy",
    "Sqrt",
    "StepContext",
    "UnrollResult",
    "UnrollStats",
    "__version__",
    "current_context",
    "inner_grad",
    "revolve_recomputations",
    "transformation_step",
    "unroll",
    "unroll_module",
]
