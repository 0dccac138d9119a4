"""Optimizers as functions returning a chain of transformations (the functional form).

Each function here is the single source of an optimizer: the torch.optim-style class
(``difopt.Adam``) and the differentiable class (``difopt.MetaAdam``) are generated from it by
:mod:`difopt.optim`, with the same parameters and documentation. The functions are
registered in the ``difopt.optimizers`` entry-point group, like third-party optimizers.

Where TorchOpt's class forms have other defaults than its functions (``Adadelta`` takes
``lr=1.0``, the meta forms ``moment_requires_grad=True``), :func:`forms` records them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, TypeVar

import torch

from difopt import _step_counters as counters
from difopt import _validate as check
from difopt import registry
from difopt.base import GradientTransformation, identity
from difopt.combine import chain
from difopt.transform import (
    MUON_NS_COEFFICIENTS,
    accelerated_trace,
    add_decayed_weights,
    flip_sign_and_add_weight_decay,
    scale,
    scale_by_accelerated_adam,
    scale_by_accelerated_rms,
    scale_by_accelerated_stddev,
    scale_by_adadelta,
    scale_by_adafactor,
    scale_by_adam,
    scale_by_adamax,
    scale_by_adan,
    scale_by_amsgrad,
    scale_by_asgd,
    scale_by_lion,
    scale_by_muon,
    scale_by_nadam,
    scale_by_neg_lr,
    scale_by_radam,
    scale_by_rms,
    scale_by_rprop,
    scale_by_rss,
    scale_by_stddev,
    trace,
)

_F = TypeVar("_F", bound=Callable[..., GradientTransformation])


def forms(
    classic_name: str | None = None,
    meta_name: str | None = None,
    classic_defaults: dict[str, Any] | None = None,
    meta_defaults: dict[str, Any] | None = None,
    spellings: tuple[str, ...] = (),
    classic_positional: tuple[str, ...] | None = None,
    meta_positional: tuple[str, ...] | None = None,
) -> Callable[[_F], _F]:
    """Record how the classic and meta classes generated from an alias are named and defaulted.

    Optional: a third-party alias without it gets ``Name`` and ``MetaName`` (its function
    name capitalised) and its own defaults, with ``moment_requires_grad=True`` in the meta
    form when the alias has that parameter.

    Args:
        classic_name: the classic class's name (``"Adam"``).
        meta_name: the meta class's name (``"MetaAdam"``).
        classic_defaults: defaults of the classic class that differ from the alias'.
        meta_defaults: defaults of the meta class that differ from the alias'.
        spellings: other names of the classic class (TorchOpt's ``"AdaGrad"`` beside
            ``"Adagrad"``); the meta class gets each with ``Meta`` before it. They name the
            same class objects.
        classic_positional: the classic class's positional parameters after ``params``, in
            order, when they differ from the alias' (TorchOpt's ``SGD`` takes
            ``weight_decay`` before ``dampening``); the others become keyword-only.
        meta_positional: the same for the meta class, after ``module``.
    """

    def decorate(fn: _F) -> _F:
        fn.__difopt_forms__ = {  # type: ignore[attr-defined]
            "classic_name": classic_name,
            "meta_name": meta_name,
            "classic_defaults": dict(classic_defaults or {}),
            "meta_defaults": dict(meta_defaults or {}),
            "spellings": tuple(spellings),
            "classic_positional": classic_positional,
            "meta_positional": meta_positional,
        }
        return fn

    return decorate


_META = {"moment_requires_grad": True}


# TorchOpt's SGD classes order their positional parameters unlike its sgd function (and unlike
# torch.optim.SGD): (lr, momentum, weight_decay, dampening, nesterov, ...).
_SGD_CLASS_ORDER = ("lr", "momentum", "weight_decay", "dampening", "nesterov")


@forms(
    "SGD",
    "MetaSGD",
    meta_defaults=_META,
    classic_positional=(*_SGD_CLASS_ORDER, "maximize"),
    meta_positional=(*_SGD_CLASS_ORDER, "moment_requires_grad", "maximize"),
)
def sgd(
    lr: Any,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    *,
    moment_requires_grad: bool = False,
    maximize: bool = False,
    use_accelerated_op: bool = False,
) -> GradientTransformation:
    """Stochastic gradient descent with optional momentum, as torch.optim.SGD.

    Args:
        lr: learning rate: a float, a 0-d tensor or a schedule; or, in the functional and
            meta forms, per-parameter learning rates (Meta-SGD): a tree of floating-point
            tensors with the parameters' structure, each 0-d or broadcastable to its
            parameter (``MetaSGD(module, lr=...)`` takes a list in ``module.parameters()``
            order, or a dict keyed by parameter name, over the parameters that require
            grad). Rates that require grad get gradients through the step.
        momentum: momentum factor (0 disables the buffer).
        dampening: dampening for momentum.
        weight_decay: L2 penalty added to the gradient.
        nesterov: Nesterov momentum.
        moment_requires_grad: create the momentum buffer with ``requires_grad=True``.
        maximize: maximize the objective instead of minimizing it.
        use_accelerated_op: compute the momentum step with a fused native op from the plugin
            registry when installed (``difopt-accel``); without momentum there is nothing to
            fuse.
    """
    check.learning_rate("lr", lr, per_parameter=True)
    check.non_negative("momentum", momentum)
    check.boolean("nesterov", nesterov)
    check.boolean("use_accelerated_op", use_accelerated_op)
    if nesterov and (momentum <= 0.0 or dampening != 0.0):
        raise ValueError(
            "Invalid combination: 'nesterov=True' requires 'momentum' > 0 and 'dampening' == 0"
        )
    tracer = accelerated_trace if use_accelerated_op else trace
    return chain(
        flip_sign_and_add_weight_decay(weight_decay, maximize),
        tracer(momentum, dampening, nesterov, moment_requires_grad) if momentum else identity(),
        scale_by_neg_lr(lr),
    )


def _around(
    core: GradientTransformation,
    lr: Any,
    weight_decay: float,
    maximize: bool,
    decoupled: bool,
    mask: Any = None,
) -> GradientTransformation:
    """``core`` between the gradient's sign/weight decay and the learning rate.

    Coupled: ``weight_decay * params`` is added to the gradient (an L2 penalty). Decoupled
    (AdamW's rule, torch.optim's ``decoupled_weight_decay``): ``weight_decay * params`` is
    added to the scaled update, so that the step multiplies the parameters by
    ``1 - lr * weight_decay``.
    """
    if decoupled:
        check.non_negative("weight_decay", weight_decay)
        return chain(
            flip_sign_and_add_weight_decay(0.0, maximize),
            core,
            add_decayed_weights(weight_decay, mask),
            scale_by_neg_lr(lr),
        )
    return chain(flip_sign_and_add_weight_decay(weight_decay, maximize), core, scale_by_neg_lr(lr))


def _adam_core(
    lr: Any,
    betas: Any,
    eps: float,
    eps_root: float,
    moment_requires_grad: bool,
    use_accelerated_op: bool,
    amsgrad: bool,
    lr_tree: bool = False,
) -> GradientTransformation:
    """Adam's (or AMSGrad's) scaling for :func:`adam` and :func:`adamw`, its arguments checked
    (``lr`` too, which the caller passes on to :func:`_around`)."""
    check.learning_rate("lr", lr, per_parameter=lr_tree)
    check.betas("betas", betas)
    check.boolean("amsgrad", amsgrad)
    check.boolean("use_accelerated_op", use_accelerated_op)
    if amsgrad:
        if use_accelerated_op:
            registry.warn_once(
                "amsgrad-accelerated",
                "use_accelerated_op=True: the fused Adam op has no AMSGrad variant; "
                "amsgrad=True runs the pure PyTorch implementation (same values)",
            )
        scaler: Callable[..., GradientTransformation] = scale_by_amsgrad
    else:
        scaler = scale_by_accelerated_adam if use_accelerated_op else scale_by_adam
    return scaler(betas[0], betas[1], eps, eps_root, moment_requires_grad)


@forms("Adam", "MetaAdam", meta_defaults=_META)
def adam(
    lr: Any = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    *,
    eps_root: float = 0.0,
    moment_requires_grad: bool = False,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
    use_accelerated_op: bool = False,
) -> GradientTransformation:
    """Adam (Kingma & Ba, 2014), as torch.optim.Adam.

    Args:
        lr: learning rate: a float, a 0-d tensor or a schedule; or, in the functional and
            meta forms, per-parameter learning rates, as :func:`difopt.sgd` takes them.
        betas: decay rates of the first and second moment estimates.
        eps: term added to the denominator for numerical stability.
        weight_decay: L2 penalty added to the gradient (decoupled with
            ``decoupled_weight_decay=True``).
        amsgrad: use the running maximum of the second moment (AMSGrad,
            :func:`difopt.transform.scale_by_amsgrad`).
        eps_root: term added inside the square root; > 0 keeps meta-gradients finite where
            the second moment is 0.
        moment_requires_grad: create the moments with ``requires_grad=True``.
        maximize: maximize the objective instead of minimizing it.
        decoupled_weight_decay: decay the weights directly, as AdamW does (torch.optim.Adam's
            option of the same name).
        use_accelerated_op: use a fused native op from the plugin registry when installed
            (not for ``amsgrad``, which warns once and runs the pure implementation).
    """
    check.boolean("decoupled_weight_decay", decoupled_weight_decay)
    core = _adam_core(
        lr, betas, eps, eps_root, moment_requires_grad, use_accelerated_op, amsgrad, lr_tree=True
    )
    return _around(core, lr, weight_decay, maximize, decoupled_weight_decay)


@forms("AdamW", "MetaAdamW", meta_defaults=_META)
def adamw(
    lr: Any = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    *,
    eps_root: float = 0.0,
    mask: Any = None,
    moment_requires_grad: bool = False,
    maximize: bool = False,
    use_accelerated_op: bool = False,
) -> GradientTransformation:
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as torch.optim.AdamW.

    Args:
        lr: learning rate, a float or a schedule.
        betas: decay rates of the first and second moment estimates.
        eps: term added to the denominator for numerical stability.
        weight_decay: decoupled weight decay coefficient.
        amsgrad: use the running maximum of the second moment (AMSGrad,
            :func:`difopt.transform.scale_by_amsgrad`).
        eps_root: term added inside the square root.
        mask: pytree of bools (or a callable of the parameters returning one) selecting the
            parameters to decay.
        moment_requires_grad: create the moments with ``requires_grad=True``.
        maximize: maximize the objective instead of minimizing it.
        use_accelerated_op: use a fused native op from the plugin registry when installed.
    """
    core = _adam_core(lr, betas, eps, eps_root, moment_requires_grad, use_accelerated_op, amsgrad)
    return _around(core, lr, weight_decay, maximize, decoupled=True, mask=mask)


