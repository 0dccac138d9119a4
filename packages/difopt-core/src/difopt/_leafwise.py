"""Element-wise arithmetic on flat lists of tensors (the leaves of a pytree).

Every transformation works on the flattened leaves of its pytree. Outside of ``torch.func``
transforms the lists go through ``torch._foreach_*`` kernels (one dispatch for the whole list,
differentiable), inside ``vmap``/``grad`` (which have no batching rule for them) through a
per-tensor loop. Functions ending in ``_`` write into their first argument; the others
return fresh tensors and never modify their inputs.
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import optree
import torch

from difopt.pytree import NAMESPACE

Tensors = Union[list[torch.Tensor], tuple[torch.Tensor, ...]]  # what torch._foreach_* accepts
Scalar = Union[float, int, torch.Tensor]


def foreach_ok(xs: Tensors) -> bool:
    """Whether the ``torch._foreach_*`` kernels may be used for ``xs``."""
    return len(xs) > 0 and not torch._C._are_functorch_transforms_active()


# The trees difopt flattens on every step are mostly a flat list or tuple of tensors (the
# parameters of an optimizer, its gradients, a moment). optree spends about 0.15 us per leaf
# on them; for these the leaves are the sequence itself and the spec depends only on the
# container and its length, so they take a shortcut (exact types only: a subclass of list or
# tuple, such as a NamedTuple, or a tensor subclass, may be a registered node).
_SEQUENCES = (list, tuple)
_TENSOR_TYPES = frozenset({torch.Tensor, torch.nn.Parameter})
_TENSOR_OR_NONE_TYPES = _TENSOR_TYPES | {type(None)}


# Specs by (tuple?, length, none_is_leaf). A plain dict, not functools.lru_cache, which
# torch.compile warns about.
_SPECS: dict[tuple[bool, int, bool], optree.PyTreeSpec] = {}


def _sequence_spec(is_tuple: bool, length: int, none_is_leaf: bool) -> optree.PyTreeSpec:
    key = (is_tuple, length, none_is_leaf)
    spec = _SPECS.get(key)
    if spec is None:
        if len(_SPECS) >= 1024:
            _SPECS.clear()
        placeholder: Any = (0,) * length if is_tuple else [0] * length
        spec = optree.tree_structure(placeholder, none_is_leaf=none_is_leaf, namespace=NAMESPACE)
        _SPECS[key] = spec
    return spec


def _flat_sequence(tree: Any, leaf_types: frozenset[type]) -> bool:
    # Not while torch.compile traces: Dynamo runs optree through its own Python version,
    # whose specs must not land in the cache that eager calls read.
    return (
        type(tree) in _SEQUENCES
        and set(map(type, tree)) <= leaf_types
        and not torch.compiler.is_compiling()
    )


def flatten(tree: Any) -> tuple[list[Any], optree.PyTreeSpec]:
    """The leaves of ``tree`` as a list and its structure (difopt's optree namespace; a flat
    list or tuple of tensors takes a fast path)."""
    if _flat_sequence(tree, _TENSOR_TYPES):
        return list(tree), _sequence_spec(type(tree) is tuple, len(tree), False)
    return optree.tree_flatten(tree, namespace=NAMESPACE)


def flatten_with_none(tree: Any) -> tuple[list[Any], optree.PyTreeSpec]:
    """Like :func:`flatten`, with ``None`` (an update that is missing) as a leaf."""
    if _flat_sequence(tree, _TENSOR_OR_NONE_TYPES):
        return list(tree), _sequence_spec(type(tree) is tuple, len(tree), True)
    return optree.tree_flatten(tree, none_is_leaf=True, namespace=NAMESPACE)


def leaves(tree: Any) -> list[Any]:
    """The leaves of ``tree`` as a list (``None`` is an empty node, not a leaf)."""
    if _flat_sequence(tree, _TENSOR_TYPES):
        return list(tree)
    return optree.tree_leaves(tree, namespace=NAMESPACE)


def unflatten(spec: optree.PyTreeSpec, xs: Sequence[Any]) -> Any:
    """The tree of structure ``spec`` (from :func:`flatten`) with leaves ``xs``."""
    return optree.tree_unflatten(spec, xs)


def zeros_like(xs: Tensors, requires_grad: bool = False) -> list[torch.Tensor]:
    return full_like(xs, 0.0, requires_grad)


def full_like(xs: Tensors, value: float, requires_grad: bool = False) -> list[torch.Tensor]:
    # requires_grad_ is refused inside torch.func transforms; there it is not needed.
    if requires_grad and not torch._C._are_functorch_transforms_active():
        return [torch.full_like(x, value).requires_grad_() for x in xs]
    return [torch.full_like(x, value) for x in xs]


def mul(xs: Tensors, s: Scalar) -> list[torch.Tensor]:
    # torch 2.13's backward of _foreach_mul(list, 0-d tensor) fails for a scalar that
    # requires grad over more than one tensor ("inconsistent range for TensorList output"):
    # a learnable learning rate takes the per-tensor loop.
    if foreach_ok(xs) and not (torch.is_tensor(s) and s.requires_grad and torch.is_grad_enabled()):
        return list(torch._foreach_mul(xs, s))
    return [x * s for x in xs]


def mul_(xs: Tensors, s: Scalar) -> Tensors:
    if foreach_ok(xs):
        torch._foreach_mul_(xs, s)
    else:
        for x in xs:
            x.mul_(s)
    return xs


def mul_t(xs: Tensors, ys: Tensors) -> list[torch.Tensor]:
    if foreach_ok(xs):
        return list(torch._foreach_mul(xs, ys))
    return [x * y for x, y in zip(xs, ys)]


def add(xs: Tensors, ys: Tensors, alpha: Scalar = 1.0) -> list[torch.Tensor]:
    """``xs + alpha * ys``."""
    if foreach_ok(xs) and not torch.is_tensor(alpha):
        return list(torch._foreach_add(xs, ys, alpha=alpha))
    return [x + alpha * y for x, y in zip(xs, ys)]


def add_(xs: Tensors, ys: Tensors, alpha: Scalar = 1.0) -> Tensors:
    if foreach_ok(xs) and not torch.is_tensor(alpha):
        torch._foreach_add_(xs, ys, alpha=alpha)
    else:
        for x, y in zip(xs, ys):
            x.add_(alpha * y)
    return xs


def add_scalar_(xs: Tensors, s: Scalar) -> Tensors:
    if foreach_ok(xs):
        torch._foreach_add_(xs, s)
    else:
        for x in xs:
            x.add_(s)
    return xs


def add_scalar(xs: Tensors, s: Scalar) -> list[torch.Tensor]:
    if foreach_ok(xs):
        return list(torch._foreach_add(xs, s))
    return [x + s for x in xs]


def neg(xs: Tensors) -> list[torch.Tensor]:
    if foreach_ok(xs):
        return list(torch._foreach_neg(xs))
    return [-x for x in xs]


def on_graph(xs: Tensors) -> bool:
    """Whether an operation on ``xs`` is recorded (autograd or a torch.func transform)."""
    return torch._C._are_functorch_transforms_active() or (
        torch.is_grad_enabled() and any(x.requires_grad for x in xs)
    )


def _sqrt_with_zero_subgradient(x: torch.Tensor) -> torch.Tensor:
    positive = x > 0
    return torch.where(positive, x, 1.0).sqrt() * positive


class _ForeachSqrt(torch.autograd.Function):
    """``sqrt`` of a list in one kernel call, with derivative 0 where the output is 0."""

    @staticmethod
    def forward(ctx: Any, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = tuple(torch._foreach_sqrt(xs))
        ctx.save_for_backward(*out)
        return out

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(torch.where(o > 0, g / (2 * o), 0.0) for g, o in zip(grads, ctx.saved_tensors))


def sqrt(xs: Tensors, positive: bool = False) -> list[torch.Tensor]:
    """Element-wise square root whose derivative at 0 is 0 instead of infinite.

    A second moment is exactly 0 only where every update so far was 0, and there its own
    derivative is 0, so the chain rule meets ``inf * 0 = nan`` (e.g. meta-gradients of Adam
    through a ReLU net's dead units). Taking the subgradient 0 at 0, as ``abs`` does, keeps
    those meta-gradients finite and exact elsewhere. Values are unchanged. With
    ``positive=True`` (the caller guarantees ``xs > 0``, e.g. ``eps_root`` was added) the
    plain kernel and its native backward are used.
    """
    if positive and foreach_ok(xs):
        return list(torch._foreach_sqrt(xs))
    if torch._C._are_functorch_transforms_active():
        return [_sqrt_with_zero_subgradient(x) for x in xs]
    if on_graph(xs):
        return list(_ForeachSqrt.apply(*xs))
    if foreach_ok(xs):
        return list(torch._foreach_sqrt(xs))
    return [x.sqrt() for x in xs]


def div(xs: Tensors, ys: Tensors) -> list[torch.Tensor]:
    if foreach_ok(xs):
        return list(torch._foreach_div(xs, ys))
    return [x / y for x, y in zip(xs, ys)]


def ema(ms: Tensors, xs: Tensors, decay: float, inplace: bool) -> Tensors:
    """``decay * m + (1 - decay) * x``, written into ``ms`` when ``inplace``."""
    if inplace:
        if foreach_ok(ms):
            torch._foreach_lerp_(ms, xs, 1.0 - decay)
        else:
            for m, x in zip(ms, xs):
                m.lerp_(x, 1.0 - decay)
        return ms
    if foreach_ok(ms):
        return list(torch._foreach_lerp(ms, xs, 1.0 - decay))
    return [m.lerp(x, 1.0 - decay) for m, x in zip(ms, xs)]


def ema_sq(vs: Tensors, xs: Tensors, decay: float, inplace: bool) -> Tensors:
    """``decay * v + (1 - decay) * x * x``, written into ``vs`` when ``inplace``."""
    if inplace:
        if foreach_ok(vs):
            torch._foreach_mul_(vs, decay)
            torch._foreach_addcmul_(vs, xs, xs, 1.0 - decay)
        else:
            for v, x in zip(vs, xs):
                v.mul_(decay).addcmul_(x, x, value=1.0 - decay)
        return vs
    if foreach_ok(vs):
        out = torch._foreach_mul(vs, decay)
        if on_graph(vs) or on_graph(xs):
            return list(torch._foreach_addcmul(out, xs, xs, 1.0 - decay))
        # Nothing recorded: ``out`` is this call's own buffer; one full-size allocation fewer
        # (each costs page faults at the sizes of a network), the same values.
        torch._foreach_addcmul_(out, xs, xs, 1.0 - decay)
        return list(out)
    return [v * decay + (1.0 - decay) * x * x for v, x in zip(vs, xs)]


def assign(dst: Tensors, src: Tensors, inplace: bool) -> Tensors:
    """Return ``src`` as the new value of ``dst``: copied into it when ``inplace``."""
    if not inplace:
        return list(src)
    if foreach_ok(dst):
        torch._foreach_copy_(dst, src)
    else:
        for d, s in zip(dst, src):
            d.copy_(s)
    return dst
