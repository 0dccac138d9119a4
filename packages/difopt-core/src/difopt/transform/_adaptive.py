"""Adaptive scalings: Adam and its family, RMS-based and accumulating rules.

Each keeps its moments as pytrees with the structure of the parameters, and those that count
steps a counter per parameter (0-d int64 tensors on the CPU, so reading one never
synchronises a device). With
``inplace=True`` the state tensors are updated in place (torch.optim's memory behaviour);
with ``inplace=False`` new tensors are returned and the update is differentiable.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import torch

from difopt import _leafwise as lw
from difopt import _step_counters as counters
from difopt import _validate as check
from difopt._factory import transformation
from difopt._shapes import param_shaped
from difopt.base import GradientTransformation
from difopt.transform._kernels import (
    add_ratio_of_root,
    div_by_root,
    fused_backward_applies,
    maximum,
    ratio_of_root,
)

__all__ = [
    "ScaleByAdaDeltaState",
    "ScaleByAdamState",
    "ScaleByAdamaxState",
    "ScaleByAdanState",
    "ScaleByAmsgradState",
    "ScaleByLionState",
    "ScaleByNadamState",
    "ScaleByRAdamState",
    "ScaleByRStdDevState",
    "ScaleByRmsState",
    "ScaleByRssState",
    "scale_by_adadelta",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_adan",
    "scale_by_amsgrad",
    "scale_by_lion",
    "scale_by_nadam",
    "scale_by_radam",
    "scale_by_rms",
    "scale_by_rss",
    "scale_by_stddev",
]


def _moments(params: Any, n: int, requires_grad: bool, fill: float = 0.0) -> list[Any]:
    ps, spec = lw.flatten(params)
    return [lw.unflatten(spec, lw.full_like(ps, fill, requires_grad)) for _ in range(n)]


def _step(count: Any, updates: Sequence[torch.Tensor]) -> int | torch.Tensor:
    """The step value of ``count`` (see :func:`difopt._leafwise.step_value`); a counter that
    cannot be read (traced under ``torch.compile``, batched under ``vmap``) as a float tensor
    of the updates' precision (see :func:`difopt._leafwise.real_step`)."""
    t = counters.step_value(count)
    if isinstance(t, int) or not updates:
        return t
    # The widest precision among the leaves: a float64 leaf beside float32 ones gets float64.
    doubles = [u for u in updates if u.dtype in (torch.float64, torch.complex128)]
    return counters.real_step(t, doubles[0] if doubles else updates[0])


@param_shaped("mu", "nu")
class ScaleByAdamState(NamedTuple):
    """State of :func:`scale_by_adam`: first and second moments and the step count."""

    mu: Any
    nu: Any
    count: Any  # TorchOpt's name; shadows tuple.count


def _adam_direction(
    mu: lw.Tensors,
    nu: lw.Tensors,
    bc1: Any,
    bc2: Any,
    eps: float,
    eps_root: float,
    inplace: bool,
) -> list[torch.Tensor]:
    """``(mu / bc1) / (sqrt(nu / bc2 + eps_root) + eps)``."""
    scalars = not torch.is_tensor(bc1) and not torch.is_tensor(bc2)
    if scalars and fused_backward_applies(inplace, mu, nu):
        return ratio_of_root(1.0 / bc1, eps, 1.0 / bc2, eps_root, mu, nu)
    if inplace and eps_root == 0.0 and not torch.is_tensor(bc1):
        # In place on a fresh buffer (no graph to keep): sqrt(nu / bc2) + eps, times bc1,
        # takes two scalar passes, and mu is divided once.
        denom = lw.sqrt(nu)
        lw.mul_(denom, bc1 / math.sqrt(bc2))
        lw.add_scalar_(denom, eps * bc1)
        return lw.div(mu, denom)
    nu_hat = lw.mul(nu, 1.0 / bc2)
    if eps_root != 0.0:
        nu_hat = lw.add_scalar(nu_hat, eps_root)
    denom = lw.add_scalar(lw.sqrt(nu_hat, positive=eps_root > 0), eps)
    return lw.div(lw.mul(mu, 1.0 / bc1), denom)


def _fusable(gs: lw.Tensors, ps: lw.Tensors) -> bool:
    return lw.foreach_ok(gs) and len(ps) == len(gs)


