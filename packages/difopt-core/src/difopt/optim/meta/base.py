"""``MetaOptimizer``: differentiable steps on an ``nn.Module``'s parameters."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from difopt import _leafwise as lw
from difopt import _state
from difopt import _validate as check
from difopt.base import GradientTransformation
from difopt.optim import _fused_step

__all__ = ["STEP_METADATA_KEY", "MetaOptimizer"]

STEP_METADATA_KEY = "difopt.meta_step"
"""Key under which :meth:`MetaOptimizer.step` tags the ``grad_fn.metadata`` of its outputs."""


def _containers(module: nn.Module) -> tuple[dict[str, Any], ...]:
    """The ``_parameters`` dicts of ``module`` and its sub-modules that hold trainable ones."""
    return tuple(
        m._parameters
        for m in module.modules()  # each module once, even when shared
        if any(p is not None and p.requires_grad for p in m._parameters.values())
    )


def _trainable(containers: tuple[dict[str, Any], ...]) -> list[tuple[dict[str, Any], str]]:
    return [(c, k) for c in containers for k, p in c.items() if p is not None and p.requires_grad]


def per_parameter_lr(module: Any, lr: Any) -> Any:
    """``lr`` as the meta forms pass it to their alias: a dict keyed by parameter name becomes
    a tuple in the order of the parameters that require grad (``module.parameters()``
    order); a list or tuple must have one entry per such parameter. Anything else is
    returned as it is (the alias validates it)."""
    if not isinstance(module, nn.Module) or not isinstance(lr, (list, tuple, dict)):
        return lr
    prefixes = {id(m._parameters): prefix for prefix, m in module.named_modules()}
    names = [
        f"{prefixes[id(c)]}.{k}" if prefixes[id(c)] else k
        for c, k in _trainable(_containers(module))
    ]
    if isinstance(lr, dict):
        missing = [n for n in names if n not in lr]
        unexpected = [k for k in lr if k not in set(names)]
        if missing or unexpected:
            raise ValueError(
                "Invalid value for 'lr': a dict of per-parameter learning rates needs one key "
                "per parameter of the module that requires grad (its name in "
                f"module.named_parameters()); missing {missing}, unexpected {unexpected}"
            )
        return tuple(lr[n] for n in names)
    if len(lr) != len(names):
        raise ValueError(
            f"Invalid value for 'lr': {len(lr)} per-parameter learning rates for the "
            f"{len(names)} parameters of the module that require grad (expected one per "
            "parameter, in module.parameters() order)"
        )
    return lr


class MetaOptimizer:
    """Differentiable optimizer: ``step(loss)`` replaces the module's parameters by updated,
    non-leaf tensors, so a later loss can be differentiated through the step (unrolling).

    Args:
        module: the ``nn.Module`` whose parameters are optimized.
        impl: the transformation, e.g. ``difopt.adam(1e-3, moment_requires_grad=True)``.

    Examples:
        >>> import torch, difopt
        >>> net = torch.nn.Linear(2, 1)
        >>> opt = difopt.MetaOptimizer(net, difopt.sgd(lr=0.1))
        >>> opt.step(net(torch.ones(1, 2)).pow(2).sum())
        >>> net.weight.grad_fn is not None
        True
    """

    alias: Any = None
    defaults: dict[str, Any] = {}

    def __init__(self, module: nn.Module, impl: GradientTransformation) -> None:
        if not isinstance(impl, GradientTransformation):
            raise TypeError(f"'impl' must be a GradientTransformation, got {type(impl).__name__}")
        self.impl = impl
        self._plan = _fused_step.make_plan(impl)
        self._step_count = 0
        self.param_containers_groups: list[tuple[dict[str, Any], ...]] = []
        self.state_groups: list[Any] = []
        # Per group, until its first step: its parameters' dtypes and devices when its state
        # was made (a module cast or moved afterwards gets a new state at the first step).
        self._unstepped: list[Any] = []
        self.add_param_group(module)

    def add_param_group(self, module: nn.Module) -> None:
        """Also optimize the parameters of ``module`` (with the same transformation)."""
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"'module' must be a torch.nn.Module, got {type(module).__name__}; a meta "
                "optimizer replaces the module's parameters after each step. For a list of "
                "tensors use difopt.FuncOptimizer or the functional API (difopt.adam(...))."
            )
        containers = _containers(module)
        known = {id(c) for group in self.param_containers_groups for c in group}
        if any(id(c) in known for c in containers):
            raise ValueError("'module' shares parameters with a module already being optimized")
        params = tuple(c[k] for c, k in _trainable(containers))
        if not params:
            raise ValueError("'module' has no parameters that require grad")
        self.param_containers_groups.append(containers)
        self.state_groups.append(self.impl.init(params))
        self._unstepped.append(_state.placement(params))

    def step(self, loss: torch.Tensor) -> None:
        """Take one differentiable step on ``loss`` for every parameter group.

        The gradients are taken with ``create_graph=True``; a parameter that does not reach the
        loss has no gradient, and is left as it is, its optimizer state (step count included)
        too. Nothing is replaced if any part fails.
        """
        check.scalar_loss(loss)
        slots = [_trainable(c) for c in self.param_containers_groups]
        flat = [c[k] for group in slots for c, k in group]
        grads = torch.autograd.grad(loss, flat, create_graph=True, allow_unused=True)
        new_states, new_params = [], []
        start = 0
        for i, (state, group) in enumerate(zip(self.state_groups, slots)):
            params = tuple(flat[start : start + len(group)])
            unstepped = None if torch.compiler.is_compiling() else self._unstepped[i]
            if unstepped is not None and _state.placement(params) != unstepped:
                state = self.impl.init(params)  # cast or moved since (net.double())
            g = tuple(grads[start : start + len(group)])
            start += len(group)
            values, state = _fused_step.step(self.impl, self._plan, g, state, params, inplace=False)
            new_states.append(state)
            new_params.append(values)
        for group, values in zip(slots, new_params):
            for (container, key), value in zip(group, values):
                container[key] = value
        self.state_groups = new_states
        if not torch.compiler.is_compiling():
            self._unstepped = [None] * len(new_states)
        self._step_count += 1
        self._tag_step([t for values in new_params for t in values])

    def _tag_step(self, new_params: list[torch.Tensor]) -> None:
        """Mark the autograd nodes that produced this step's parameters and state.

        Graph tools (``difopt.visual.make_dot(..., collapse_steps=True)``) read the tag from
        ``grad_fn.metadata[STEP_METADATA_KEY]`` to find where each unrolled step begins.
        """
        tag = {"optimizer": type(self).__name__, "owner": id(self), "step": self._step_count}
        for t in (*new_params, *lw.leaves(self.state_groups)):
            if torch.is_tensor(t) and t.grad_fn is not None:
                t.grad_fn.metadata[STEP_METADATA_KEY] = tag  # type: ignore[index]

    def state_dict(self) -> dict[str, Any]:
        """The state as plain containers (see :meth:`difopt.Optimizer.state_dict`)."""
        groups = [{"params": [None] * len(_trainable(c))} for c in self.param_containers_groups]
        return _state.to_dict(self.state_groups, groups)

    def load_state_dict(self, state_dict: Any) -> None:
        """Restore a state from :meth:`state_dict`, or a sequence of states (TorchOpt's form).

        Both are taken by reference, as in TorchOpt: tensors keep their autograd graph (what
        :func:`difopt.recover_state_dict` relies on), so ``load_state_dict(state_dict())``
        round-trips a state in the middle of an unrolled loop. A tensor saved with another
        dtype or device is copied to this state's.
        """
        if isinstance(state_dict, (list, tuple)) and not isinstance(state_dict, dict):
            states = list(state_dict)
            if len(states) != len(self.state_groups):
                raise ValueError(
                    f"'state_dict' has {len(states)} state groups, expected "
                    f"{len(self.state_groups)}"
                )
            for s, cur in zip(states, self.state_groups):
                if lw.flatten(s)[1] != lw.flatten(cur)[1]:
                    raise ValueError("'state_dict' does not have the structure of this state")
            self.state_groups = states
        else:
            self.state_groups = _state.from_dict(state_dict, self.state_groups, by_reference=True)
        self._unstepped = [None] * len(self.state_groups)  # the loaded state is the state
