"""Problems shared by the CPU and CUDA tests: option tables, an unrolled meta-loss."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest
import torch

import difopt
import difopt_accel

# alias, options: every option of the parity table.
OPTIONS: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
    "adam": (difopt.adam, {}),
    "eps_root": (difopt.adam, {"eps_root": 1e-6}),
    "maximize": (difopt.adam, {"maximize": True}),
    "weight_decay": (difopt.adam, {"weight_decay": 0.1}),
    "adamw": (difopt.adamw, {"weight_decay": 0.1}),
    "betas": (difopt.adam, {"betas": (0.5, 0.9), "eps": 1e-6}),
}
# alias, options: SGD (momentum, the fused trace op) and RMSProp (the fused rms op, and trace
# with momentum), every option that reaches a fused op.
SGD_RMSPROP_OPTIONS: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
    "sgd-momentum": (difopt.sgd, {"momentum": 0.9}),
    "sgd-dampening": (difopt.sgd, {"momentum": 0.5, "dampening": 0.5}),
    "sgd-nesterov": (difopt.sgd, {"momentum": 0.9, "nesterov": True}),
    "sgd-weight_decay-maximize": (
        difopt.sgd,
        {"momentum": 0.9, "weight_decay": 0.1, "maximize": True},
    ),
    "rmsprop": (difopt.rmsprop, {}),
    "rmsprop-alpha-eps": (difopt.rmsprop, {"alpha": 0.5, "eps": 1e-3}),
    "rmsprop-initial_scale": (difopt.rmsprop, {"initial_scale": 0.1}),
    "rmsprop-centered": (difopt.rmsprop, {"centered": True}),
    "rmsprop-momentum": (difopt.rmsprop, {"momentum": 0.9}),
    "rmsprop-centered-nesterov": (
        difopt.rmsprop,
        {"centered": True, "momentum": 0.9, "nesterov": True},
    ),
    "rmsprop-weight_decay-maximize": (difopt.rmsprop, {"weight_decay": 0.1, "maximize": True}),
}

# RMSProp followed by momentum: the buffer sums RMSProp outputs of magnitude up to ~10 (the
# first steps, from nu = 0) and of varying signs. difopt's pure path takes torch's CPU sqrt,
# which in torch 2.13's x86 build is not correctly rounded (about one float32 result in five
# is an ulp off); the fused kernels take the correctly rounded one (IEEE sqrt, as std::sqrt
# and CUDA's sqrt are). Where the buffer nearly cancels, the two float32 sums then differ
# by about an ulp of their terms (~1e-6 absolute). These options are compared with the pure
# path computing a correctly rounded sqrt (everything else unchanged), which the fused path
# matches to 1e-6 (bit for bit in fact), and with the unmodified pure path to float32
# rounding (test_parity.py: test_rms_then_momentum_matches_the_unmodified_pure_path).
ROUNDING_SENSITIVE = {"rmsprop-momentum", "rmsprop-centered-nesterov"}


def _correctly_rounded_foreach_sqrt(xs: list[torch.Tensor]) -> list[torch.Tensor]:
    return [x.double().sqrt().to(x.dtype) for x in xs]


def correctly_rounded_oracle(option: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """For a ROUNDING_SENSITIVE option, give the pure path a correctly rounded sqrt."""
    if option in ROUNDING_SENSITIVE:
        monkeypatch.setattr(torch, "_foreach_sqrt", _correctly_rounded_foreach_sqrt)


# transformation, options: every option of the fused RMSProp and momentum transformations,
# built from difopt_accel and from difopt.transform (the oracle) alike.
TRANSFORMS: dict[str, tuple[str, dict[str, Any]]] = {
    "rms": ("scale_by_rms", {}),
    "rms-alpha-eps": ("scale_by_rms", {"alpha": 0.5, "eps": 1e-3}),
    "rms-initial_scale": ("scale_by_rms", {"alpha": 0.99, "initial_scale": 0.1}),
    "stddev": ("scale_by_stddev", {}),
    "stddev-alpha-eps": ("scale_by_stddev", {"alpha": 0.5, "eps": 1e-3}),
    "stddev-initial_scale": ("scale_by_stddev", {"alpha": 0.99, "initial_scale": 0.1}),
    "trace": ("trace", {}),
    "trace-momentum": ("trace", {"momentum": 0.5}),
    "trace-dampening": ("trace", {"dampening": 0.5}),
    "trace-nesterov": ("trace", {"nesterov": True}),
    "trace-moments-grad": ("trace", {"moment_requires_grad": True}),
}


def transform_pair(option: str) -> tuple[Any, Any]:
    """(fused, pure) transformations of a TRANSFORMS option."""
    name, kwargs = TRANSFORMS[option]
    return getattr(difopt_accel, name)(**kwargs), getattr(difopt.transform, name)(**kwargs)


SHAPES = [(16, 8), (8,), (3, 5, 2), ()]
STEPS = 50
TOL = {"rtol": 1e-6, "atol": 1e-6}


def grads_sequence(device: str, dtype: torch.dtype, steps: int = STEPS) -> list[list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [
        [torch.randn(s, generator=gen, dtype=dtype).to(device) for s in SHAPES]
        for _ in range(steps)
    ]


def initial_params(device: str, dtype: torch.dtype) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    return [torch.randn(s, generator=gen, dtype=dtype).to(device) for s in SHAPES]


def leaves(tree: Any) -> list[torch.Tensor]:
    return difopt.pytree.tree_leaves(tree, namespace=difopt.pytree.NAMESPACE)


def assert_trees_close(a: Any, b: Any, **tol: float) -> None:
    la, lb = leaves(a), leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        torch.testing.assert_close(x, y, **(tol or TOL))


def classic_steps(
    alias: Callable[..., Any], kwargs: dict[str, Any], device: str, lr: float = 1e-2
) -> Iterator[tuple[Any, Any]]:
    """Runs the classic optimizer of ``alias`` fused (``use_accelerated_op=True``) and pure
    on the same gradients; yields ``(fused, pure)``, each ``(params, state_groups)``, after
    every one of the STEPS steps."""
    classic = difopt.optim.classic_class(alias)
    pure_p = [torch.nn.Parameter(x) for x in initial_params(device, torch.float32)]
    fused_p = [torch.nn.Parameter(x.detach().clone()) for x in pure_p]
    pure = classic(pure_p, lr=lr, **kwargs)
    fused = classic(fused_p, lr=lr, use_accelerated_op=True, **kwargs)
    for grads in grads_sequence(device, torch.float32):
        for ps in (pure_p, fused_p):
            for p, g in zip(ps, grads):
                p.grad = g.clone()
        pure.step()
        fused.step()
        yield (fused_p, fused.state_groups), (pure_p, pure.state_groups)


def functional_steps(
    alias: Callable[..., Any], kwargs: dict[str, Any], device: str, lr: float = 1e-2
) -> Iterator[tuple[Any, Any]]:
    """Runs ``alias``'s update (``inplace=False``, the differentiable mode) fused and pure on
    the same gradients and parameters; yields ``(fused, pure)``, each ``(updates, state)``,
    after every one of the STEPS steps."""
    pure = alias(lr, **kwargs)
    fused = alias(lr, use_accelerated_op=True, **kwargs)
    params = initial_params(device, torch.float32)
    s_pure, s_fused = pure.init(params), fused.init(params)
    for grads in grads_sequence(device, torch.float32):
        u_pure, s_pure = pure.update(grads, s_pure, params=params, inplace=False)
        u_fused, s_fused = fused.update(grads, s_fused, params=params, inplace=False)
        yield (u_fused, s_fused), (u_pure, s_pure)
        params = [p + u for p, u in zip(params, u_pure)]


def meta_loss_fn(
    make_step: Callable[..., Any], device: str, eps_root: float
) -> tuple[Callable[..., torch.Tensor], tuple[torch.Tensor, ...]]:
    """``f(w, b, z)``: the outer loss after 3 unrolled steps of ``make_step`` (float64).

    ``z`` has an exactly-zero inner gradient (a ReLU that stays off), so its second moment
    stays 0, the case where sqrt's derivative needs the zero subgradient (eps_root=0).
    ``make_step(params, grads, state, t) -> (params, state)`` takes one differentiable step.
    """
    gen = torch.Generator().manual_seed(3)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(device)

    x, xq = rand(5, 3), rand(4, 3)
    inputs = (rand(3, 2).requires_grad_(), rand(2).requires_grad_(), rand(3).requires_grad_())

    def inner(w: torch.Tensor, b: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(x @ w + b) ** 2).sum() + torch.relu(z - 10.0).sum()

    def f(w: torch.Tensor, b: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        params: tuple[torch.Tensor, ...] = (w, b, z)
        state = None
        for t in range(3):
            grads = torch.autograd.grad(inner(*params), params, create_graph=True)
            params, state = make_step(params, grads, state, t)
        w3, b3, z3 = params
        return torch.sin(xq @ w3 + b3).sum() + (z3**2).sum()

    return f, inputs