@transformation
def scale_by_adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    moment_requires_grad: bool = False,
) -> GradientTransformation:
    """Rescale updates by Adam's bias-corrected moment estimates (Kingma & Ba, 2014).

    ``mu = b1 mu + (1 - b1) g``, ``nu = b2 nu + (1 - b2) g^2``, and the output is
    ``mu_hat / (sqrt(nu_hat + eps_root) + eps)`` with ``x_hat = x / (1 - b^t)``.

    Args:
        b1: decay rate of the first moment.
        b2: decay rate of the second moment.
        eps: term added to the denominator outside the square root.
        eps_root: term added inside the square root; set it > 0 when differentiating
            through the update, as the derivative of ``sqrt`` at 0 is infinite.
        moment_requires_grad: create the moments with ``requires_grad=True``.

    References:
        Kingma & Ba, "Adam: A Method for Stochastic Optimization", 2014.
    """
    return _adam_family(b1, b2, eps, eps_root, moment_requires_grad, amsgrad=False)


@param_shaped("mu", "nu", "nu_max")
class ScaleByAmsgradState(NamedTuple):
    """State of :func:`scale_by_amsgrad`: Adam's moments, the running maximum of the second
    moment and the step count."""

    mu: Any
    nu: Any
    nu_max: Any
    count: Any  # Optax's and TorchOpt's name; shadows tuple.count


@transformation
def scale_by_amsgrad(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    moment_requires_grad: bool = False,
) -> GradientTransformation:
    """Rescale updates by Adam's moments with the AMSGrad maximum (Reddi et al., 2018).

    As :func:`scale_by_adam`, but the denominator uses the running maximum of the second
    moment, ``nu_max = max(nu_max, nu)``, so the effective step size never grows:
    ``mu_hat / (sqrt(nu_max / (1 - b2^t) + eps_root) + eps)``. This is torch.optim's
    ``amsgrad=True``: the maximum is taken over the raw moments and bias-corrected with the
    current step (Optax's ``scale_by_amsgrad`` takes it over bias-corrected moments). Through
    the maximum, meta-gradients flow to whichever of ``nu_max`` and ``nu`` is larger (split
    evenly on a tie).

    Args:
        b1: decay rate of the first moment.
        b2: decay rate of the second moment.
        eps: term added to the denominator outside the square root.
        eps_root: term added inside the square root (see :func:`scale_by_adam`).
        moment_requires_grad: create the moments with ``requires_grad=True``.

    References:
        Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", ICLR 2018.
    """
    return _adam_family(b1, b2, eps, eps_root, moment_requires_grad, amsgrad=True)


