"""Argument checks shared by transformations and optimizers.

Each check names the argument and the accepted values, so bad hyper-parameters fail when the
optimizer is built, before any state exists.
"""

from __future__ import annotations

import math
from typing import Any

import optree
import torch

from difopt.pytree import NAMESPACE


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def non_negative(name: str, value: Any) -> None:
    if not _is_number(value) or math.isnan(value) or value < 0.0 or math.isinf(value):
        raise ValueError(f"Invalid value for '{name}': {value!r} (expected a finite float >= 0)")


def finite(name: str, value: Any) -> None:
    if not _is_number(value) or math.isnan(value) or math.isinf(value):
        raise ValueError(f"Invalid value for '{name}': {value!r} (expected a finite float)")


def positive(name: str, value: Any) -> None:
    if not _is_number(value) or math.isnan(value) or value <= 0.0 or math.isinf(value):
        raise ValueError(f"Invalid value for '{name}': {value!r} (expected a finite float > 0)")


def unit_interval(name: str, value: Any) -> None:
    """``0 <= value < 1``: decay rates such as Adam's betas."""
    if not _is_number(value) or math.isnan(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"Invalid value for '{name}': {value!r} (expected a float in [0, 1))")


def closed_unit_interval(name: str, value: Any) -> None:
    if not _is_number(value) or math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"Invalid value for '{name}': {value!r} (expected a float in [0, 1])")


def is_scalar_learning_rate(value: Any) -> bool:
    """Whether ``value`` has the form of one learning rate (a number, a schedule or a 0-d
    tensor) rather than of a per-parameter tree; its value is not checked."""
    return (
        callable(value)
        or _is_number(value)
        or isinstance(value, bool)
        or (isinstance(value, torch.Tensor) and value.ndim == 0)
    )


def _learning_rate_tree(name: str, value: Any) -> None:
    """A tree of floating-point tensors, each finite and >= 0 (one learning rate per
    parameter, or per element). Its structure and shapes are checked against the parameters
    by :func:`difopt.transform.scale_by_neg_lr` when it meets them."""
    leaves = optree.tree_leaves(value, none_is_leaf=True, namespace=NAMESPACE)
    if not leaves:
        raise ValueError(
            f"Invalid value for '{name}': {value!r} is an empty tree (expected one learning "
            "rate per parameter)"
        )
    for i, leaf in enumerate(leaves):
        if not (isinstance(leaf, torch.Tensor) and leaf.is_floating_point()):
            raise ValueError(
                f"Invalid value for '{name}': leaf {i} of the per-parameter tree is {leaf!r} "
                "(expected a floating-point tensor: 0-d, or broadcastable to its parameter)"
            )
        if leaf.numel() == 0 or torch.compiler.is_compiling():
            continue
        detached = leaf.detach()
        if not bool(torch.isfinite(detached).all()) or float(detached.min()) < 0.0:
            raise ValueError(
                f"Invalid value for '{name}': leaf {i} of the per-parameter tree holds a "
                "negative or non-finite value (expected finite values >= 0)"
            )


def learning_rate(name: str, value: Any, per_parameter: bool = False) -> None:
    """A float, a schedule, or a 0-d floating-point tensor (read at every step, so that a
    torch.optim scheduler's in-place ``fill_`` takes effect without rebuilding anything, and a
    compiled step takes it as an input instead of recompiling for each value).

    With ``per_parameter`` (the functional and meta forms of SGD and Adam), also a tree of
    floating-point tensors shaped like the parameters' tree (Meta-SGD's learned rates)."""
    if per_parameter and (
        (isinstance(value, torch.Tensor) and value.ndim > 0)
        or not optree.tree_is_leaf(value, none_is_leaf=True, namespace=NAMESPACE)
    ):
        _learning_rate_tree(name, value)
        return
    if callable(value):
        return
    if isinstance(value, torch.Tensor):
        ok = value.ndim == 0 and value.is_floating_point()
        if ok and not torch.compiler.is_compiling():
            v = float(value.detach())
            ok = not (math.isnan(v) or math.isinf(v) or v < 0.0)
        if ok:
            return
    elif _is_number(value) and not (math.isnan(value) or math.isinf(value) or value < 0.0):
        return
    raise ValueError(
        f"Invalid value for '{name}': {value!r} (expected a finite float >= 0, a 0-d "
        "floating-point tensor holding one, or a schedule: a callable of the step count"
        + ("; or a tree of floating-point tensors, one per parameter)" if per_parameter else ")")
    )


def betas(name: str, value: Any, n: int = 2) -> None:
    if not isinstance(value, (tuple, list)) or len(value) != n:
        raise ValueError(f"Invalid value for '{name}': {value!r} (expected a tuple of {n} floats)")
    for i, b in enumerate(value):
        unit_interval(f"{name}[{i}]", b)


def numpy_bool(value: Any) -> bool:
    """Whether ``value`` is a numpy bool scalar (checked without importing numpy)."""
    return type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")


def boolean(name: str, value: Any) -> None:
    """A bool, or what TorchOpt's truth tests take for one: 0 or 1, a numpy bool. (Not any
    truthy value: the string "False" is true.)"""
    if isinstance(value, bool) or (type(value) is int and value in (0, 1)) or numpy_bool(value):
        return
    raise TypeError(f"Invalid value for '{name}': {value!r} (expected a bool)")


class InvalidLossError(ValueError, RuntimeError):
    """A loss a differentiable step cannot differentiate (not a scalar, or not on the graph).

    A ``ValueError`` (a bad argument) that is also a ``RuntimeError``, which is what TorchOpt's
    optimizers raise there (from ``torch.autograd.grad``): either ``except`` catches it.
    """


def scalar_loss(loss: Any, *, requires_grad: bool = True) -> None:
    """``loss`` is a one-element tensor (that requires grad, unless told otherwise)."""
    if not torch.is_tensor(loss) or loss.numel() != 1:
        shape = tuple(loss.shape) if torch.is_tensor(loss) else type(loss).__name__
        raise InvalidLossError(f"'loss' must be a scalar tensor, got {shape}")
    if requires_grad and not loss.requires_grad:
        raise InvalidLossError("'loss' does not require grad: it does not depend on the parameters")
