"""Pytrees of remote references (TorchOpt's ``tree_as_rref`` / ``tree_to_here``)."""

from __future__ import annotations

from typing import Any

import optree
import torch.distributed.rpc as rpc

from difopt.pytree import NAMESPACE
from difopt_distributed._world import _require_rpc

__all__ = ["tree_as_rref", "tree_local_value", "tree_to_here"]


def tree_as_rref(tree: Any) -> Any:
    """Wrap every leaf of ``tree`` in an :class:`torch.distributed.rpc.RRef` owned here.

    Raises:
        RpcNotInitializedError: RPC is not running.
    """
    _require_rpc("tree_as_rref()")
    return optree.tree_map(rpc.RRef, tree, namespace=NAMESPACE)


def _check_rref(leaf: Any) -> Any:
    if not isinstance(leaf, rpc.RRef):
        raise TypeError(f"expected a tree of RRef leaves, found a {type(leaf).__name__}")
    return leaf


def tree_to_here(rref_tree: Any, timeout: float = rpc.api.UNSET_RPC_TIMEOUT) -> Any:
    """Fetch the value of every :class:`~torch.distributed.rpc.RRef` leaf to this process.

    Args:
        rref_tree: a pytree whose leaves are RRefs.
        timeout: seconds each fetch may take; default the world's RPC timeout.

    Raises:
        TypeError: a leaf is not an RRef.
    """
    _require_rpc("tree_to_here()")
    return optree.tree_map(
        lambda r: _check_rref(r).to_here(timeout=timeout), rref_tree, namespace=NAMESPACE
    )


def tree_local_value(rref_tree: Any) -> Any:
    """Return the local values of a tree of RRefs owned by this process.

    Raises:
        TypeError: a leaf is not an RRef.
    """
    _require_rpc("tree_local_value()")
    return optree.tree_map(lambda r: _check_rref(r).local_value(), rref_tree, namespace=NAMESPACE)