def _adam_family(
    b1: float,
    b2: float,
    eps: float,
    eps_root: float,
    moment_requires_grad: bool,
    amsgrad: bool,
) -> GradientTransformation:
    """Adam, or with ``amsgrad`` AMSGrad: the same moments and step, AMSGrad dividing by the
    running maximum of the second moment (one more state field, ``nu_max``)."""
    check.unit_interval("b1", b1)
    check.unit_interval("b2", b2)
    check.non_negative("eps", eps)
    check.non_negative("eps_root", eps_root)

    def make_state(moments: list[Any], count: Any) -> Any:
        if amsgrad:
            mu, nu, nu_max = moments
            return ScaleByAmsgradState(mu, nu, nu_max, count)
        mu, nu = moments
        return ScaleByAdamState(mu, nu, count)

    def init(params: Any) -> Any:
        return make_state(
            _moments(params, 3 if amsgrad else 2, moment_requires_grad), counters.count_init(params)
        )

    def update(updates: Any, state: Any, *, params: Any = None, inplace: bool = True) -> Any:
        gs, spec = lw.flatten(updates)
        mu = lw.ema(lw.leaves(state.mu), gs, b1, inplace)
        nu = lw.ema_sq(lw.leaves(state.nu), gs, b2, inplace)
        moments = [mu, nu]
        if amsgrad:
            moments.append(maximum(lw.leaves(state.nu_max), nu, inplace))
        count = counters.count_inc(state.count, inplace)
        t = _step(count, gs)
        out = _adam_direction(mu, moments[-1], 1.0 - b1**t, 1.0 - b2**t, eps, eps_root, inplace)
        return lw.unflatten(spec, out), make_state([lw.unflatten(spec, m) for m in moments], count)

    def apply_scaled(
        updates: Any, state: Any, *, params: Any, factor: float, inplace: bool
    ) -> tuple[list[torch.Tensor], Any] | None:
        """``params + factor * update(...)[0]`` with the division and the add fused into one
        ``addcdiv``; None when the fused path does not apply."""
        gs, spec = lw.flatten(updates)
        ps = lw.leaves(params)
        if not _fusable(gs, ps):
            return None
        t = counters.uniform_step(state.count)
        if t is None:  # counters that differ, or traced ones: keep to update()
            return None
        mu = lw.ema(lw.leaves(state.mu), gs, b1, inplace)
        nu = lw.ema_sq(lw.leaves(state.nu), gs, b2, inplace)
        second = maximum(lw.leaves(state.nu_max), nu, inplace) if amsgrad else nu
        count = counters.count_inc(state.count, inplace)
        t += 1
        bc1, bc2 = 1.0 - b1**t, 1.0 - b2**t
        # (mu / bc1) / (sqrt(nu / bc2 + eps_root) + eps)
        #     == mu / (sqrt(nu + eps_root bc2) + eps sqrt(bc2)) * sqrt(bc2) / bc1
        value = factor * math.sqrt(bc2) / bc1
        new_params = add_ratio_of_root(
            ps, mu, second, eps_root * bc2, eps * math.sqrt(bc2), value, inplace
        )
        trees = (lw.unflatten(spec, mu), lw.unflatten(spec, nu))
        if amsgrad:
            return new_params, ScaleByAmsgradState(*trees, lw.unflatten(spec, second), count)
        return new_params, ScaleByAdamState(*trees, count)

    return GradientTransformation(init, update).declare(apply_scaled=apply_scaled)


@param_shaped("mu", "nu")
class ScaleByAdamaxState(NamedTuple):
    """State of :func:`scale_by_adamax`: first moment, infinity norm and step count."""

    mu: Any
    nu: Any
    count: Any  # TorchOpt's name; shadows tuple.count


@transformation
def scale_by_adamax(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-6, moment_requires_grad: bool = False
) -> GradientTransformation:
    """Adamax: Adam with the infinity norm, as torch.optim.Adamax computes it.

    ``nu = max(b2 nu, |g| + eps)`` and the output is ``(mu / (1 - b1^t)) / nu``.
    """
    check.unit_interval("b1", b1)
    check.unit_interval("b2", b2)
    check.non_negative("eps", eps)

    def init(params: Any) -> ScaleByAdamaxState:
        mu, nu = _moments(params, 2, moment_requires_grad)
        return ScaleByAdamaxState(mu=mu, nu=nu, count=counters.count_init(params))

    def update(updates: Any, state: Any, *, params: Any = None, inplace: bool = True) -> Any:
        gs, spec = lw.flatten(updates)
        mu = lw.ema(lw.leaves(state.mu), gs, b1, inplace)
        norm = [torch.maximum(n * b2, g.abs() + eps) for n, g in zip(lw.leaves(state.nu), gs)]
        nu = lw.assign(lw.leaves(state.nu), norm, inplace)
        count = counters.count_inc(state.count, inplace)
        bc1 = 1.0 - b1 ** _step(count, gs)
        out = [m / (bc1 * n) for m, n in zip(mu, nu)]
        new_state = ScaleByAdamaxState(lw.unflatten(spec, mu), lw.unflatten(spec, nu), count)
        return lw.unflatten(spec, out), new_state

    return GradientTransformation(init, update)


@param_shaped("mu", "nu")
class ScaleByRAdamState(NamedTuple):
    """State of :func:`scale_by_radam`."""

    mu: Any
    nu: Any
    count: Any  # TorchOpt's name; shadows tuple.count


