"""``scale_by_adam`` on the fused op, and the ``difopt.ops`` provider object.

The transformation keeps exactly the state of :func:`difopt.transform.scale_by_adam`
(``ScaleByAdamState(mu, nu, count)``, ``count`` a 0-d int64 CPU tensor), so the two are
interchangeable mid-training, and computes the same values. Its ``update`` is one fused
kernel call for the whole list of tensors; its ``apply_scaled`` (see
:class:`difopt.base.FusedApplyTransformation`) also folds the learning-rate step into the
parameters, so a classic optimizer step is a single kernel call. Where the op cannot run
(unsupported device or dtype, non-contiguous state, inside ``torch.func`` transforms) it
warns once and runs the pure PyTorch transformation instead.
"""

from __future__ import annotations

from typing import Any, Sequence

import optree
import torch

from difopt import registry
from difopt import transform as pure_transforms
from difopt.base import FusedApplyTransformation, GradientTransformation, transformation
from difopt.pytree import NAMESPACE
from difopt.transform import ScaleByAdamState
from difopt_accel import _ops

__all__ = ["AdamOps", "is_available", "ops", "scale_by_adam"]

_DTYPES = {
    "cpu": (torch.float32, torch.float64),
    "cuda": (torch.float16, torch.bfloat16, torch.float32, torch.float64),
}


def is_available(device: Any = None) -> bool:
    """Whether the fused Adam op can run on ``device`` (default: the CPU).

    Args:
        device: a ``torch.device`` or its string (``"cpu"``, ``"cuda"``, ``"cuda:1"``).

    Returns:
        True for the CPU; for CUDA, when this build has the CUDA kernels and a GPU is present.
    """
    dev = torch.device("cpu" if device is None else device)
    if dev.type == "cuda":
        return _ops.has_kernel("cuda") and torch.cuda.is_available()
    return _ops.has_kernel(dev.type)


def _why_not_fusable(
    grads: Sequence[Any], mu: Sequence[Any], nu: Sequence[Any], params: Sequence[Any] | None
) -> str | None:
    """None when the fused op accepts these lists, else why not (for a one-time warning)."""
    if not grads:
        return "empty"
    if torch._C._are_functorch_transforms_active():
        return "inside torch.func transforms (vmap/grad have no rule for the fused op)"
    first = grads[0]
    if not torch.is_tensor(first):
        return "updates are not tensors"
    device = first.device
    if not is_available(device):
        return f"the fused op is not available for device {device}"
    dtypes = _DTYPES[device.type]
    lists = (grads, mu, nu) if params is None else (grads, mu, nu, params)
    if any(len(xs) != len(grads) for xs in lists):
        return "state and updates differ in length"
    for i, g in enumerate(grads):
        if not torch.is_tensor(g) or g.device != device or g.dtype not in dtypes:
            return f"tensor dtype/device {getattr(g, 'dtype', None)}/{getattr(g, 'device', None)} is not supported"
        for xs in lists[1:]:
            x = xs[i]
            if not torch.is_tensor(x) or x.dtype != g.dtype or x.device != device:
                return "state or parameters differ in dtype or device from the updates"
            if x.shape != g.shape or not x.is_contiguous():
                return "state or parameters are not contiguous or differ in shape"
    return None


def _fallback_warning(reason: str) -> None:
    if reason != "empty":
        registry.warn_once(
            f"difopt-accel-fallback:{reason}",
            f"difopt-accel: the fused Adam op is not used ({reason}); using the pure PyTorch "
            "implementation, which computes the same values.",
        )


def _on_graph(*lists: Sequence[torch.Tensor]) -> bool:
    return torch.is_grad_enabled() and any(x.requires_grad for xs in lists for x in xs)


