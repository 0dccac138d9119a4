"""Neumann-series approximations of ``A^{-1} b`` and ``A^{-1}``.

With ``alpha`` (1 when None), ``A^{-1} = alpha * sum_k (I - alpha A)^k``, which converges when
the spectral radius of ``I - alpha A`` is below 1. The series is truncated after a fixed number
of terms: it is an approximation by design, not an iteration to a tolerance. TorchOpt 0.7.3's
term counts are kept: :func:`ns` adds ``maxiter`` terms after the first (``maxiter + 1`` in
all), :func:`ns_inv` sums ``maxiter`` terms.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from difopt import pytree
from difopt_implicit.linalg._common import (
    ConvergenceWarning,
    Operator,
    TensorTree,
    as_operator,
    check_maxiter,
    leaves,
)


def check_series(maxiter: Any, alpha: Any) -> tuple[int, float]:
    check_maxiter(maxiter)
    if alpha is not None and (
        isinstance(alpha, bool)
        or not isinstance(alpha, (int, float))
        or not math.isfinite(alpha)
        or alpha <= 0
    ):
        raise ValueError(f"Invalid value for 'alpha': {alpha!r} (expected None or a float > 0)")
    return (10 if maxiter is None else maxiter), (1.0 if alpha is None else float(alpha))


def _tree_norm(tree: TensorTree) -> float:
    flat = pytree.tree_leaves(tree, namespace=pytree.NAMESPACE)
    return math.sqrt(sum(float(torch.linalg.vector_norm(t)) ** 2 for t in flat))


def ns(
    A: TensorTree | Operator,
    b: TensorTree,
    maxiter: int | None = None,
    *,
    alpha: float | None = None,
) -> TensorTree:
    """Approximate ``A^{-1} b`` by a truncated Neumann series.

    Computes ``alpha * sum_{k=0}^{maxiter} (I - alpha A)^k b`` with ``maxiter`` products with
    ``A``. Same signature and defaults as TorchOpt 0.7.3's ``torchopt.linalg.ns``.

    Args:
        A: A function ``x -> A x`` on pytrees shaped like ``b``, or a pytree of square matrices
            of shape ``(..., n, n)`` (leading dimensions are a batch), one per leaf of ``b``.
        b: The right-hand side: a tensor or a pytree of tensors.
        maxiter: Number of terms after the first; 10 when None.
        alpha: Scaling of ``A`` making the series converge; 1 when None.

    Returns:
        The approximation, structured like ``b``.

    Warns:
        ConvergenceWarning: the last term is not smaller than ``b``, or not finite: the series
            diverges (the spectral radius of ``I - alpha A`` is at least 1), so the result is
            meaningless.

    Examples:
        >>> import torch
        >>> from difopt_implicit.linalg import ns
        >>> A = torch.tensor([[1.0, 0.2], [0.2, 0.8]])
        >>> x = ns(A, torch.tensor([1.0, 1.0]), maxiter=60)
        >>> torch.allclose(A @ x, torch.tensor([1.0, 1.0]), atol=1e-5)
        True
    """
    steps, scale = check_series(maxiter, alpha)
    leaves(b, "b")
    matvec = as_operator(A, "A")
    term = b
    total = b
    for _ in range(steps):
        term = pytree.tree_sub_scalar_mul(term, matvec(term), alpha=scale)
        total = pytree.tree_add(total, term)
    if steps:
        last, first = _tree_norm(term), _tree_norm(b)
        if not math.isfinite(last) or (first > 0 and last >= first):
            warnings.warn(
                f"ns: the Neumann series does not converge: after {steps} term(s) the last term "
                f"has norm {last:.3e} >= norm(b) = {first:.3e}; choose 'alpha' so that the "
                "spectral radius of I - alpha * A is below 1",
                ConvergenceWarning,
                stacklevel=2,
            )
    return pytree.tree_scalar_mul(scale, total) if scale != 1.0 else total


def _ns_inv_matrix(matrix: torch.Tensor, steps: int, scale: float) -> torch.Tensor:
    if matrix.ndim < 2 or matrix.shape[-1] != matrix.shape[-2]:
        raise ValueError(
            f"'A' must hold square matrices of shape (..., n, n); got shape {tuple(matrix.shape)}"
        )
    eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
    step = eye - scale * matrix
    power = eye.expand_as(matrix)
    total = torch.zeros_like(matrix)
    for _ in range(steps):
        total = total + power
        power = power @ step
    return scale * total


def ns_inv(
    A: TensorTree,
    maxiter: int | None = None,
    *,
    alpha: float | None = None,
) -> TensorTree:
    """Approximate ``A^{-1}`` for each (batched) square matrix of a pytree by a Neumann series.

    Computes ``alpha * sum_{k=0}^{maxiter-1} (I - alpha A)^k``. Same signature and defaults as
    TorchOpt 0.7.3's ``torchopt.linalg.ns_inv``.

    Args:
        A: A tensor or pytree of square matrices of shape ``(..., n, n)``.
        maxiter: Number of terms; 10 when None.
        alpha: Scaling of ``A`` making the series converge; 1 when None.

    Returns:
        The approximate inverses, structured like ``A``.

    Examples:
        >>> import torch
        >>> from difopt_implicit.linalg import ns_inv
        >>> A = torch.tensor([[1.0, 0.2], [0.2, 0.8]])
        >>> torch.allclose(ns_inv(A, maxiter=60) @ A, torch.eye(2), atol=1e-5)
        True
    """
    steps, scale = check_series(maxiter, alpha)
    leaves(A, "A")
    return pytree.tree_map(lambda m: _ns_inv_matrix(m, steps, scale), A, namespace=pytree.NAMESPACE)
