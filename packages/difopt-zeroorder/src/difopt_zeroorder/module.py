"""``ZeroOrderGradientModule``: a module whose parameters get evolution-strategies gradients."""

from __future__ import annotations

import abc
import functools
from typing import Any, Callable

import torch
from torch import nn

from difopt.nn import reparametrize
from difopt_zeroorder._noise import NoiseSource, validate_generator
from difopt_zeroorder.decorator import Method, ZeroOrderOptions, apply_zero_order

__all__ = ["ZeroOrderGradientModule", "enable_zero_order_gradients"]

_WRAPPED = "__zero_order_gradients_enabled__"


def _enable_zero_order(raw_forward: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Wrap a subclass's ``forward`` so that its parameters get the zero-order gradient."""

    @functools.wraps(raw_forward)
    def forward(self: ZeroOrderGradientModule, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self._zero_order_depth > 0:
            # A forward that calls super().forward() while being evaluated: the parameters are
            # already the perturbed ones, so run the plain computation.
            return raw_forward(self, *args, **kwargs)
        # Tied parameters appear under several names; each distinct tensor is perturbed once.
        names_of: dict[int, list[str]] = {}
        params: list[nn.Parameter] = []
        for name, p in self.named_parameters(remove_duplicate=False):
            if not p.requires_grad:
                continue
            if id(p) not in names_of:
                names_of[id(p)] = []
                params.append(p)
            names_of[id(p)].append(name)
        if not params:
            raise RuntimeError(
                # The first sentence is TorchOpt's message, which user code may match on.
                f"The module has no parameters. {type(self).__name__} has no parameter that "
                "requires grad: a "
                "ZeroOrderGradientModule estimates gradients for its parameters"
            )

        def objective(flat_params: tuple[torch.Tensor, ...], *a: Any, **kw: Any) -> torch.Tensor:
            named = [(n, t) for p, t in zip(params, flat_params) for n in names_of[id(p)]]
            self._zero_order_depth += 1
            try:
                with reparametrize(self, named, allow_missing=True):
                    return raw_forward(self, *a, **kw)
            finally:
                self._zero_order_depth -= 1

        return apply_zero_order(
            objective,
            (tuple(params), *args),
            kwargs,
            (0,),
            type(self)._zero_order_options,
            self._zero_order_noise(),
        )

    setattr(forward, _WRAPPED, True)
    return forward


def enable_zero_order_gradients(
    cls: type[ZeroOrderGradientModule],
    method: Method = "naive",
    num_samples: int = 1,
    sigma: float = 1.0,
) -> type[ZeroOrderGradientModule]:
    """Make ``cls.forward`` give its parameters zero-order gradients.

    :class:`ZeroOrderGradientModule` applies it to every subclass that defines ``forward``,
    with the class keywords (TorchOpt's ``torchopt.diff.zero_order.nn.module`` function);
    applying it twice is an error.

    Args:
        cls: A subclass of :class:`ZeroOrderGradientModule`.
        method: ``'naive'``, ``'forward'`` or ``'antithetic'``.
        num_samples: Noise draws per estimate.
        sigma: Smoothing radius.

    Returns:
        ``cls``, modified in place.

    Raises:
        TypeError: ``cls.forward`` already estimates zero-order gradients (TorchOpt's
            message), or ``cls`` is not a subclass of :class:`ZeroOrderGradientModule`.
        ValueError: An invalid ``method``, ``num_samples`` or ``sigma``.
    """
    if not (isinstance(cls, type) and issubclass(cls, ZeroOrderGradientModule)):
        raise TypeError(
            f"enable_zero_order_gradients() takes a subclass of ZeroOrderGradientModule, "
            f"got {cls!r}"
        )
    forward = cls.forward
    if getattr(forward, _WRAPPED, False):
        raise TypeError(
            "Zero-order gradient estimation is already enabled for the `forward` method. "
            f"{cls.__name__}.forward already estimates zero-order gradients"
        )
    parent: ZeroOrderOptions = cls._zero_order_options
    cls._zero_order_options = ZeroOrderOptions(
        method=method,
        num_samples=num_samples,
        sigma=sigma,
        vectorize=parent.vectorize,
        chunk_size=parent.chunk_size,
    )
    cls.forward = _enable_zero_order(forward)  # type: ignore[method-assign]
    return cls


class ZeroOrderGradientModule(nn.Module, metaclass=abc.ABCMeta):
    """Base class of modules whose parameters are trained by evolution strategies.

    A subclass writes ``forward`` (returning a scalar tensor, which may be computed in a
    non-differentiable way) and ``sample(sample_shape)`` (the perturbation distribution). Calling
    the module returns ``forward``'s value; back-propagating from it gives every parameter that
    requires grad the zero-order estimate of the gradient of the smoothed objective, as
    :func:`~difopt_zeroorder.zero_order` would with ``argnums=0`` on the tuple of parameters.

    The estimator is configured with class keywords::

        class Policy(ZeroOrderGradientModule, method="antithetic", num_samples=64, sigma=0.1):
            ...

    The class keywords are:

    - ``method``: ``'naive'`` (default), ``'forward'`` or ``'antithetic'``.
    - ``num_samples``: noise draws per estimate (default 1).
    - ``sigma``: smoothing radius (default 1.0).
    - ``vectorize``: evaluate all perturbed points with one :func:`torch.func.vmap` call
      (default False); ``forward`` must then be vmappable.
    - ``chunk_size``: with ``vectorize=True``, at most this many points per vmap call.

    A subclass that does not give the keywords inherits its parent's. Parameters with
    ``requires_grad=False`` are not perturbed. Call :meth:`manual_seed` for reproducible
    estimates.
    """

    _zero_order_options = ZeroOrderOptions()

    def __init_subclass__(
        cls,
        method: Method | None = None,
        num_samples: int | None = None,
        sigma: float | None = None,
        vectorize: bool | None = None,
        chunk_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Validate the class keywords and wrap the subclass's ``forward``."""
        super().__init_subclass__(**kwargs)
        parent: ZeroOrderOptions = cls._zero_order_options
        given: dict[str, Any] = {
            "method": method,
            "num_samples": num_samples,
            "sigma": sigma,
            "vectorize": vectorize,
            "chunk_size": chunk_size,
        }
        merged = {k: getattr(parent, k) if v is None else v for k, v in given.items()}
        cls._zero_order_options = ZeroOrderOptions(**merged)
        own_forward = cls.__dict__.get("forward")
        if own_forward is not None and not getattr(own_forward, _WRAPPED, False):
            cls.forward = _enable_zero_order(own_forward)  # type: ignore[method-assign]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Initialize the module (arguments go to :class:`torch.nn.Module`)."""
        super().__init__(*args, **kwargs)
        self._zero_order_depth = 0
        self._zero_order_source: NoiseSource | None = None

    @abc.abstractmethod
    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Compute the scalar objective; subclasses must override it."""
        raise NotImplementedError(
            f"{type(self).__name__} must define forward(...) returning a scalar tensor"
        )

    @abc.abstractmethod
    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
        """Draw a perturbation batch of shape ``sample_shape``; subclasses must override it."""
        raise NotImplementedError(
            f"{type(self).__name__} must define sample(sample_shape) returning a tensor of "
            "shape sample_shape (e.g. torch.randn(sample_shape))"
        )

    def manual_seed(self, seed: int | torch.Generator) -> ZeroOrderGradientModule:
        """Make this module's gradient estimates reproducible.

        After ``manual_seed(s)`` the n-th backward draws the same perturbations as the n-th
        backward through ``zero_order(self.sample, ..., generator=s)``; the global random
        state is not touched.

        Args:
            seed: an int seed, or a :class:`torch.Generator` whose state the draws advance.

        Returns:
            The module itself.
        """
        if seed is None:
            raise TypeError("'seed' must be an int or a torch.Generator, got None")
        validate_generator(seed)
        self._zero_order_source = NoiseSource(self, seed)
        return self

    def _zero_order_noise(self) -> NoiseSource:
        if self._zero_order_source is None:
            self._zero_order_source = NoiseSource(self)
        return self._zero_order_source