@transformation
def scale_by_radam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    moment_requires_grad: bool = False,
    threshold: float = 5.0,
) -> GradientTransformation:
    """Rectified Adam (Liu et al., 2019), as torch.optim.RAdam computes it.

    While the variance's degrees of freedom ``rho_t`` are at most ``threshold`` the output is
    the bias-corrected first moment; afterwards it is rectified Adam.
    """
    check.unit_interval("b1", b1)
    check.unit_interval("b2", b2)
    check.non_negative("eps", eps)
    check.non_negative("threshold", threshold)
    rho_inf = 2.0 / (1.0 - b2) - 1.0

    def init(params: Any) -> ScaleByRAdamState:
        mu, nu = _moments(params, 2, moment_requires_grad)
        return ScaleByRAdamState(mu=mu, nu=nu, count=counters.count_init(params))

    def update(updates: Any, state: Any, *, params: Any = None, inplace: bool = True) -> Any:
        gs, spec = lw.flatten(updates)
        mu = lw.ema(lw.leaves(state.mu), gs, b1, inplace)
        nu = lw.ema_sq(lw.leaves(state.nu), gs, b2, inplace)
        count = counters.count_inc(state.count, inplace)
        t = _step(count, gs)
        bc1 = 1.0 - b1**t
        bc2 = 1.0 - b2**t
        rho_t = rho_inf - 2.0 * t * b2**t / bc2
        mu_hat = lw.mul(mu, 1.0 / bc1)
        if isinstance(t, int):
            if rho_t > threshold:
                rect = math.sqrt(
                    (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
                )
                denom = lw.add_scalar(lw.sqrt(nu), eps)
                out = lw.div(lw.mul(mu_hat, rect * math.sqrt(bc2)), denom)
            else:
                out = mu_hat
        else:
            ok = rho_t > threshold
            safe = torch.where(ok, rho_t, rho_inf)  # type: ignore[arg-type]
            rect = torch.sqrt(  # type: ignore[assignment]
                (safe - 4) * (safe - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * safe)
            )
            out = [
                torch.where(ok, m * rect * torch.sqrt(bc2) / (v.sqrt() + eps), m)  # type: ignore[arg-type]
                for m, v in zip(mu_hat, nu)
            ]
        new_state = ScaleByRAdamState(lw.unflatten(spec, mu), lw.unflatten(spec, nu), count)
        return lw.unflatten(spec, out), new_state

    return GradientTransformation(init, update)


@param_shaped("mu", "nu")
class ScaleByAdaDeltaState(NamedTuple):
    """State of :func:`scale_by_adadelta`: averages of squared updates and of squared steps."""

    mu: Any
    nu: Any


@transformation
def scale_by_adadelta(
    rho: float = 0.9, eps: float = 1e-6, moment_requires_grad: bool = False
) -> GradientTransformation:
    """Adadelta (Zeiler, 2012), as torch.optim.Adadelta computes it.

    ``mu = rho mu + (1 - rho) g^2``; output ``d = sqrt(nu + eps) / sqrt(mu + eps) * g``;
    then ``nu = rho nu + (1 - rho) d^2``.
    """
    check.closed_unit_interval("rho", rho)
    check.non_negative("eps", eps)

    def init(params: Any) -> ScaleByAdaDeltaState:
        return ScaleByAdaDeltaState(*_moments(params, 2, moment_requires_grad))

    def update(updates: Any, state: Any, *, params: Any = None, inplace: bool = True) -> Any:
        gs, spec = lw.flatten(updates)
        mu = lw.ema_sq(lw.leaves(state.mu), gs, rho, inplace)
        nu_old = lw.leaves(state.nu)
        std = lw.sqrt(lw.add_scalar(mu, eps))
        delta = lw.mul_t(lw.div(lw.sqrt(lw.add_scalar(nu_old, eps)), std), gs)
        nu = lw.ema_sq(nu_old, delta, rho, inplace)
        new_state = ScaleByAdaDeltaState(lw.unflatten(spec, mu), lw.unflatten(spec, nu))
        return lw.unflatten(spec, delta), new_state

    return GradientTransformation(init, update)


@param_shaped("nu")
class ScaleByRmsState(NamedTuple):
    """State of :func:`scale_by_rms`: the running average of squared updates."""

    nu: Any


@transformation
def scale_by_rms(
    alpha: float = 0.9, eps: float = 1e-8, initial_scale: float = 0.0
) -> GradientTransformation:
    """Divide updates by the root of their running mean square (RMSprop, uncentered).

    ``nu = alpha nu + (1 - alpha) g^2``; output ``g / (sqrt(nu) + eps)``.
    """
    check.closed_unit_interval("alpha", alpha)
    check.non_negative("eps", eps)
    check.non_negative("initial_scale", initial_scale)

    def init(params: Any) -> ScaleByRmsState:
        return ScaleByRmsState(*_moments(params, 1, False, initial_scale))

    def update(updates: Any, state: Any, *, params: Any = None, inplace: bool = True) -> Any:
        gs, spec = lw.flatten(updates)
        nu = lw.ema_sq(lw.leaves(state.nu), gs, alpha, inplace)
        out = div_by_root(gs, nu, eps, inplace)
        return lw.unflatten(spec, out), ScaleByRmsState(lw.unflatten(spec, nu))

    def apply_scaled(
        updates: Any, state: Any, *, params: Any, factor: float, inplace: bool
    ) -> tuple[list[torch.Tensor], ScaleByRmsState] | None:
        gs, spec = lw.flatten(updates)
        ps = lw.leaves(params)
        if not _fusable(gs, ps):
            return None
        nu = lw.ema_sq(lw.leaves(state.nu), gs, alpha, inplace)
        new_params = add_ratio_of_root(ps, gs, nu, 0.0, eps, factor, inplace)
        return new_params, ScaleByRmsState(lw.unflatten(spec, nu))

    return GradientTransformation(init, update).declare(apply_scaled=apply_scaled)


@param_shaped("mu", "nu")
class ScaleByRStdDevState(NamedTuple):
    """State of :func:`scale_by_stddev`: running means of updates and of their squares."""

    mu: Any
    nu: Any


@transformation
def scale_by_stddev(
    alpha: float = 0.9, eps: float = 1e-8, initial_scale: float = 0.0
) -> GradientTransformation:
    """Divide updates by their running standard deviation (RMSprop, centered).

    Output ``g / (sqrt(nu - mu^2) + eps)``.
    """
    check.closed_unit_interval("alpha", alpha)
    check.non_negative("eps", eps)
    check.non_negative("initial_scale", initial_scale)

    def init(params: Any) -> ScaleByRStdDevState:
        (mu,) = _moments(params, 1, False)
        (nu,) = _moments(params, 1, False, initial_scale)
        return ScaleByRStdDevState(mu=mu, nu=nu)

    def moments(gs: lw.Tensors, state: Any, inplace: bool) -> tuple[Any, Any, Any]:
        mu = lw.ema(lw.leaves(state.mu), gs, alpha, inplace)
        nu = lw.ema_sq(lw.leaves(state.nu), gs, alpha, inplace)
        # nu - mu^2 with mu^2 rounded first: exactly 0 where the two agree (alpha = 0, or a
        # constant update), where one fused multiply-add would leave a residue of either sign
        # and the square root a NaN.
        if lw.foreach_ok(nu) and inplace and not lw.on_graph(nu):
            # One fresh buffer: -mu^2, then + nu in place (the same rounding as nu - mu^2).
            var = list(torch._foreach_mul(mu, mu))
            torch._foreach_neg_(var)
            torch._foreach_add_(var, nu)
        elif lw.foreach_ok(nu):
            var = list(torch._foreach_sub(nu, torch._foreach_mul(mu, mu)))
        else:
            var = [v - m * m for m, v in zip(mu, nu)]
        return mu, nu, var

    def update(updates: Any, state: Any, *, params: Any = None, inplace: bool = True) -> Any:
        gs, spec = lw.flatten(updates)
        mu, nu, var = moments(gs, state, inplace)
        out = div_by_root(gs, var, eps, inplace)
        new_state = ScaleByRStdDevState(lw.unflatten(spec, mu), lw.unflatten(spec, nu))
        return lw.unflatten(spec, out), new_state

    def apply_scaled(
        updates: Any, state: Any, *, params: Any, factor: float, inplace: bool
    ) -> tuple[list[torch.Tensor], ScaleByRStdDevState] | None:
        gs, spec = lw.flatten(updates)
        ps = lw.leaves(params)
        if not _fusable(gs, ps):
            return None
        mu, nu, var = moments(gs, state, inplace)
        new_params = add_ratio_of_root(ps, gs, var, 0.0, eps, factor, inplace, xs_fresh=True)
        new_state = ScaleByRStdDevState(lw.unflatten(spec, mu), lw.unflatten(spec, nu))
        return new_params, new_state

    return GradientTransformation(init, update).declare(apply_scaled=apply_scaled)


@param_shaped("sum_of_squares")
class ScaleByRssState(NamedTuple):
    """State of :func:`scale_by_rss`: the running sum of squared updates."""

    sum_of_squares: Any


@transformation
def scale_by_rss(
    initial_accumulator_value: float = 0.0, eps: float = 1e-10
) -> GradientTransformation:
    """Divide updates by the root of the sum of their squares (Adagrad).

    ``s = s + g^2``; output ``g / (sqrt(s) + eps)``.
    """
    check.non_negative("initial_accumulator_value", initial_accumulator_value)
    check.non_negative("eps", eps)

    def init(params: Any) -> ScaleByRssState:
        return ScaleByRssState(*_moments(params, 1, False, initial_accumulator_value))

    def update(updates: Any, state: Any, *, params: Any = None, inplace: bool = True) -> Any:
        gs, spec = lw.flatten(updates)
        s_old = lw.leaves(state.sum_of_squares)
        if inplace and lw.foreach_ok(s_old):
            torch._foreach_addcmul_(s_old, gs, gs)
            s: lw.Tensors = s_old
        else:
            s = lw.assign(s_old, [a + g * g for a, g in zip(s_old, gs)], inplace)
        out = div_by_root(gs, s, eps, inplace)
        return lw.unflatten(spec, out), ScaleByRssState(lw.unflatten(spec, s))

    return GradientTransformation(init, update)


@param_shaped("mu", "nu")
class ScaleByNadamState(NamedTuple):
    """State of :func:`scale_by_nadam`: moments, step count and product of momentum factors."""

    mu: Any
    nu: Any
    count: Any  # TorchOpt's name; shadows tuple.count
    mu_product: Any


@transformation
def scale_by_nadam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    momentum_decay: float = 4e-3,
    moment_requires_grad: bool = False,
) -> GradientTransformation:
    """NAdam (Dozat, 2016) with torch.optim.NAdam's momentum schedule.

    ``m_t = b1 (1 - 0.5 * 0.96^(t * momentum_decay))``; the output combines the current
    update and the first moment, each scaled by its Nesterov factor, over
    ``sqrt(nu / (1 - b2^t)) + eps``.
    """
    check.unit_interval("b1", b1)
    check.unit_interval("b2", b2)
    check.non_negative("eps", eps)
    check.non_negative("momentum_decay", momentum_decay)

    def init(params: Any) -> ScaleByNadamState:
        mu, nu = _moments(params, 2, moment_requires_grad)
        ps, spec = lw.flatten(params)
        ones = lw.unflatten(spec, [torch.ones((), dtype=torch.float64) for _ in ps])
        return ScaleByNadamState(mu=mu, nu=nu, count=counters.count_init(params), mu_product=ones)

    def update(updates: Any, state: Any, *, params: Any = None, inplace: bool = True) -> Any:
        gs, spec = lw.flatten(updates)
        mu = lw.ema(lw.leaves(state.mu), gs, b1, inplace)
        nu = lw.ema_sq(lw.leaves(state.nu), gs, b2, inplace)
        count = counters.count_inc(state.count, inplace)
        t = _step(count, gs)
        m_t = b1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))
        m_next = b1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
        products = lw.leaves(state.mu_product)  # one per parameter, equal within a call
        mu_product = lw.mul_(products, m_t) if inplace else lw.mul(products, m_t)
        # The running product stays float64 in the state; a traced step computes with it in
        # the updates' precision, like the other step-dependent scalars.
        prod = float(mu_product[0]) if isinstance(t, int) else mu_product[0].to(t.dtype)
        bc2 = 1.0 - b2**t
        denom = lw.add_scalar(lw.sqrt(lw.mul(nu, 1.0 / bc2)), eps)
        c_g = (1.0 - m_t) / (1.0 - prod)
        c_m = m_next / (1.0 - prod * m_next)
        out = [(c_g * g + c_m * m) / d for g, m, d in zip(gs, mu, denom)]
        new_state = ScaleByNadamState(
            lw.unflatten(spec, mu), lw.unflatten(spec, nu), count, lw.unflatten(spec, mu_product)
        )
        return lw.unflatten(spec, out), new_state

    return GradientTransformation(init, update)


