"""``DEQ``: a deep-equilibrium layer, ``z* = f(z*, x)`` for an ``nn.Module`` ``f``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from difopt_implicit._fixed_point import FixedPointInfo, fixed_point

__all__ = ["DEQ"]


class DEQ(nn.Module):
    """A deep-equilibrium layer: its output is the fixed point ``z* = f(z*, *inputs)``.

    ``f`` is an ``nn.Module`` (registered as a submodule, so its parameters are the layer's);
    ``forward(z0, *inputs)`` runs :func:`~difopt_implicit.fixed_point` and attaches the chosen
    backward, so gradients reach ``f``'s parameters and the inputs. The last solve's
    :class:`~difopt_implicit.FixedPointInfo` is kept in ``self.info`` (per sample).

    ``torch.compile`` of a model that contains the layer works (tested with the ``aot_eager``
    backend): the solver loop stops on a data-dependent test, so it is a graph break, and the
    rest of the model is compiled. Inside ``torch.func.vmap`` (each call then sees one sample:
    use ``batched=False``) the forward pass works with Picard, Anderson and Broyden, running
    all ``max_iter`` iterations (a converged sample is frozen by the mask, so the result is
    unchanged; Newton's GMRES raises vmap's data-dependent control-flow error); gradients
    through vmap are not supported by the ``"implicit"`` backward (its hook calls autograd on
    the solution), and are by ``"jfb"``, ``"phantom"`` and ``"unrolled"`` (plain autograd).

    Args:
        f: The layer's map, ``f(z, *inputs)``, returning a value structured like ``z``.
        solver, backward, tol, max_iter, stop_mode, raise_on_failure: As in
            :func:`~difopt_implicit.fixed_point`.
        batched: Whether the leading dimension of ``z0`` indexes samples (default True).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from difopt_implicit import DEQ
        >>> class Cell(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.lin = nn.Linear(4, 4)
        ...     def forward(self, z, x):
        ...         return torch.tanh(0.5 * self.lin(z) + x)
        >>> layer = DEQ(Cell(), tol=1e-6)
        >>> x = torch.randn(3, 4)
        >>> z = layer(torch.zeros(3, 4), x)
        >>> bool(layer.info.converged.all()), z.shape
        (True, torch.Size([3, 4]))
        >>> z.sum().backward()  # implicit gradients in layer.f.lin.weight.grad
    """

    info: FixedPointInfo | None

    def __init__(
        self,
        f: nn.Module,
        *,
        solver: Any = "anderson",
        backward: Any = "implicit",
        tol: float = 1e-4,
        max_iter: int = 50,
        stop_mode: str = "abs",
        batched: bool = True,
        raise_on_failure: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(f, nn.Module):
            raise TypeError(f"'f' must be an nn.Module, got {type(f).__name__}")
        self.f = f
        self.options = dict(
            solver=solver,
            backward=backward,
            tol=tol,
            max_iter=max_iter,
            stop_mode=stop_mode,
            batched=batched,
            raise_on_failure=raise_on_failure,
        )
        # Validate now, not at the first forward pass.
        fixed_point(lambda z: z, torch.zeros(1, 1), **self.options)
        self.info = None

    def forward(self, z0: Any, *inputs: Any) -> Any:
        z, self.info = fixed_point(self.f, z0, *inputs, **self.options)
        return z

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())
