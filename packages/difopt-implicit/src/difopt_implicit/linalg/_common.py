"""Shared pieces of the iterative solvers: operators, flattening, argument checks, warnings."""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import torch

from difopt import pytree

TensorTree = Any
Operator = Callable[[TensorTree], TensorTree]


class ConvergenceWarning(RuntimeWarning):
    """An iterative solver stopped before reaching its tolerance.

    The message gives the solver, the number of iterations, the final residual norm and the
    tolerance; the returned solution is the last iterate, which may be inaccurate.
    """


def leaves(tree: TensorTree, name: str) -> tuple[list[torch.Tensor], pytree.PyTreeSpec]:
    """Flatten ``tree``, checking that every leaf is a tensor (``name`` is the argument)."""
    flat, spec = pytree.tree_flatten(tree, namespace=pytree.NAMESPACE)
    for leaf in flat:
        if not isinstance(leaf, torch.Tensor):
            raise TypeError(
                f"'{name}' must be a tensor or a pytree of tensors, but it has a leaf of type "
                f"{type(leaf).__name__}"
            )
    if not flat:
        raise ValueError(f"'{name}' must contain at least one tensor, got {tree!r}")
    return flat, spec


class Flat:
    """A view of a pytree of tensors as one 1-D vector, and back.

    Krylov solvers work on the vector; the user's operator sees pytrees shaped like ``b``.
    """

    def __init__(self, tree: TensorTree, name: str) -> None:
        flat, self.spec = leaves(tree, name)
        self.shapes = [t.shape for t in flat]
        self.dtypes = [t.dtype for t in flat]
        self.sizes = [t.numel() for t in flat]
        devices = {t.device for t in flat}
        if len(devices) > 1:
            raise ValueError(f"the tensors of '{name}' must be on one device, got {devices}")
        self.numel = sum(self.sizes)
        self.name = name

    def ravel(self, tree: TensorTree, name: str | None = None) -> torch.Tensor:
        """Concatenate the leaves of ``tree`` (structured like the reference) into a vector."""
        flat, spec = pytree.tree_flatten(tree, namespace=pytree.NAMESPACE)
        if spec != self.spec or any(t.shape != s for t, s in zip(flat, self.shapes)):
            what = name or "the operator's output"
            got = [tuple(t.shape) for t in flat if isinstance(t, torch.Tensor)]
            raise ValueError(
                f"{what} must have the structure and shapes of '{self.name}' "
                f"({self.spec}, shapes {[tuple(s) for s in self.shapes]}); got {spec}, "
                f"shapes {got}"
            )
        if len(flat) == 1:
            return flat[0].reshape(-1)
        return torch.cat([t.reshape(-1) for t in flat])

    def unravel(self, vector: torch.Tensor) -> TensorTree:
        """Split ``vector`` back into a pytree shaped like the reference."""
        if len(self.sizes) == 1 and vector.dtype == self.dtypes[0]:
            return pytree.tree_unflatten(self.spec, [vector.reshape(self.shapes[0])])
        parts = torch.split(vector, self.sizes)
        flat = [p.reshape(s).to(d) for p, s, d in zip(parts, self.shapes, self.dtypes)]
        return pytree.tree_unflatten(self.spec, flat)

    def operator(self, fn: Operator) -> Callable[[torch.Tensor], torch.Tensor]:
        """Lift a pytree operator to vectors."""
        return lambda v: self.ravel(fn(self.unravel(v)))


def _dense_apply(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (matrix @ x.unsqueeze(-1)).squeeze(-1)


def as_operator(a: TensorTree | Operator, name: str) -> Operator:
    """Return ``a`` as a function ``x -> a @ x``.

    ``a`` is a callable, or a pytree of square matrices of shape ``(..., n, n)`` (leading
    dimensions are batch dimensions) matching the leaves of ``x`` of shape ``(..., n)``.
    """
    if callable(a):
        return a
    mats, spec = leaves(a, name)
    for m in mats:
        if m.ndim < 2 or m.shape[-1] != m.shape[-2]:
            raise ValueError(
                f"'{name}' must be a callable or a pytree of square matrices of shape "
                f"(..., n, n); got a leaf of shape {tuple(m.shape)}"
            )

    def matvec(x: TensorTree) -> TensorTree:
        xs, x_spec = pytree.tree_flatten(x, namespace=pytree.NAMESPACE)
        if x_spec != spec:
            raise ValueError(f"the vector has structure {x_spec}, but '{name}' has {spec}")
        for m, v in zip(mats, xs):
            if v.ndim < 1 or v.shape[-1] != m.shape[-1]:
                raise ValueError(
                    f"a matrix of '{name}' has shape {tuple(m.shape)} but its vector has "
                    f"shape {tuple(v.shape)} (expected (..., {m.shape[-1]}))"
                )
        return pytree.tree_unflatten(spec, [_dense_apply(m, v) for m, v in zip(mats, xs)])

    return matvec


def check_tolerances(rtol: Any, atol: Any) -> None:
    for name, value in (("rtol", rtol), ("atol", atol)):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            raise ValueError(
                f"Invalid value for '{name}': {value!r} (expected a finite float >= 0)"
            )


def check_maxiter(maxiter: Any, *, allow_zero: bool = True) -> None:
    if maxiter is None:
        return
    low = 0 if allow_zero else 1
    if isinstance(maxiter, bool) or not isinstance(maxiter, int) or maxiter < low:
        raise ValueError(
            f"Invalid value for 'maxiter': {maxiter!r} (expected None or an int >= {low})"
        )


def check_real(flat: Flat, solver: str) -> None:
    for dtype in flat.dtypes:
        if not dtype.is_floating_point:
            raise TypeError(
                f"{solver}() solves real systems: 'b' must hold real floating-point tensors, "
                f"got dtype {dtype}"
            )


def initial_guess(flat: Flat, b_vec: torch.Tensor, x0: TensorTree | None) -> torch.Tensor:
    if x0 is None:
        return torch.zeros_like(b_vec)
    return flat.ravel(x0, "'x0'").to(b_vec.dtype)


def warn_not_converged(
    solver: str, iterations: int, residual: float, tolerance: float, hint: str = ""
) -> None:
    """Warn that ``solver`` stopped with ``residual`` above ``tolerance``."""
    if math.isfinite(residual):
        why = f"residual norm {residual:.3e} > tolerance {tolerance:.3e}"
    else:
        why = f"the residual became non-finite ({residual})"
    warnings.warn(
        f"{solver} did not converge after {iterations} iteration(s): {why}. The result is the "
        f"last iterate and may be inaccurate{hint}",
        ConvergenceWarning,
        stacklevel=3,
    )


def vdot_real(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if x.is_complex() or y.is_complex():
        return torch.vdot(x, y).real
    return torch.dot(x, y)


def norm(x: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(x))