@param_shaped("mu")
class ScaleByLionState(NamedTuple):
    """State of :func:`scale_by_lion`: the momentum."""

    mu: Any


@transformation
def scale_by_lion(
    b1: float = 0.9, b2: float = 0.99, moment_requires_grad: bool = False
) -> GradientTransformation:
    """Lion (Chen et al., 2023): the sign of an interpolation of momentum and update.

    Output ``sign(b1 mu + (1 - b1) g)``; then ``mu = b2 mu + (1 - b2) g``.

    References:
        Chen et al., "Symbolic Discovery of Optimization Algorithms", 2023.
    """
    check.unit_interval("b1", b1)
    check.unit_interval("b2", b2)

    def init(params: Any) -> ScaleByLionState:
        return ScaleByLionState(*_moments(params, 1, moment_requires_grad))

    def update(updates: Any, state: Any, *, params: Any = None, inplace: bool = True) -> Any:
        gs, spec = lw.flatten(updates)
        mu_old = lw.leaves(state.mu)
        out = [torch.sign(m.lerp(g, 1.0 - b1)) for m, g in zip(mu_old, gs)]
        mu = lw.ema(mu_old, gs, b2, inplace)
        return lw.unflatten(spec, out), ScaleByLionState(lw.unflatten(spec, mu))

    return GradientTransformation(init, update)