@forms(
    "Adamax",
    "MetaAdamax",
    classic_defaults={"lr": 2e-3, "eps": 1e-8},
    meta_defaults={**_META, "lr": 2e-3, "eps": 1e-8},
    spellings=("AdaMax",),
)
def adamax(
    lr: Any = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    *,
    moment_requires_grad: bool = False,
    maximize: bool = False,
) -> GradientTransformation:
    """Adamax, the infinity-norm variant of Adam, as torch.optim.Adamax.

    Args:
        lr: learning rate, a float or a schedule.
        betas: decay rates of the first moment and of the infinity norm.
        eps: term added to the norm for numerical stability.
        weight_decay: L2 penalty added to the gradient.
        moment_requires_grad: create the moments with ``requires_grad=True``.
        maximize: maximize the objective instead of minimizing it.
    """
    check.learning_rate("lr", lr)
    check.betas("betas", betas)
    return chain(
        flip_sign_and_add_weight_decay(weight_decay, maximize),
        scale_by_adamax(betas[0], betas[1], eps, moment_requires_grad),
        scale_by_neg_lr(lr),
    )


@forms("RAdam", "MetaRAdam", classic_defaults={"eps": 1e-8}, meta_defaults={**_META, "eps": 1e-8})
def radam(
    lr: Any = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    *,
    decoupled_weight_decay: bool = False,
    moment_requires_grad: bool = False,
    maximize: bool = False,
) -> GradientTransformation:
    """Rectified Adam (Liu et al., 2019), as torch.optim.RAdam.

    Args:
        lr: learning rate, a float or a schedule.
        betas: decay rates of the first and second moment estimates.
        eps: term added to the denominator for numerical stability.
        weight_decay: L2 penalty added to the gradient (decoupled with
            ``decoupled_weight_decay=True``).
        decoupled_weight_decay: decay the weights as AdamW does instead of adding an L2
            penalty to the gradient (torch.optim.RAdam's option of the same name).
        moment_requires_grad: create the moments with ``requires_grad=True``.
        maximize: maximize the objective instead of minimizing it.
    """
    check.learning_rate("lr", lr)
    check.betas("betas", betas)
    check.boolean("decoupled_weight_decay", decoupled_weight_decay)
    core = scale_by_radam(betas[0], betas[1], eps, moment_requires_grad=moment_requires_grad)
    return _around(core, lr, weight_decay, maximize, decoupled_weight_decay)


