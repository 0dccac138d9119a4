"""The ``zero_order`` decorator: evolution-strategies gradients of a scalar function.

For a function ``f`` and a noise ``eps ~ distribution`` (standard normal in the usual case),
the Gaussian-smoothed objective ``f_sigma(theta) = E[f(theta + sigma * eps)]`` has the gradient
``E[f(theta + sigma * eps) * eps] / sigma`` (Stein's lemma), which needs only values of ``f``.
The decorated function returns ``f(theta)`` itself; back-propagating through it yields a Monte
Carlo estimate of that gradient with ``num_samples`` draws:

``'naive'``
    ``1/(n sigma) sum_k f(theta + sigma eps_k) eps_k``.
``'forward'``
    ``1/(n sigma) sum_k [f(theta + sigma eps_k) - f(theta)] eps_k``: the baseline ``f(theta)``
    (the forward value, computed anyway) removes the term ``f(theta) eps_k`` whose variance
    dominates the naive estimate; same mean, ``n`` evaluations.
``'antithetic'``
    ``1/(2 n sigma) sum_k [f(theta + sigma eps_k) - f(theta - sigma eps_k)] eps_k``: mirrored
    samples cancel every even-order term of ``f``; ``2 n`` evaluations.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Literal, Sequence

import optree
import torch

from difopt.pytree import NAMESPACE
from difopt_zeroorder._noise import NoiseSource

__all__ = ["METHODS", "Method", "ZeroOrderOptions", "zero_order"]

Method = Literal["naive", "forward", "antithetic"]
METHODS: tuple[str, ...] = ("naive", "forward", "antithetic")
"""The estimators ``method=`` accepts (:func:`zero_order`, the class keyword of
:class:`difopt_zeroorder.ZeroOrderGradientModule`), the values of :data:`Method`."""


@dataclasses.dataclass(frozen=True)
class ZeroOrderOptions:
    """The validated settings of one zero-order estimator (see :func:`zero_order`)."""

    method: str = "naive"
    num_samples: int = 1
    sigma: float = 1.0
    vectorize: bool = False
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or self.method not in METHODS:
            raise ValueError(
                f"Invalid value for 'method': {self.method!r} (expected one of "
                f"{', '.join(repr(m) for m in METHODS)})"
            )
        if not _is_int(self.num_samples) or self.num_samples < 1:
            raise ValueError(
                f"Invalid value for 'num_samples': {self.num_samples!r} (expected an int >= 1)"
            )
        if (
            not isinstance(self.sigma, (int, float))
            or isinstance(self.sigma, bool)
            or not math.isfinite(self.sigma)
            or self.sigma <= 0
        ):
            raise ValueError(
                f"Invalid value for 'sigma': {self.sigma!r} (expected a finite float > 0)"
            )
        if not isinstance(self.vectorize, bool):
            raise TypeError(f"'vectorize' must be a bool, got {type(self.vectorize).__name__}")
        if self.chunk_size is not None:
            if not _is_int(self.chunk_size) or self.chunk_size < 1:
                raise ValueError(
                    f"Invalid value for 'chunk_size': {self.chunk_size!r} "
                    "(expected None or an int >= 1)"
                )
            if not self.vectorize:
                raise ValueError(
                    "'chunk_size' applies to vectorized evaluation only: pass vectorize=True "
                    "or leave chunk_size=None"
                )


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _normalize_argnums(argnums: Any) -> tuple[int, ...]:
    if _is_int(argnums):
        return (argnums,)
    if (
        isinstance(argnums, tuple)
        and argnums
        and all(_is_int(a) for a in argnums)
        and len(set(argnums)) == len(argnums)
    ):
        return argnums
    raise ValueError(
        f"Invalid value for 'argnums': {argnums!r} (expected an int or a non-empty tuple of "
        "distinct ints)"
    )


def _check_output(value: Any, where: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"the function decorated with zero_order must return a scalar tensor; {where} it "
            f"returned {type(value).__name__}"
        )
    if value.ndim != 0:
        raise ValueError(
            "the function decorated with zero_order must return a scalar (0-dim) tensor; "
            f"{where} it returned shape {tuple(value.shape)} (reduce it, e.g. with .sum() or "
            ".mean())"
        )
    if not value.is_floating_point():
        raise TypeError(
            "the function decorated with zero_order must return a floating-point tensor; "
            f"{where} it returned dtype {value.dtype}"
        )
    return value


@dataclasses.dataclass
class _Call:
    """One call of the decorated function: how to rebuild its arguments from tensors."""

    fn: Callable[..., torch.Tensor]
    argnums: tuple[int, ...]
    diff_spec: optree.PyTreeSpec
    rest_spec: optree.PyTreeSpec
    rest_leaves: list[Any]  # the non-differentiated leaves; tensors replaced by None
    tensor_slots: list[int]  # where in rest_leaves the saved tensors go
    options: ZeroOrderOptions
    noise: NoiseSource

    def evaluate(self, diff_leaves: Sequence[torch.Tensor], tensors: Sequence[Any]) -> Any:
        leaves = list(self.rest_leaves)
        for slot, tensor in zip(self.tensor_slots, tensors):
            leaves[slot] = tensor
        args, kwargs = optree.tree_unflatten(self.rest_spec, leaves)
        args = list(args)
        diff_trees = optree.tree_unflatten(self.diff_spec, list(diff_leaves))
        for argnum, tree in zip(self.argnums, diff_trees):
            args[argnum] = tree
        return self.fn(*args, **kwargs)


class _ZeroOrderFunction(torch.autograd.Function):
    """``f(theta)`` forward; the evolution-strategies estimate as its backward."""

    @staticmethod
    def forward(ctx: Any, call: _Call, n_diff: int, *tensors: torch.Tensor) -> torch.Tensor:
        diff_leaves, others = tensors[:n_diff], tensors[n_diff:]
        output = _check_output(call.evaluate(diff_leaves, others), "at the given arguments")
        ctx.call, ctx.n_diff = call, n_diff
        ctx.save_for_backward(*tensors, output)
        return output

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Any, ...]:
        *tensors, output = ctx.saved_tensors
        call: _Call = ctx.call
        diff_leaves, others = tensors[: ctx.n_diff], tensors[ctx.n_diff :]
        grads = estimate(call, diff_leaves, others, output)
        needs = ctx.needs_input_grad[2 : 2 + ctx.n_diff]
        out: list[Any] = [None, None]
        out += [grad_output * g if need else None for g, need in zip(grads, needs)]
        out += [None] * len(others)
        return tuple(out)


def _evaluate_points(
    call: _Call, points: Sequence[torch.Tensor], others: Sequence[Any]
) -> torch.Tensor:
    """``f`` at every row of the batched perturbed leaves ``points``; shape ``(rows,)``."""
    if call.options.vectorize:
        try:
            return torch.func.vmap(
                lambda *leaves: call.evaluate(leaves, others),
                randomness="different",
                chunk_size=call.options.chunk_size,
            )(*points)
        except (RuntimeError, ValueError) as exc:
            raise RuntimeError(
                "zero_order(vectorize=True) could not evaluate the function under "
                "torch.func.vmap; a function that calls .item(), branches on tensor values or "
                "writes in place into its inputs cannot be vectorized: use vectorize=False "
                f"(cause: {type(exc).__name__}: {exc})"
            ) from exc
    rows = points[0].shape[0]
    values = [
        _check_output(call.evaluate([p[k] for p in points], others), f"at perturbed sample {k}")
        for k in range(rows)
    ]
    return torch.stack(values)


def estimate(
    call: _Call,
    diff_leaves: Sequence[torch.Tensor],
    others: Sequence[Any],
    output: torch.Tensor,
) -> list[torch.Tensor]:
    """The evolution-strategies estimate of the gradient, one tensor per differentiated leaf."""
    options = call.options
    n, sigma = options.num_samples, options.sigma
    with torch.no_grad():
        noises = call.noise.draw(diff_leaves, n)
        # All perturbed points at once (one fused add per leaf): the loop then only indexes
        # rows, and vmap maps over them directly.
        if options.method == "antithetic":
            points = [
                torch.cat([torch.add(p, e, alpha=sigma), torch.add(p, e, alpha=-sigma)])
                for p, e in zip(diff_leaves, noises)
            ]
            values = _evaluate_points(call, points, others)
            weights = (values[:n] - values[n:]) / (2.0 * n * sigma)
        else:
            points = [torch.add(p, e, alpha=sigma) for p, e in zip(diff_leaves, noises)]
            values = _evaluate_points(call, points, others)
            if options.method == "forward":
                values = values - output
            weights = values / (n * sigma)
        del points
        return [torch.tensordot(weights.to(e.dtype), e, dims=1) for e in noises]


def _make_call(
    fn: Callable[..., torch.Tensor],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    argnums: tuple[int, ...],
    options: ZeroOrderOptions,
    noise: NoiseSource,
) -> tuple[_Call, list[torch.Tensor], list[torch.Tensor]]:
    positions = []
    for argnum in argnums:
        if not -len(args) <= argnum < len(args):
            raise ValueError(
                f"Invalid value for 'argnums': {argnums!r} refers to argument {argnum}, but "
                f"the function was called with {len(args)} positional argument(s)"
            )
        positions.append(argnum % len(args))
    if len(set(positions)) != len(positions):
        raise ValueError(f"Invalid value for 'argnums': {argnums!r} names an argument twice")
    diff_trees: Any = tuple(args[i] for i in positions)
    diff_leaves: list[Any]
    diff_leaves, diff_spec = optree.tree_flatten(diff_trees, namespace=NAMESPACE)
    for argnum, tree in zip(positions, diff_trees):
        for leaf in optree.tree_leaves(tree, namespace=NAMESPACE):
            if not isinstance(leaf, torch.Tensor) or not leaf.is_floating_point():
                what = leaf.dtype if isinstance(leaf, torch.Tensor) else type(leaf).__name__
                raise TypeError(
                    f"argument {argnum} (selected by 'argnums') must be a floating-point tensor "
                    f"or a pytree of them; it holds a leaf of type {what}"
                )
    if not diff_leaves:
        raise ValueError(
            f"the arguments selected by 'argnums' ({argnums!r}) contain no tensor to differentiate"
        )
    rest_args = list(args)
    for i in positions:
        rest_args[i] = None
    rest_leaves: list[Any]
    rest_tree: Any = (tuple(rest_args), kwargs)
    rest_leaves, rest_spec = optree.tree_flatten(rest_tree, none_is_leaf=True, namespace=NAMESPACE)
    tensor_slots = [i for i, leaf in enumerate(rest_leaves) if isinstance(leaf, torch.Tensor)]
    tensors = [rest_leaves[i] for i in tensor_slots]
    for i in tensor_slots:
        rest_leaves[i] = None
    call = _Call(
        fn, tuple(positions), diff_spec, rest_spec, rest_leaves, tensor_slots, options, noise
    )
    return call, diff_leaves, tensors


def apply_zero_order(
    fn: Callable[..., torch.Tensor],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    argnums: tuple[int, ...],
    options: ZeroOrderOptions,
    noise: NoiseSource,
) -> torch.Tensor:
    """Evaluate ``fn(*args, **kwargs)`` with the zero-order backward attached."""
    call, diff_leaves, tensors = _make_call(fn, args, kwargs, argnums, options, noise)
    return _ZeroOrderFunction.apply(call, len(diff_leaves), *diff_leaves, *tensors)


def zero_order(
    distribution: Any,
    method: Method = "naive",
    argnums: int | tuple[int, ...] = (0,),
    num_samples: int = 1,
    sigma: float = 1.0,
    *,
    generator: torch.Generator | int | None = None,
    vectorize: bool = False,
    chunk_size: int | None = None,
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Return a decorator that gives a scalar function an evolution-strategies gradient.

    The decorated function computes the same value as the original; ``torch.autograd.grad``
    or ``.backward()`` on that value yields, for the arguments selected by ``argnums``, a Monte
    Carlo estimate of the gradient of the smoothed objective
    ``E[f(theta + sigma * eps)]``, ``eps ~ distribution``, computed from function values only:
    the function may be non-differentiable (rounding, a simulator, a black box). Arguments not
    in ``argnums`` receive no gradient; keyword arguments are passed through unchanged.

    Args:
        distribution: the noise ``eps``: a :class:`torch.distributions.Distribution` with empty
            batch and event shapes (``Normal(0.0, 1.0)``), an object with a
            ``sample(sample_shape)`` method, or a callable ``sample_fn(sample_shape)``. It is
            asked for a tensor of shape ``(num_samples, *leaf.shape)`` per tensor leaf of the
            differentiated arguments, and must return exactly that shape. The estimate is
            that of the smoothed gradient when ``eps`` is standard normal; another
            sphere-symmetric distribution gives a rescaled estimate.
        method: ``'naive'``, ``'forward'`` (baseline-subtracted, uses the forward value) or
            ``'antithetic'`` (mirrored samples, ``2 * num_samples`` evaluations); see the
            module documentation.
        argnums: index or tuple of indices of the positional arguments to differentiate;
            each is a floating-point tensor or a pytree of them.
        num_samples: number of noise draws averaged per gradient estimate.
        sigma: the smoothing radius (standard deviation of the perturbation).
        generator: ``None`` draws from PyTorch's global random state (TorchOpt's
            behaviour). An int seed or a :class:`torch.Generator` makes the estimates
            reproducible: the n-th backward after decoration always draws the same noise,
            and the global random state is left untouched.
        vectorize: evaluate all perturbed points in one :func:`torch.func.vmap` call instead
            of a Python loop. The function must be vmappable (no ``.item()``, no
            data-dependent Python control flow, no in-place writes to its inputs). Loop and
            vectorized evaluation draw the same noise, so they agree up to rounding.
        chunk_size: with ``vectorize=True``, evaluate at most this many points per vmap
            call, to bound memory.

    Returns:
        A decorator ``fn -> wrapped``; ``wrapped(*args, **kwargs)`` returns ``fn``'s value,
        a 0-dim floating-point tensor.

    Raises:
        ValueError: ``method`` is not one of the three names, ``num_samples < 1``,
            ``sigma <= 0`` (or not finite), bad ``argnums`` or ``chunk_size``.
        TypeError: ``distribution`` is neither samplable nor callable, ``generator`` is of
            another type.

    The per-call errors are raised by ``wrapped``: a :class:`ValueError` when ``fn`` returns
    a non-scalar or the distribution returns samples of the wrong shape (at backward), a
    :class:`TypeError` when ``fn`` returns something else than a floating-point tensor.

    Examples:
        >>> import torch, difopt
        >>> @difopt.diff.zero_order(torch.distributions.Normal(0.0, 1.0), method="antithetic",
        ...                         num_samples=10_000, sigma=0.1, generator=0)
        ... def f(x):
        ...     return (x ** 2).sum()
        >>> x = torch.tensor([1.0, -2.0], requires_grad=True)
        >>> f(x).backward()
        >>> torch.allclose(x.grad, 2 * x.detach(), atol=0.3)
        True
    """
    options = ZeroOrderOptions(method, num_samples, sigma, vectorize, chunk_size)
    argnums = _normalize_argnums(argnums)
    noise = NoiseSource(distribution, generator)

    def decorator(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        if not callable(fn):
            raise TypeError(f"zero_order(...) decorates a callable, got {type(fn).__name__}")

        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> torch.Tensor:
            return apply_zero_order(fn, args, kwargs, argnums, options, noise)

        return wrapped

    return decorator
