"""Tree arithmetic on pytrees of tensors, built on optree.

Every tree operation in difopt goes through optree under one namespace, :data:`NAMESPACE`,
so containers registered for difopt do not leak into other libraries. The names are those of
TorchOpt's ``torchopt.pytree`` (which re-exports optree and adds tree arithmetic).
"""

from __future__ import annotations

import functools
import operator
from typing import Any, Callable

import optree
import torch
from optree import *  # noqa: F403  (TorchOpt re-exports optree from this module too)

__all__ = [
    *optree.__all__,
    "NAMESPACE",
    "tree_add",
    "tree_add_scalar_mul",
    "tree_flatten_as_tuple",
    "tree_matmul",
    "tree_mul",
    "tree_neg",
    "tree_pos",
    "tree_scalar_mul",
    "tree_sub",
    "tree_sub_scalar_mul",
    "tree_truediv",
    "tree_vdot_real",
    "tree_wait",
]

NAMESPACE = "difopt"
"""The optree namespace for containers registered by or for difopt."""


def tree_flatten_as_tuple(
    tree: Any,
    is_leaf: Callable[[Any], bool] | None = None,
    *,
    none_is_leaf: bool = False,
    namespace: str = NAMESPACE,
) -> tuple[tuple[Any, ...], optree.PyTreeSpec]:
    """Flatten ``tree`` and return its leaves as a tuple together with its treespec.

    Args:
        tree: the tree.
        is_leaf: a predicate marking nodes to keep whole, as in :func:`optree.tree_flatten`.
        none_is_leaf: count ``None`` as a leaf instead of an empty node.
        namespace: the optree namespace of custom nodes (difopt's by default).
    """
    leaves, spec = optree.tree_flatten(
        tree, is_leaf, none_is_leaf=none_is_leaf, namespace=namespace
    )
    return tuple(leaves), spec


def acc_add(*args: Any) -> Any:
    """``args[0] + args[1] + ...``."""
    return functools.reduce(operator.add, args)


def acc_mul(*args: Any) -> Any:
    """``args[0] * args[1] * ...``."""
    return functools.reduce(operator.mul, args)


def acc_matmul(*args: Any) -> Any:
    """``args[0] @ args[1] @ ...``."""
    return functools.reduce(operator.matmul, args)


def _map(fn: Callable[..., Any], tree: Any, *rests: Any) -> Any:
    return optree.tree_map(fn, tree, *rests, namespace=NAMESPACE)


def tree_pos(tree: Any) -> Any:
    """Apply unary ``+`` to every leaf."""
    return _map(operator.pos, tree)


def tree_neg(tree: Any) -> Any:
    """Negate every leaf."""
    return _map(operator.neg, tree)


def tree_add(*trees: Any) -> Any:
    """Sum trees of the same structure leaf by leaf."""
    if not trees:
        raise ValueError("tree_add() needs at least one tree")
    return _map(acc_add, *trees)


def tree_add_scalar_mul(tree_x: Any, tree_y: Any, alpha: Any = None) -> Any:
    """Return ``tree_x + alpha * tree_y`` (``alpha`` defaults to 1)."""
    if alpha is None:
        return _map(operator.add, tree_x, tree_y)
    return _map(lambda x, y: x + alpha * y, tree_x, tree_y)


def tree_sub(minuend_tree: Any, subtrahend_tree: Any) -> Any:
    """Return ``minuend_tree - subtrahend_tree`` leaf by leaf."""
    return _map(operator.sub, minuend_tree, subtrahend_tree)


def tree_sub_scalar_mul(tree_x: Any, tree_y: Any, alpha: Any = None) -> Any:
    """Return ``tree_x - alpha * tree_y`` (``alpha`` defaults to 1)."""
    if alpha is None:
        return _map(operator.sub, tree_x, tree_y)
    return _map(lambda x, y: x - alpha * y, tree_x, tree_y)


def tree_mul(*trees: Any) -> Any:
    """Multiply trees of the same structure leaf by leaf."""
    if not trees:
        raise ValueError("tree_mul() needs at least one tree")
    return _map(acc_mul, *trees)


def tree_matmul(*trees: Any) -> Any:
    """Matrix-multiply corresponding leaves, left to right."""
    if not trees:
        raise ValueError("tree_matmul() needs at least one tree")
    return _map(acc_matmul, *trees)


def tree_scalar_mul(scalar: Any, multiplicand_tree: Any) -> Any:
    """Multiply every leaf by ``scalar``."""
    return _map(lambda x: scalar * x, multiplicand_tree)


def tree_truediv(dividend_tree: Any, divisor_tree: Any) -> Any:
    """Divide leaf by leaf; the divisor may be a tree of the same structure or a scalar."""
    if isinstance(divisor_tree, (int, float)) or (
        torch.is_tensor(divisor_tree) and divisor_tree.ndim == 0
    ):
        return _map(lambda x: x / divisor_tree, dividend_tree)
    return _map(operator.truediv, dividend_tree, divisor_tree)


def _vdot_real(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x, y = x.reshape(-1), y.reshape(-1)
    if x.is_complex() or y.is_complex():
        return torch.vdot(x, y).real
    return torch.dot(x, y)


def tree_vdot_real(tree_x: Any, tree_y: Any) -> torch.Tensor:
    """Real part of the inner product ``<tree_x, tree_y>`` summed over all leaves."""
    leaves_x, spec_x = optree.tree_flatten(tree_x, namespace=NAMESPACE)
    leaves_y, spec_y = optree.tree_flatten(tree_y, namespace=NAMESPACE)
    if spec_x != spec_y:
        raise ValueError(f"tree_vdot_real(): 'tree_y' has structure {spec_y}, expected {spec_x}")
    if not leaves_x:
        return torch.zeros(())
    return functools.reduce(operator.add, map(_vdot_real, leaves_x, leaves_y))


def __getattr__(name: str) -> Any:
    # TorchOpt's pytree also offers the RPC helpers; they live in difopt-distributed.
    if name in ("tree_as_rref", "tree_to_here"):
        from difopt import registry

        plugin = registry.require(
            "difopt.distributed", "distributed", "difopt-distributed", f"difopt.pytree.{name}"
        )
        return getattr(plugin, name)
    raise AttributeError(f"module 'difopt.pytree' has no attribute {name!r}")


def tree_wait(future_tree: Any) -> Any:
    """Wait on every ``torch.futures.Future`` leaf and return the tree of results."""
    return _map(
        # torch._C.Future: Future.then() returns the C class, not torch.futures.Future.
        lambda f: f.wait() if isinstance(f, torch._C.Future) else f,
        future_tree,
    )