@forms(
    "Adadelta",
    "MetaAdadelta",
    classic_defaults={"lr": 1.0},
    meta_defaults={**_META, "lr": 1.0},
    spellings=("AdaDelta",),
)
def adadelta(
    lr: Any = 1e-3,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    *,
    moment_requires_grad: bool = False,
    maximize: bool = False,
) -> GradientTransformation:
    """Adadelta (Zeiler, 2012), as torch.optim.Adadelta.

    Args:
        lr: coefficient scaling the delta, a float or a schedule.
        rho: decay rate of the running averages.
        eps: term added for numerical stability.
        weight_decay: L2 penalty added to the gradient.
        moment_requires_grad: create the averages with ``requires_grad=True``.
        maximize: maximize the objective instead of minimizing it.
    """
    check.learning_rate("lr", lr)
    return chain(
        flip_sign_and_add_weight_decay(weight_decay, maximize),
        scale_by_adadelta(rho, eps, moment_requires_grad),
        scale_by_neg_lr(lr),
    )


@dataclasses.dataclass(repr=False)
class _DerivedLr:
    """A learning rate computed from ``lr`` (a float or a schedule) and one coefficient.

    A small class rather than a closure, so the chains that hold it compare and pickle.
    """

    name: ClassVar[str] = ""
    lr: Any
    coefficient: float

    def _lr(self, count: Any) -> Any:
        return self.lr(count) if callable(self.lr) else self.lr

    def __repr__(self) -> str:
        return f"{self.name}(lr={self.lr!r}, coefficient={self.coefficient!r})"


