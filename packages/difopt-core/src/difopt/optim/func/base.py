"""``FuncOptimizer``: a stateful wrapper for functional (pytree) parameters."""

from __future__ import annotations

from typing import Any

import torch

from difopt import _leafwise as lw
from difopt import _state
from difopt import _validate as check
from difopt.base import GradientTransformation, UninitializedState
from difopt.update import apply_updates

__all__ = ["FuncOptimizer"]


class FuncOptimizer:
    """Keeps the state of ``impl`` between calls of ``step(loss, params) -> new_params``.

    Args:
        impl: the transformation.
        inplace: default for :meth:`step`; ``False`` keeps the step differentiable.

    Examples:
        >>> import torch, difopt
        >>> w = torch.ones(2, requires_grad=True)
        >>> opt = difopt.FuncOptimizer(difopt.sgd(lr=0.5))
        >>> w2 = opt.step((w ** 2).sum(), w)
        >>> w2.detach(), w2.requires_grad
        (tensor([0., 0.]), True)
    """

    def __init__(self, impl: GradientTransformation, *, inplace: bool = False) -> None:
        if not isinstance(impl, GradientTransformation):
            raise TypeError(f"'impl' must be a GradientTransformation, got {type(impl).__name__}")
        self.impl = impl
        self.inplace = bool(inplace)
        self.optim_state: Any = UninitializedState()

    def step(self, loss: torch.Tensor, params: Any, inplace: bool | None = None) -> Any:
        """Differentiate ``loss`` with respect to ``params`` and return the updated params."""
        check.scalar_loss(loss, requires_grad=False)
        inplace = self.inplace if inplace is None else inplace
        flat, spec = lw.flatten(params)
        if not flat or not all(torch.is_tensor(p) for p in flat):
            raise TypeError("'params' must be a non-empty pytree of tensors")
        if isinstance(self.optim_state, UninitializedState):
            self.optim_state = self.impl.init(params)
        grads = torch.autograd.grad(loss, flat, create_graph=True, allow_unused=True)
        updates, self.optim_state = self.impl.update(
            lw.unflatten(spec, grads), self.optim_state, params=params, inplace=inplace
        )
        return apply_updates(params, updates, inplace=inplace)

    def state_dict(self) -> Any:
        """The current state (TorchOpt's convention: the state tree itself)."""
        return self.optim_state

    def load_state_dict(self, state_dict: Any) -> None:
        """Restore a state returned by :meth:`state_dict`."""
        if not isinstance(self.optim_state, UninitializedState):
            _state.from_dict([state_dict], [self.optim_state])  # validates the structure
        self.optim_state = state_dict
