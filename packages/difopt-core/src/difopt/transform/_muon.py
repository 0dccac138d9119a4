"""Muon: momentum orthogonalized by a Newton-Schulz iteration (Jordan et al., 2024).

For each 2-D parameter, the momentum (or its Nesterov look-ahead) is replaced by an
approximation of its "zeroth power" ``U V^T`` (``M = U S V^T``, the singular values set to
about 1) computed with a few matrix products, and scaled by a factor of the matrix's shape.
The values follow torch.optim.Muon, including its default of running the iteration in
bfloat16; ``ns_dtype=None`` runs it in the parameters' dtype, which a meta-gradient that must
be accurate (or a float64 gradcheck) needs.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import optree
import torch

from difopt import _leafwise as lw
from difopt import _validate as check
from difopt._factory import transformation
from difopt._shapes import param_shaped
from difopt.base import GradientTransformation
from difopt.pytree import NAMESPACE

__all__ = [
    "MUON_ADJUST_LR_FNS",
    "MUON_NS_COEFFICIENTS",
    "ScaleByMuonState",
    "newton_schulz",
    "scale_by_muon",
]

#: The quintic iteration's coefficients (a, b, c) of torch.optim.Muon and Keller Jordan's
#: reference: chosen for a steep slope at 0, so that 5 steps lift small singular values of a
#: normalized matrix quickly, into a band around 1 (up to about 1.2), rather than converging
#: to exactly 1.
MUON_NS_COEFFICIENTS = (3.4445, -4.775, 2.0315)

#: Accepted values of ``adjust_lr_fn``: the per-matrix factor on the orthogonalized update.
MUON_ADJUST_LR_FNS = (None, "original", "match_rms_adamw")


@param_shaped("mu")
class ScaleByMuonState(NamedTuple):
    """State of :func:`scale_by_muon`: the momentum buffer of each parameter."""

    mu: Any


def newton_schulz(
    x: torch.Tensor,
    coefficients: tuple[float, float, float] = MUON_NS_COEFFICIENTS,
    steps: int = 5,
    eps: float = 1e-7,
    dtype: torch.dtype | None = torch.bfloat16,
) -> torch.Tensor:
    """Approximately orthogonalize the matrix ``x`` with the iteration
    ``Y <- a Y + (b A + c A^2) Y``, ``A = Y Y^T``, from ``Y = x / max(||x||_F, eps)``.

    Differentiable. The iteration runs on the wide orientation of ``x`` (fewer rows than
    columns) so that ``A`` is the smaller Gram matrix, in ``dtype`` (``None``: ``x.dtype``);
    the result has ``x``'s shape and dtype. With ``coefficients=(1.5, -0.5, 0.0)`` it is the
    classical cubic Newton-Schulz iteration, which converges to ``U V^T`` for ``x = U S V^T``
    of full rank.
    """
    if x.ndim != 2:
        raise ValueError(f"newton_schulz takes a 2-D matrix, got shape {tuple(x.shape)}")
    a, b, c = coefficients
    y = x if dtype is None else x.to(dtype)
    tall = y.shape[0] > y.shape[1]
    if tall:
        y = y.T
    y = y / y.norm().clamp(min=eps)
    for _ in range(steps):
        gram = y @ y.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        y = torch.addmm(y, poly, y, beta=a)
    if tall:
        y = y.T
    return y.to(x.dtype)


def _shape_factor(shape: torch.Size, adjust_lr_fn: str | None) -> float:
    rows, cols = shape[0], shape[1]
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1.0, rows / cols))


def _named_leaves(tree: Any) -> list[tuple[str, torch.Tensor]]:
    """The tensor leaves of ``tree`` with their paths (``['w']``, ``[0]``), None leaves (a
    parameter hidden because its update is missing) left out."""
    paths, leaves, _ = optree.tree_flatten_with_path(tree, none_is_leaf=True, namespace=NAMESPACE)
    return [
        ("".join(f"[{k!r}]" for k in path), leaf)
        for path, leaf in zip(paths, leaves)
        if leaf is not None
    ]


def _check_matrices(tree: Any, what: str) -> None:
    for name, x in _named_leaves(tree):
        if x.ndim != 2:
            raise ValueError(
                f"scale_by_muon: {what}{name} has shape {tuple(x.shape)}; Muon updates 2-D "
                "matrices only. Optimize biases, norms, embeddings and other non-2-D "
                "parameters with another optimizer (for instance difopt.adamw, combined "
                "through difopt.transform.masked), as torch.optim.Muon asks."
            )


@transformation
def scale_by_muon(
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[float, float, float] = MUON_NS_COEFFICIENTS,
    ns_steps: int = 5,
    eps: float = 1e-7,
    adjust_lr_fn: str | None = None,
    *,
    ns_dtype: torch.dtype | None = torch.bfloat16,
    moment_requires_grad: bool = False,
) -> GradientTransformation:
    """Replace each matrix's momentum by its orthogonalization (Muon's direction).

    ``mu = momentum * mu + (1 - momentum) * g``; the direction is ``mu`` or, with
    ``nesterov``, ``(1 - momentum) * g + momentum * mu``; the output is
    ``newton_schulz(direction) * f(shape)`` with ``f = sqrt(max(1, rows / cols))``
    (``adjust_lr_fn=None`` or ``"original"``) or ``0.2 * sqrt(max(rows, cols))``
    (``"match_rms_adamw"``, which gives the update AdamW's typical RMS).

    Args:
        momentum: the momentum buffer's decay.
        nesterov: use the Nesterov look-ahead as the direction.
        ns_coefficients: ``(a, b, c)`` of the iteration (see :func:`newton_schulz`).
        ns_steps: number of iterations.
        eps: lower bound on the Frobenius norm the direction is divided by (> 0).
        adjust_lr_fn: the shape factor, ``None``/``"original"`` or ``"match_rms_adamw"``.
        ns_dtype: dtype of the iteration; ``torch.bfloat16`` as torch.optim.Muon, ``None``
            for the parameters' dtype (accurate meta-gradients).
        moment_requires_grad: create the momentum buffer with ``requires_grad=True``.

    Every parameter leaf must be a 2-D matrix (a :class:`ValueError` at ``init`` says which is
    not).

    References:
        Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024;
        Liu et al., "Muon is Scalable for LLM Training", 2025 (``match_rms_adamw``).
    """
    check.non_negative("momentum", momentum)
    check.boolean("nesterov", nesterov)
    if (
        not isinstance(ns_coefficients, (tuple, list))
        or len(ns_coefficients) != 3
        or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in ns_coefficients
        )
    ):
        raise ValueError(
            f"Invalid value for 'ns_coefficients': {ns_coefficients!r} (expected a tuple of "
            "3 finite floats (a, b, c))"
        )
    if isinstance(ns_steps, bool) or not isinstance(ns_steps, int) or ns_steps < 0:
        raise ValueError(f"Invalid value for 'ns_steps': {ns_steps!r} (expected an int >= 0)")
    check.positive("eps", eps)
    if adjust_lr_fn not in MUON_ADJUST_LR_FNS:
        raise ValueError(
            f"Invalid value for 'adjust_lr_fn': {adjust_lr_fn!r} (expected one of "
            f"{', '.join(repr(v) for v in MUON_ADJUST_LR_FNS)})"
        )
    if ns_dtype is not None and not (
        isinstance(ns_dtype, torch.dtype) and ns_dtype.is_floating_point
    ):
        raise TypeError(
            f"Invalid value for 'ns_dtype': {ns_dtype!r} (expected a floating-point "
            "torch.dtype, or None for the parameters' dtype)"
        )
    a, b, c = map(float, ns_coefficients)
    coefficients = (a, b, c)
    keep = 1.0 - momentum

    def init(params: Any) -> ScaleByMuonState:
        ps, spec = lw.flatten(params)
        _check_matrices(params, "params")
        return ScaleByMuonState(mu=lw.unflatten(spec, lw.zeros_like(ps, moment_requires_grad)))

    def update(updates: Any, state: Any, *, params: Any = None, inplace: bool = True) -> Any:
        _check_matrices(updates, "updates")
        gs, spec = lw.flatten(updates)
        bufs = lw.leaves(state.mu)
        if inplace:
            for buf, g in zip(bufs, gs):
                buf.lerp_(g, keep)
            mu = list(bufs)
        else:
            mu = [buf.lerp(g, keep) for buf, g in zip(bufs, gs)]
        directions = [g.lerp(m, momentum) for g, m in zip(gs, mu)] if nesterov else mu
        out = []
        for d in directions:
            ortho = newton_schulz(d, coefficients, ns_steps, eps, ns_dtype)
            factor = _shape_factor(d.shape, adjust_lr_fn)
            out.append(ortho if factor == 1.0 else ortho * factor)  # 1: wide or square
        return lw.unflatten(spec, out), ScaleByMuonState(lw.unflatten(spec, mu))

    return GradientTransformation(init, update)