class _AdagradSchedule(_DerivedLr):
    """``lr / (1 + count * lr_decay)``: torch.optim.Adagrad's learning-rate decay."""

    name = "adagrad_lr"

    def __call__(self, count: Any) -> Any:
        return self._lr(count) / (1.0 + counters.real_step(count) * self.coefficient)


@forms("Adagrad", "MetaAdagrad", spellings=("AdaGrad",))
def adagrad(
    lr: Any = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    """Adagrad (Duchi et al., 2011), as torch.optim.Adagrad.

    Args:
        lr: learning rate, a float or a schedule.
        lr_decay: the learning rate at step ``t`` (from 0) is ``lr / (1 + t * lr_decay)``.
        weight_decay: L2 penalty added to the gradient.
        initial_accumulator_value: initial value of the sum of squares.
        eps: term added to the denominator for numerical stability.
        maximize: maximize the objective instead of minimizing it.
    """
    check.learning_rate("lr", lr)
    check.non_negative("lr_decay", lr_decay)
    return chain(
        flip_sign_and_add_weight_decay(weight_decay, maximize),
        scale_by_rss(initial_accumulator_value, eps),
        scale_by_neg_lr(_AdagradSchedule(lr, lr_decay) if lr_decay else lr),
    )


@forms("RMSProp", "MetaRMSProp", spellings=("RMSprop",))
def rmsprop(
    lr: Any = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    *,
    initial_scale: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
    use_accelerated_op: bool = False,
) -> GradientTransformation:
    """RMSprop (Hinton), as torch.optim.RMSprop.

    Args:
        lr: learning rate, a float or a schedule.
        alpha: smoothing constant of the running mean square.
        eps: term added to the denominator for numerical stability.
        weight_decay: L2 penalty added to the gradient.
        momentum: momentum factor applied to the scaled update.
        centered: divide by the estimated standard deviation instead of the root mean square.
        initial_scale: initial value of the running mean square.
        nesterov: Nesterov momentum (needs ``momentum > 0``).
        maximize: maximize the objective instead of minimizing it.
        use_accelerated_op: compute the scaling (and the momentum step) with fused native ops
            from the plugin registry when installed (``difopt-accel``).
    """
    check.learning_rate("lr", lr)
    check.boolean("centered", centered)
    check.non_negative("momentum", momentum)
    check.boolean("use_accelerated_op", use_accelerated_op)
    if use_accelerated_op:
        scaler = scale_by_accelerated_stddev if centered else scale_by_accelerated_rms
        tracer = accelerated_trace
    else:
        scaler = scale_by_stddev if centered else scale_by_rms
        tracer = trace
    return chain(
        flip_sign_and_add_weight_decay(weight_decay, maximize),
        scaler(alpha, eps, initial_scale),
        tracer(momentum, 0.0, nesterov) if momentum else identity(),
        scale_by_neg_lr(lr),
    )


@forms("NAdam", "MetaNAdam", meta_defaults=_META)
def nadam(
    lr: Any = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    *,
    decoupled_weight_decay: bool = False,
    moment_requires_grad: bool = False,
    maximize: bool = False,
) -> GradientTransformation:
    """NAdam: Adam with Nesterov momentum (Dozat, 2016), as torch.optim.NAdam.

    Args:
        lr: learning rate, a float or a schedule.
        betas: decay rates of the first and second moment estimates.
        eps: term added to the denominator for numerical stability.
        weight_decay: weight decay coefficient.
        momentum_decay: the momentum schedule's decay.
        decoupled_weight_decay: decay the weights as AdamW does instead of adding an L2
            penalty to the gradient.
        moment_requires_grad: create the moments with ``requires_grad=True``.
        maximize: maximize the objective instead of minimizing it.
    """
    check.learning_rate("lr", lr)
    check.betas("betas", betas)
    check.boolean("decoupled_weight_decay", decoupled_weight_decay)
    core = scale_by_nadam(betas[0], betas[1], eps, momentum_decay, moment_requires_grad)
    return _around(core, lr, weight_decay, maximize, decoupled_weight_decay)


@forms("Lion", "MetaLion", meta_defaults=_META)
def lion(
    lr: Any = 1e-4,
    betas: tuple[float, float] = (0.9, 0.99),
    weight_decay: float = 0.0,
    *,
    mask: Any = None,
    moment_requires_grad: bool = False,
    maximize: bool = False,
) -> GradientTransformation:
    """Lion (Chen et al., 2023): ``p -= lr * (sign(b1 m + (1 - b1) g) + weight_decay * p)``.

    Args:
        lr: learning rate, a float or a schedule (typically 3-10x smaller than Adam's).
        betas: interpolation factor for the sign and decay rate of the momentum.
        weight_decay: decoupled weight decay coefficient.
        mask: pytree of bools (or callable returning one) selecting the decayed parameters.
        moment_requires_grad: create the momentum with ``requires_grad=True``.
        maximize: maximize the objective instead of minimizing it.

    References:
        Chen et al., "Symbolic Discovery of Optimization Algorithms", 2023.
    """
    check.learning_rate("lr", lr)
    check.betas("betas", betas)
    return chain(
        flip_sign_and_add_weight_decay(0.0, maximize),
        scale_by_lion(betas[0], betas[1], moment_requires_grad),
        add_decayed_weights(weight_decay, mask),
        scale_by_neg_lr(lr),
    )


class _ProximalLr(_DerivedLr):
    """``lr / (1 + lr * weight_decay)``: the step size of Adan's proximal weight decay."""

    name = "proximal_lr"

    def __call__(self, count: Any) -> Any:
        lr = self._lr(count)
        return lr / (1.0 + lr * self.coefficient)


@forms("Adan", "MetaAdan", meta_defaults=_META)
def adan(
    lr: Any = 1e-3,
    betas: tuple[float, float, float] = (0.98, 0.92, 0.99),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    *,
    no_prox: bool = False,
    moment_requires_grad: bool = False,
    maximize: bool = False,
) -> GradientTransformation:
    """Adan (Xie et al., 2022): adaptive Nesterov momentum.

    With ``u`` the output of :func:`difopt.transform.scale_by_adan`, the step is
    ``p = (p - lr * u) / (1 + lr * weight_decay)`` (proximal decay), or with ``no_prox``
    ``p = p * (1 - lr * weight_decay) - lr * u``.

    Args:
        lr: learning rate, a float or a schedule.
        betas: decay rates of the first moment, of the update difference, and of the second
            moment.
        eps: term added to the denominator for numerical stability.
        weight_decay: weight decay coefficient.
        no_prox: decay the weights multiplicatively instead of proximally.
        moment_requires_grad: create the moments with ``requires_grad=True``.
        maximize: maximize the objective instead of minimizing it.

    References:
        Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep
        Models", 2022.
    """
    check.learning_rate("lr", lr)
    check.betas("betas", betas, n=3)
    check.non_negative("weight_decay", weight_decay)
    check.boolean("no_prox", no_prox)
    step = lr if (no_prox or weight_decay == 0.0) else _ProximalLr(lr, weight_decay)
    if not callable(lr) and not isinstance(lr, torch.Tensor) and callable(step):
        step = step(0)  # a float: the proximal factor once (a tensor lr is read every step)
    return chain(
        flip_sign_and_add_weight_decay(0.0, maximize),
        scale_by_adan(betas[0], betas[1], betas[2], eps, moment_requires_grad),
        add_decayed_weights(weight_decay),
        scale_by_neg_lr(step),
    )


@forms("Muon", "MetaMuon", meta_defaults=_META)
def muon(
    lr: Any = 1e-3,
    weight_decay: float = 0.1,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[float, float, float] = MUON_NS_COEFFICIENTS,
    eps: float = 1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: str | None = None,
    *,
    ns_dtype: torch.dtype | None = torch.bfloat16,
    moment_requires_grad: bool = False,
    maximize: bool = False,
) -> GradientTransformation:
    """Muon (Jordan et al., 2024), as torch.optim.Muon: orthogonalized momentum for 2-D
    parameters, with decoupled weight decay.

    Each step: ``mu = momentum * mu + (1 - momentum) * g``; the direction (``mu``, or its
    Nesterov look-ahead) is orthogonalized by ``ns_steps`` Newton-Schulz iterations
    (:func:`difopt.transform.newton_schulz`) and scaled by a factor of the matrix's shape
    (``adjust_lr_fn``); the parameters become ``p - lr * (weight_decay * p + update)``.

    Every parameter must be a 2-D matrix: optimize biases, norms and embeddings with another
    optimizer (torch.optim.Muon asks the same).

    Args:
        lr: learning rate, a float or a schedule.
        weight_decay: decoupled weight decay coefficient.
        momentum: decay of the momentum buffer.
        nesterov: use the Nesterov look-ahead.
        ns_coefficients: ``(a, b, c)`` of the quintic Newton-Schulz iteration.
        eps: lower bound on the norm the direction is divided by.
        ns_steps: Newton-Schulz iterations per step.
        adjust_lr_fn: ``None``/``"original"`` (``sqrt(max(1, rows / cols))``) or
            ``"match_rms_adamw"`` (``0.2 * sqrt(max(rows, cols))``).
        ns_dtype: dtype of the iteration: ``torch.bfloat16`` as torch.optim.Muon, or ``None``
            for the parameters' own dtype (meta-gradients that must be accurate).
        moment_requires_grad: create the momentum buffer with ``requires_grad=True``.
        maximize: maximize the objective instead of minimizing it.
    """
    check.learning_rate("lr", lr)
    core = scale_by_muon(
        momentum,
        nesterov,
        ns_coefficients,
        ns_steps,
        eps,
        adjust_lr_fn,
        ns_dtype=ns_dtype,
        moment_requires_grad=moment_requires_grad,
    )
    return _around(core, lr, weight_decay, maximize, decoupled=True)


@forms("Adafactor", "MetaAdafactor")
def adafactor(
    lr: Any = 1e-2,
    beta2_decay: float = -0.8,
    eps: tuple[float | None, float] = (None, 1e-3),
    d: float = 1.0,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    """Adafactor (Shazeer & Stern, 2018), as torch.optim.Adafactor: factored second moments
    (sublinear memory for matrices), a step size relative to the parameters' RMS and bounded
    by ``min(lr, 1 / sqrt(t))``, update clipping, decoupled weight decay.

    Args:
        lr: bound on the relative step size, a float or a schedule.
        beta2_decay: exponent (<= 0) of the second-moment decay ``1 - t ** beta2_decay``.
        eps: ``(eps1, eps2)``: floor of the second moment (``None``: each parameter's dtype's
            epsilon) and of the parameter RMS in the step size.
        d: clipping threshold on the update's RMS (>= 1).
        weight_decay: decoupled weight decay coefficient.
        maximize: maximize the objective instead of minimizing it.

    Unlike torch.optim.Adafactor, whose step size and clipping factor are Python numbers
    (``.item()``), the meta form differentiates through them too.
    """
    return chain(
        flip_sign_and_add_weight_decay(0.0, maximize),
        scale_by_adafactor(lr, beta2_decay, eps, d, weight_decay),
        scale(-1.0),
    )


@forms("Rprop", "MetaRprop")
def rprop(
    lr: float = 1e-2,
    etas: tuple[float, float] = (0.5, 1.2),
    step_sizes: tuple[float, float] = (1e-6, 50.0),
    *,
    maximize: bool = False,
) -> GradientTransformation:
    """Rprop (Riedmiller & Braun, 1993), as torch.optim.Rprop: each element moves by its own
    step size in the direction of its gradient's sign; the step size grows while the sign
    holds and shrinks when it flips.

    Args:
        lr: the initial step size of every element (a float: Rprop has no global learning
            rate after the first step).
        etas: ``(decrease, increase)`` factors, ``0 < decrease < 1 < increase``.
        step_sizes: ``(minimum, maximum)`` step size.
        maximize: maximize the objective instead of minimizing it.

    Meta-gradients through Rprop steps are those of piecewise-constant steps: the update
    depends on gradients only through their signs.
    """
    if callable(lr):
        raise TypeError(
            "Invalid value for 'lr': Rprop takes a float (the initial step size), not a schedule"
        )
    check.learning_rate("lr", lr)
    if isinstance(lr, torch.Tensor):
        lr = float(lr)  # the initial step size, read once when the state is made (as torch)
    return chain(
        flip_sign_and_add_weight_decay(0.0, maximize),
        scale_by_rprop(lr, etas, step_sizes),
        scale(-1.0),
    )


@forms("ASGD", "MetaASGD")
def asgd(
    lr: Any = 1e-2,
    lambd: float = 1e-4,
    alpha: float = 0.75,
    t0: float = 1e6,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    """ASGD, averaged stochastic gradient descent (Polyak & Juditsky, 1992), as
    torch.optim.ASGD: SGD with the step size ``lr / (1 + lambd lr t) ** alpha`` and a decay
    term, plus the running average of the iterates from step ``t0`` on.

    The average is ASGD's answer; it lives in the state (``ScaleByAsgdState.ax``, in a classic
    optimizer's ``state_groups``), and the parameters are the plain iterates, as in torch.

    Args:
        lr: the initial step size, a float or a 0-d tensor (not a schedule: the decay is
            ASGD's own).
        lambd: decay term.
        alpha: power of the step-size decay.
        t0: the step after which averaging starts.
        weight_decay: L2 penalty added to the gradient.
        maximize: maximize the objective instead of minimizing it.
    """
    return chain(
        flip_sign_and_add_weight_decay(weight_decay, maximize),
        scale_by_asgd(lr, lambd, alpha, t0),
        scale(-1.0),
    )


#: The built-in optimizers: the one table that difopt, difopt.optim and difopt.optim.meta
#: generate their functional, classic and meta names (and __all__) from, and the docs their
#: list of optimizers. Each is also an entry point of the difopt.optimizers group in
#: difopt-core's pyproject.toml, like a third-party optimizer (a test checks the two agree).
OPTIMIZERS = (
    sgd,
    adam,
    adamw,
    adamax,
    radam,
    nadam,
    adadelta,
    adagrad,
    rmsprop,
    rprop,
    asgd,
    adafactor,
    lion,
    adan,
    muon,
)

__all__ = ["OPTIMIZERS", "forms", *sorted(fn.__name__ for fn in OPTIMIZERS)]
