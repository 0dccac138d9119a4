"""TorchOpt's ``torchopt.linalg.utils`` helpers: operator normalisation and shape listing."""

from __future__ import annotations

import itertools
from typing import Callable

import torch

from difopt import pytree
from difopt.typing import TensorTree

__all__ = ["cat_shapes", "normalize_matvec"]


def cat_shapes(tree: TensorTree) -> tuple[int, ...]:
    """The shapes of the leaves of ``tree``, concatenated into one tuple."""
    leaves = pytree.tree_leaves(tree, namespace=pytree.NAMESPACE)
    return tuple(itertools.chain.from_iterable(tuple(leaf.shape) for leaf in leaves))


def normalize_matvec(
    matvec: TensorTree | Callable[[TensorTree], TensorTree],
) -> Callable[[TensorTree], TensorTree]:
    """Return ``matvec`` as a function ``x -> A x``.

    A callable is returned as it is. A pytree of square matrices becomes the function that
    multiplies each matrix by the matching leaf of ``x`` with :func:`torch.matmul` (a leaf of
    ``x`` is a vector of shape ``(n,)`` or a matrix of shape ``(n, k)``).

    Raises:
        TypeError: a leaf of ``matvec`` is not a square matrix.
        ValueError: (when called) ``x`` has another number of leaves than ``matvec``.

    Examples:
        >>> import torch
        >>> from difopt_implicit.linalg.utils import normalize_matvec
        >>> normalize_matvec([2.0 * torch.eye(2)])([torch.ones(2)])
        [tensor([2., 2.])]
    """
    if callable(matvec):
        return matvec
    mats, spec = pytree.tree_flatten(matvec, namespace=pytree.NAMESPACE)
    for i, m in enumerate(mats):
        if not torch.is_tensor(m) or m.ndim != 2 or m.shape[0] != m.shape[1]:
            shape = tuple(m.shape) if torch.is_tensor(m) else type(m).__name__
            raise TypeError(
                f"'matvec' must be a callable or a pytree of square matrices; leaf {i} is {shape}"
            )

    def apply(x: TensorTree) -> TensorTree:
        xs = pytree.tree_leaves(x, namespace=pytree.NAMESPACE)
        if len(xs) != len(mats):
            raise ValueError(
                f"'x' has {len(xs)} leaves but 'matvec' has {len(mats)} matrices; they must match"
            )
        return pytree.tree_unflatten(spec, [torch.matmul(m, v) for m, v in zip(mats, xs)])

    return apply