@param_shaped("mu", "delta", "nu", "prev")
class ScaleByAdanState(NamedTuple):
    """State of :func:`scale_by_adan`: three moments, the previous update and the step count."""

    mu: Any
    delta: Any
    nu: Any
    prev: Any
    count: Any  # TorchOpt's name; shadows tuple.count


@transformation
def scale_by_adan(
    b1: float = 0.98,
    b2: float = 0.92,
    b3: float = 0.99,
    eps: float = 1e-8,
    moment_requires_grad: bool = False,
) -> GradientTransformation:
    """Adan (Xie et al., 2022): Nesterov momentum estimated from update differences.

    With ``d = g - g_prev`` (0 on the first step): ``m = b1 m + (1 - b1) g``,
    ``v = b2 v + (1 - b2) d``, ``n = b3 n + (1 - b3) (g + b2 d)^2``; the output is
    ``(m_hat + b2 v_hat) / (sqrt(n_hat) + eps)`` with bias-corrected moments.

    References:
        Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep
        Models", 2022.
    """
    check.unit_interval("b1", b1)
    check.unit_interval("b2", b2)
    check.unit_interval("b3", b3)
    check.non_negative("eps", eps)

    def init(params: Any) -> ScaleByAdanState:
        mu, delta, nu, prev = _moments(params, 4, moment_requires_grad)
        return ScaleByAdanState(mu, delta, nu, prev, counters.count_init(params))

    def update(updates: Any, state: Any, *, params: Any = None, inplace: bool = True) -> Any:
        gs, spec = lw.flatten(updates)
        first = counters.step_value(state.count)
        prev = lw.leaves(state.prev)
        if isinstance(first, int):
            diff = lw.zeros_like(gs) if first == 0 else lw.add(gs, prev, alpha=-1.0)
        else:
            diff = [torch.where(first == 0, torch.zeros_like(g), g - p) for g, p in zip(gs, prev)]
        mu = lw.ema(lw.leaves(state.mu), gs, b1, inplace)
        delta = lw.ema(lw.leaves(state.delta), diff, b2, inplace)
        nu = lw.ema_sq(lw.leaves(state.nu), lw.add(gs, diff, alpha=b2), b3, inplace)
        new_prev = lw.assign(prev, gs, inplace)
        count = counters.count_inc(state.count, inplace)
        t = _step(count, gs)
        bc1, bc2, bc3 = (1.0 - b**t for b in (b1, b2, b3))
        out = [
            (m / bc1 + b2 * d / bc2) / ((n / bc3).sqrt() + eps) for m, d, n in zip(mu, delta, nu)
        ]
        new_state = ScaleByAdanState(  # type: ignore[call-arg]
            *(lw.unflatten(spec, x) for x in (mu, delta, nu, new_prev)), count
        )
        return lw.unflatten(spec, out), new_state

    return GradientTransformation(init, update)
