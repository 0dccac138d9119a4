"""``AdamOp``: TorchOpt's per-tensor Adam operator, on the fused op when one is installed."""

from __future__ import annotations

import torch

__all__ = ["AdamOp"]


class AdamOp:
    """One Adam step for one tensor: ``(mu, nu, updates, count) -> (mu', nu', direction)``.

    TorchOpt's low-level operator (``torchopt.accelerated_op.adam_op.AdamOp``). It computes
    what :func:`difopt.transform.scale_by_accelerated_adam` computes for a single tensor, with
    ``count`` the number of this step (``t >= 1``): the fused ``difopt.ops`` op when a provider
    is installed (difopt-accel), the pure PyTorch path otherwise (with one warning).

    Args:
        b1: decay rate of the first moment.
        b2: decay rate of the second moment.
        eps: term added to the denominator outside the square root.
        eps_root: term added inside the square root.
        inplace: update ``mu``, ``nu`` and ``updates`` in place (not differentiable);
            otherwise return new, differentiable tensors.

    Examples:
        >>> import torch
        >>> from difopt.accelerated_op.adam_op import AdamOp
        >>> mu, nu, g = torch.zeros(2), torch.zeros(2), torch.ones(2)
        >>> _, _, direction = AdamOp(eps=0.0, inplace=False)(mu, nu, g, count=1)
        >>> direction
        tensor([1., 1.])
    """

    def __init__(
        self,
        b1: float = 0.9,
        b2: float = 0.999,
        eps: float = 1e-8,
        *,
        eps_root: float = 0.0,
        inplace: bool = True,
    ) -> None:
        from difopt.transform import scale_by_accelerated_adam

        self.b1 = b1
        self.b2 = b2
        self.eps = eps
        self.eps_root = eps_root
        self.inplace = inplace
        self._tx = scale_by_accelerated_adam(b1, b2, eps, eps_root)

    def __call__(
        self, mu: torch.Tensor, nu: torch.Tensor, updates: torch.Tensor | None, count: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Return ``(mu', nu', direction)``; ``updates=None`` returns ``(mu, nu, None)``.

        Raises:
            ValueError: ``count`` is not an integer >= 1.
        """
        from difopt.transform import ScaleByAdamState

        if updates is None:
            return mu, nu, None
        step = int(count)
        if step != count or step < 1:
            raise ValueError(f"'count' must be the step number, an integer >= 1; got {count!r}")
        state = ScaleByAdamState(mu, nu, torch.tensor(step - 1, dtype=torch.int64))
        direction, new_state = self._tx.update(updates, state, inplace=self.inplace)
        if self.inplace and not (updates.is_leaf and updates.requires_grad):
            with torch.no_grad():
                direction = updates.copy_(direction)
        return new_state.mu, new_state.nu, direction

    def __repr__(self) -> str:
        return (
            f"AdamOp(b1={self.b1}, b2={self.b2}, eps={self.eps}, eps_root={self.eps_root}, "
            f"inplace={self.inplace})"
        )