def _contiguous(xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [x if x.is_contiguous() else x.contiguous() for x in xs]


@transformation
def scale_by_adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    moment_requires_grad: bool = False,
) -> GradientTransformation:
    """:func:`difopt.transform.scale_by_adam` computed by the fused op.

    Same arguments, state and values as the pure transformation. With ``inplace=True`` and no
    autograd graph to keep, the moments and step count are updated in place by one kernel
    call; otherwise the step is one differentiable op call whose backward is exact.

    Args:
        b1: decay rate of the first moment.
        b2: decay rate of the second moment.
        eps: term added to the denominator outside the square root.
        eps_root: term added inside the square root.
        moment_requires_grad: create the moments with ``requires_grad=True``.

    Returns:
        A :class:`difopt.base.FusedApplyTransformation`.

    Examples:
        >>> import torch, difopt, difopt_accel
        >>> opt = difopt.chain(difopt_accel.scale_by_adam(), difopt.transform.scale(-0.1))
        >>> w = torch.ones(3)
        >>> g = torch.full((3,), 2.0)
        >>> updates, state = opt.update(g, opt.init(w))
        >>> updates
        tensor([-0.1000, -0.1000, -0.1000])
    """
    pure = pure_transforms.scale_by_adam(b1, b2, eps, eps_root, moment_requires_grad)

    def init(params: Any) -> ScaleByAdamState:
        return pure.init(params)

    def update(
        updates: Any, state: Any, *, params: Any = None, inplace: bool = True
    ) -> tuple[Any, ScaleByAdamState]:
        gs, spec = optree.tree_flatten(updates, namespace=NAMESPACE)
        mu = optree.tree_leaves(state.mu, namespace=NAMESPACE)
        nu = optree.tree_leaves(state.nu, namespace=NAMESPACE)
        reason = _why_not_fusable(gs, mu, nu, None)
        if reason is not None:
            _fallback_warning(reason)
            return pure.update(updates, state, params=params, inplace=inplace)
        gs = _contiguous(gs)
        count = state.count
        step = count + 1
        if inplace and not _on_graph(gs, mu, nu):
            out = [torch.empty_like(g) for g in gs]
            _ops.adam_(
                out,
                mu,
                nu,
                gs,
                step,
                factor=1.0,
                accumulate=False,
                b1=b1,
                b2=b2,
                eps=eps,
                eps_root=eps_root,
            )
            count.add_(1)
            new_state = state
        else:
            out, mu_new, nu_new = _ops.adam(
                gs, mu, nu, step, factor=1.0, b1=b1, b2=b2, eps=eps, eps_root=eps_root
            )
            new_state = ScaleByAdamState(
                optree.tree_unflatten(spec, mu_new), optree.tree_unflatten(spec, nu_new), step
            )
        return optree.tree_unflatten(spec, out), new_state

    def apply_scaled(
        updates: Any, state: Any, *, params: Any, factor: float, inplace: bool
    ) -> tuple[list[torch.Tensor], ScaleByAdamState] | None:
        gs, spec = optree.tree_flatten(updates, namespace=NAMESPACE)
        ps = optree.tree_leaves(params, namespace=NAMESPACE)
        mu = optree.tree_leaves(state.mu, namespace=NAMESPACE)
        nu = optree.tree_leaves(state.nu, namespace=NAMESPACE)
        if _why_not_fusable(gs, mu, nu, ps) is not None:
            return None  # the caller falls back to update(), which warns
        gs = _contiguous(gs)
        count = state.count
        step = count + 1
        if inplace and not _on_graph(gs, mu, nu, ps):
            _ops.adam_(
                ps,
                mu,
                nu,
                gs,
                step,
                factor=factor,
                accumulate=True,
                b1=b1,
                b2=b2,
                eps=eps,
                eps_root=eps_root,
            )
            count.add_(1)
            return list(ps), state
        new_params, mu_new, nu_new = _ops.adam(
            gs, mu, nu, step, params=ps, factor=factor, b1=b1, b2=b2, eps=eps, eps_root=eps_root
        )
        new_state = ScaleByAdamState(
            optree.tree_unflatten(spec, mu_new), optree.tree_unflatten(spec, nu_new), step
        )
        return new_params, new_state

    return FusedApplyTransformation(init, update, apply_scaled)


class AdamOps:
    """The ``difopt.ops`` provider of the fused Adam op (entry point ``adam``).

    difopt-core's ``scale_by_accelerated_adam`` (``use_accelerated_op=True``) asks the registry
    for this object and calls :meth:`is_available` and :meth:`scale_by_adam`.
    """

    DIFOPT_PLUGIN_API = "1.0"

    def is_available(self, device: Any = None) -> bool:
        """See :func:`difopt_accel.is_available`."""
        return is_available(device)

    def scale_by_adam(
        self,
        b1: float = 0.9,
        b2: float = 0.999,
        eps: float = 1e-8,
        eps_root: float = 0.0,
        moment_requires_grad: bool = False,
    ) -> GradientTransformation:
        """See :func:`difopt_accel.scale_by_adam`."""
        return scale_by_adam(b1, b2, eps, eps_root, moment_requires_grad)

    def __repr__(self) -> str:
        return "difopt_accel.ops"


ops = AdamOps()
