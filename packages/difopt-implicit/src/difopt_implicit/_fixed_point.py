"""``fixed_point`` and ``root``: solve ``z = f(z, *args)`` or ``F(z, *args) = 0``, differentiably.

The forward solve runs without building a graph (except with ``backward="unrolled"``); the
gradient is then attached by the chosen backward mode:

- ``implicit``: the implicit function theorem. The fixed-point map ``T`` (``f``, or
  ``z - F(z)`` for a root) is evaluated once at the detached solution, on the graph of
  everything ``f`` uses; the output has the value of ``z*`` and the gradient of ``T(z*)``, and
  a hook on ``T(z*)`` replaces the incoming cotangent ``g`` by the adjoint ``u`` that solves
  ``u = g + J^T u`` (``J = dT/dz`` at ``z*``, from one more evaluation of ``T`` in the backward
  pass, so ``f`` should be deterministic). Autograd then carries ``u^T dT/dtheta`` to every
  tensor ``T`` depends on: the ``args``, and tensors ``f`` captures (an ``nn.Module``'s
  parameters, a closure's tensors) alike.
- ``phantom``: ``k`` damped steps ``z <- (1 - damping) z + damping T(z)`` from ``z*`` (detached),
  differentiated by autograd (Geng et al., 2021); the value stays ``z*``.
- ``jfb``: one application of ``T`` at ``z*`` (detached): Jacobian-free backprop
  (Fung et al., 2022); the value stays ``z*``.
- ``unrolled``: autograd through every forward iteration (memory grows with the iterations).

Every solver works on a batch: with ``batched=True`` the leading dimension of every leaf of
``z0`` indexes independent samples. Residuals, convergence and iteration counts are per sample;
a sample that has converged keeps its iterate while the others go on (``f`` is still evaluated
on the whole batch, since its arguments are not split). Newton's linear solves and the
adjoint solves are per sample too.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from typing import Any, Callable, NamedTuple, Union

import torch

from difopt import pytree, registry
from difopt_implicit.linalg import ConvergenceWarning
from difopt_implicit.linear_solve import LinearSolver

__all__ = [
    "JFB",
    "Anderson",
    "Broyden",
    "FixedPointInfo",
    "Implicit",
    "Newton",
    "NotConvergedError",
    "Phantom",
    "Picard",
    "Unrolled",
    "fixed_point",
    "root",
]

Flat = Callable[[torch.Tensor], torch.Tensor]


class NotConvergedError(RuntimeError):
    """Raised by :func:`fixed_point` and :func:`root` with ``raise_on_failure=True``."""


class FixedPointInfo(NamedTuple):
    """What a solve did, per sample (0-d tensors when ``batched=False``, else shape ``(B,)``).

    Attributes:
        iterations: Iterations the sample took (it stops counting once it has converged).
        residual: Final residual norm: ``||f(z) - z||`` (``fixed_point``) or ``||F(z)||``
            (``root``), divided by ``||f(z)||`` (or ``||z||``) when ``stop_mode="rel"``.
        converged: Whether the residual reached ``tol``. False also when ``f`` returned a
            non-finite value; the sample then keeps its last finite iterate.
        trace: Residual norm per iteration, shape ``(iterations + 1, B)`` (row 0: at ``z0``).
    """

    iterations: torch.Tensor
    residual: torch.Tensor
    converged: torch.Tensor
    trace: torch.Tensor


# --------------------------------------------------------------------------------------------
# Argument checks


def _check_number(
    name: str, value: Any, *, low: float, high: float = math.inf, low_open: bool = True
) -> float:
    # A Python or numpy real number, or a 0-d real tensor; never a bool.
    ok = False
    number = math.nan
    if isinstance(value, torch.Tensor):
        ok = value.dim() == 0 and not value.is_complex() and value.dtype != torch.bool
    else:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        number = float(value)
        ok = math.isfinite(number)
    if ok:
        ok = (number > low if low_open else number >= low) and number <= high
    if not ok:
        bound = f"> {low}" if low_open else f">= {low}"
        bound += f" and <= {high}" if math.isfinite(high) else ""
        raise ValueError(f"Invalid value for '{name}': {value!r} (expected a float {bound})")
    return number


def _set(config: Any, name: str, value: Any) -> None:
    """Store a validated (converted) option on a frozen dataclass."""
    object.__setattr__(config, name, value)


def _check_int(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"Invalid value for '{name}': {value!r} (expected an int >= {low})")
    return value


# --------------------------------------------------------------------------------------------
# Forward solvers: configurations (frozen dataclasses, validated when built) and their runs.


@dataclasses.dataclass(frozen=True)
class Picard:
    """Damped fixed-point (Picard) iteration ``z <- (1 - damping) z + damping f(z)``.

    For ``root``, ``z <- z - damping F(z)``. Converges when the map is a contraction.

    Args:
        damping: Step in ``(0, 1]``; 1 is the plain iteration.
    """

    damping: float = 1.0

    def __post_init__(self) -> None:
        _set(self, "damping", _check_number("damping", self.damping, low=0.0, high=1.0))

    def _start(self, residual: Flat, z: torch.Tensor, g: torch.Tensor) -> _Run:
        return _PicardRun(self.damping)


@dataclasses.dataclass(frozen=True)
class Anderson:
    """Anderson acceleration (type II) with memory ``m`` (Walker and Ni, 2011).

    Each step mixes the last ``m`` iterates ``z_i`` and their images ``f(z_i)`` with weights
    ``alpha`` (summing to 1) that minimise ``||sum_i alpha_i (f(z_i) - z_i)||^2 + ridge *
    s ||alpha||^2``, ``s`` the mean squared residual of the memory (so ``ridge`` is scale-free):
    ``z <- damping * sum alpha_i f(z_i) + (1 - damping) * sum alpha_i z_i``.

    Args:
        m: Number of past iterates used (>= 1).
        damping: Mixing parameter ``beta`` in ``(0, 1]``.
        ridge: Relative Tikhonov regularisation (>= 0) of the least-squares problem; 10
            machine epsilons of the dtype are always added, so the system stays solvable.
        use_accelerated_op: Run each step that builds no graph (the forward solve of every
            backward mode but ``"unrolled"``, and the implicit adjoint) as one call of
            difopt-accel's fused CPU kernel (``difopt_accel.anderson_step_``) instead of
            about fifteen tensor operations; the same step, its small solve in double precision.
            Where it cannot run (difopt-accel not installed, a GPU, a dtype other than
            float32 and float64, inside ``torch.func`` transforms) the pure step runs, with a
            warning.
    """

    m: int = 5
    damping: float = 1.0
    ridge: float = 1e-8
    use_accelerated_op: bool = False

    def __post_init__(self) -> None:
        _check_int("m", self.m)
        _set(self, "damping", _check_number("damping", self.damping, low=0.0, high=1.0))
        _set(self, "ridge", _check_number("ridge", self.ridge, low=0.0, low_open=False))
        if not isinstance(self.use_accelerated_op, bool):
            raise TypeError(
                f"'use_accelerated_op' must be a bool, got {type(self.use_accelerated_op).__name__}"
            )

    def _ridge(self, dtype: torch.dtype) -> float:
        """The relative regularisation applied: ``ridge`` plus 10 machine epsilons."""
        return self.ridge + 10 * torch.finfo(dtype).eps

    def _start(self, residual: Flat, z: torch.Tensor, g: torch.Tensor) -> _Run:
        if torch.is_grad_enabled():
            return _AndersonGraphRun(self)
        if self.use_accelerated_op:
            provider = registry.op_provider("anderson")
            why = (
                "difopt-accel is not installed (it provides the 'anderson' op)"
                if provider is None
                else provider.anderson_rejection(z)
            )
            if why is None:
                return _AndersonFusedRun(self, provider)
            registry.warn_once(
                f"anderson: {why}",
                f"Anderson(use_accelerated_op=True): {why}; running the pure step instead",
            )
        return _AndersonRun(self)


@dataclasses.dataclass(frozen=True)
class Broyden:
    """Limited-memory Broyden's method on ``G(z) = f(z) - z`` (or ``-F(z)`` for ``root``).

    Keeps an approximation ``H = -I + U V^T`` of the inverse Jacobian of ``G`` (rank
    ``<= memory``; when full it restarts from ``-I``) and steps ``z <- z - H G(z)``.
    ``variant="good"`` updates ``H`` so that ``dz^T H`` is only changed along ``dz`` (Broyden's
    first method); ``"bad"`` is the least-change update of ``H`` itself (the second method).

    Args:
        memory: Rank of the update kept (>= 1).
        variant: ``"good"`` or ``"bad"``.
    """

    memory: int = 30
    variant: str = "good"

    def __post_init__(self) -> None:
        _check_int("memory", self.memory)
        if self.variant not in ("good", "bad"):
            raise ValueError(
                f"Invalid value for 'variant': {self.variant!r} (expected 'good' or 'bad')"
            )

    def _start(self, residual: Flat, z: torch.Tensor, g: torch.Tensor) -> _Run:
        return _BroydenRun(self, z)


@dataclasses.dataclass(frozen=True)
class Newton:
    """Newton's method with a Krylov solve: ``J dz = -G(z)`` with ``J v`` by forward-mode AD.

    ``G(z) = f(z) - z`` for ``fixed_point``, ``F(z)`` for ``root``; ``J`` is never formed. The
    samples of a batch are independent, so the batched system is block-diagonal. By default
    each sample's block is solved by its own restarted GMRES (``rtol`` 1e-5 relative to its
    own ``||G||``, restart 20), so each sample takes the steps and iterations it would take
    alone. A ``linear_solve`` given here solves the batch as one system instead (the rows of
    samples that are done or non-finite are masked out, so they cannot spoil the others with
    a NaN, but the Krylov iteration and its stopping test are shared by the active samples).

    Args:
        linear_solve: None (per-sample GMRES, above) or a solver from
            :mod:`difopt_implicit.linear_solve` (``solve_gmres()``, ``solve_bicgstab()``,
            ``solve_normal_cg()``, ...) applied to the whole batch.
        damping: Step length in ``(0, 1]``.
    """

    linear_solve: LinearSolver | None = None
    damping: float = 1.0

    def __post_init__(self) -> None:
        if self.linear_solve is not None and not callable(self.linear_solve):
            raise TypeError(
                "'linear_solve' must be a solver from difopt.linear_solve (e.g. "
                f"difopt.linear_solve.solve_gmres()), got {type(self.linear_solve).__name__}"
            )
        _set(self, "damping", _check_number("damping", self.damping, low=0.0, high=1.0))

    def _start(self, residual: Flat, z: torch.Tensor, g: torch.Tensor) -> _Run:
        return _NewtonRun(self, residual)


Solver = Union[Picard, Anderson, Broyden, Newton]
_SOLVERS: dict[str, type] = {
    "anderson": Anderson,
    "broyden": Broyden,
    "newton": Newton,
    "picard": Picard,
}


class _Run:
    """One solve's state. ``step`` proposes the next iterate; ``observe`` sees its residual."""

    def step(self, z: torch.Tensor, g: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """The next iterate; rows of samples that are not ``active`` are discarded."""
        raise NotImplementedError

    def observe(self, z: torch.Tensor, g: torch.Tensor, active: torch.Tensor) -> None:
        """Called after each step with the new iterate, its residual and the active mask."""


class _PicardRun(_Run):
    def __init__(self, damping: float) -> None:
        self.damping = damping

    def step(self, z: torch.Tensor, g: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        return z + self.damping * g


def _anderson_mix(
    GG: torch.Tensor, F: torch.Tensor, G: torch.Tensor, ones: torch.Tensor, config: Anderson
) -> torch.Tensor:
    """The next Anderson iterate from the memory: images ``F``, residuals ``G`` (``(B, k, n)``).

    ``GG`` is the Gram matrix ``G G^T`` (``(B, k, k)``, regularised in place), ``ones`` a
    ``(B, k, 1)`` tensor of ones. The weights ``alpha`` minimise ``|G^T alpha|^2 + lam
    |alpha|^2`` subject to ``sum(alpha) = 1``: ``alpha = y / sum(y)`` with
    ``(G G^T + lam I) y = 1``.
    """
    diagonal = GG.diagonal(dim1=1, dim2=2)
    scale = diagonal.mean(-1, keepdim=True)
    # Relative to the memory's scale (1 when it is zero: a converged, frozen sample), and never
    # below the dtype's resolution, so the system is never singular.
    diagonal.add_(torch.where(scale > 0, scale, 1.0), alpha=config._ridge(GG.dtype))
    y = torch.linalg.solve_ex(GG, ones)[0]
    total = y.sum(1)  # (B, 1)
    mixed_f = (y * F).sum(1) / total
    if config.damping == 1.0:
        return mixed_f
    # damping * alpha F + (1 - damping) * alpha X, with X = F - G
    return mixed_f - (1 - config.damping) * (y * G).sum(1) / total


class _AndersonRun(_Run):
    """Anderson without a graph: the memory in ring buffers, updated in place.

    ``F`` and ``G`` (``(B, m, n)``) hold the last ``m`` images ``z + g`` and residuals ``g``, a
    slot each, overwritten in turn (the order of the memory does not change the mix); ``GG``
    is their Gram matrix, of which each step computes the new row only.
    """

    def __init__(self, config: Anderson) -> None:
        self.config = config
        self.count = 0  # steps taken

    def step(self, z: torch.Tensor, g: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        m = self.config.m
        slot = self.count % m
        k = min(self.count + 1, m)
        if not self.count:
            # Made from z and g (not new_empty): batched inside torch.func.vmap if they are.
            self.F = (z + g).unsqueeze(1).repeat(1, m, 1)
            self.G = g.unsqueeze(1).repeat(1, m, 1)
            self.GG = self.G @ self.G.transpose(1, 2)  # its [:k, :k] block is kept exact
            self.ones = self.GG.new_ones(()).expand(*self.GG.shape[:2], 1)
        else:
            self.F.select(1, slot).copy_(z).add_(g)
            self.G.select(1, slot).copy_(g)
            row = (self.G[:, :k] * g.unsqueeze(1)).sum(-1)  # (B, k)
            self.GG.select(1, slot)[:, :k].copy_(row)
            self.GG.select(2, slot)[:, :k].copy_(row)
        self.count += 1
        if k == 1:
            return z + self.config.damping * g
        return _anderson_mix(
            self.GG[:, :k, :k].clone(), self.F[:, :k], self.G[:, :k], self.ones[:, :k], self.config
        )


class _AndersonFusedRun(_Run):
    """Anderson without a graph, each step one call of difopt-accel's fused kernel.

    The memory is the pure run's (``images``, ``residuals``: ``(B, m, n)``; ``gram``:
    ``(B, m, m)``), contiguous buffers the kernel updates in place.
    """

    def __init__(self, config: Anderson, provider: Any) -> None:
        self.config = config
        self.provider = provider
        self.count = 0  # steps taken

    def step(self, z: torch.Tensor, g: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if not self.count:
            batch, n = z.shape
            self.images = z.new_zeros(batch, cfg.m, n)
            self.residuals = torch.zeros_like(self.images)
            self.gram = z.new_zeros(batch, cfg.m, cfg.m)
            self.ridge = cfg._ridge(z.dtype)
        slot, k = self.count % cfg.m, min(self.count + 1, cfg.m)
        self.count += 1
        return self.provider.anderson_step_(
            self.images, self.residuals, self.gram, z.contiguous(), g.contiguous(), slot, k,
            ridge=self.ridge, damping=cfg.damping,
        )  # fmt: skip


class _AndersonGraphRun(_Run):
    """Anderson on the autograd graph (``backward="unrolled"``): the memory is a list."""

    def __init__(self, config: Anderson) -> None:
        self.config = config
        self.F: list[torch.Tensor] = []  # images z + g, newest last, at most m
        self.G: list[torch.Tensor] = []  # residuals g

    def step(self, z: torch.Tensor, g: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        self.F.append(z + g)
        self.G.append(g)
        if len(self.F) > self.config.m:
            self.F.pop(0)
            self.G.pop(0)
        if len(self.F) == 1:
            return z + self.config.damping * g
        F, G = torch.stack(self.F, 1), torch.stack(self.G, 1)
        ones = G.new_ones(()).expand(*G.shape[:2], 1)
        return _anderson_mix(G @ G.transpose(1, 2), F, G, ones, self.config)


class _BroydenRun(_Run):
    """``H = -I + U^T V`` per sample, the rank-1 terms as rows of ``(B, k, n)`` tensors.

    Without a graph ``U`` and ``V`` are ``(B, memory, n)`` buffers whose first ``k`` rows are
    written in place; on the graph (``backward="unrolled"``) each term is concatenated.
    """

    def __init__(self, config: Broyden, z: torch.Tensor) -> None:
        self.good = config.variant == "good"
        self.memory = config.memory
        self.graph = torch.is_grad_enabled()
        self.k = 0  # rank-1 terms in H
        self.buffers = False  # U and V allocated (no graph)
        self.U = self.V = self.z = self.g = z  # U, V: set at the first update

    def _apply(self, x: torch.Tensor, U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        """``-x + sum_i U_i (V_i . x)``: ``H x``, or ``H^T x`` with ``U`` and ``V`` swapped."""
        if not self.k:
            return -x
        U, V = U[:, : self.k], V[:, : self.k]
        return (U * (V * x.unsqueeze(1)).sum(-1, keepdim=True)).sum(1) - x

    def step(self, z: torch.Tensor, g: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        self.z, self.g = z, g
        return z - self._apply(g, self.U, self.V)

    def observe(self, z: torch.Tensor, g: torch.Tensor, active: torch.Tensor) -> None:
        if self.k == self.memory:
            # Full: restart from H = -I, and update that. The rank-1 terms build on each
            # other, so dropping only the oldest one (a sliding window) leaves an inconsistent
            # H that can diverge.
            self.k = 0
        dz, dg = z - self.z, g - self.g
        h_dg = self._apply(dg, self.U, self.V)
        v = self._apply(dz, self.V, self.U) if self.good else dg
        den = (v * dg).sum(-1, keepdim=True)
        # A converged sample (dz = dg = 0) or a degenerate step adds nothing, never a NaN. The
        # test is relative (|v . dg| against |v| |dg|), so it does not depend on the scale.
        scale = torch.linalg.vector_norm(v, dim=-1, keepdim=True) * torch.linalg.vector_norm(
            dg, dim=-1, keepdim=True
        )
        ok = active.unsqueeze(-1) & (den.abs() > torch.finfo(z.dtype).eps * scale)
        u = torch.where(ok, (dz - h_dg) / torch.where(ok, den, 1.0), 0.0)
        k = self.k
        if self.graph:
            u, v = u.unsqueeze(1), v.unsqueeze(1)
            self.U = torch.cat([self.U[:, :k], u], 1) if k else u
            self.V = torch.cat([self.V[:, :k], v], 1) if k else v
        else:
            if not self.buffers:  # made from u: batched inside torch.func.vmap if it is
                self.U = torch.zeros_like(u).unsqueeze(1).repeat(1, self.memory, 1)
                self.V = torch.zeros_like(self.U)
                self.buffers = True
            self.U.select(1, k).copy_(u)
            self.V.select(1, k).copy_(v)
        self.k = k + 1


class _NewtonRun(_Run):
    def __init__(self, config: Newton, residual: Flat) -> None:
        self.residual = residual
        self.damping = config.damping
        self.solve = config.linear_solve

    def step(self, z: torch.Tensor, g: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        col = active.unsqueeze(-1)

        def matvec(v: torch.Tensor) -> torch.Tensor:  # J_G v on the active rows, v elsewhere
            return torch.where(col, torch.func.jvp(self.residual, (z,), (v,))[1], v)

        # G(z) = T(z) - z: solve J_G dz = -G. The rows of inactive samples (converged, or
        # non-finite) are the identity with a zero right-hand side, so they cannot spoil the
        # others' solves with a NaN.
        rhs = torch.where(col, -g, torch.zeros_like(g))
        if self.solve is None:  # each sample's own GMRES: it converges as if alone
            dz, _ = _batched_gmres(matvec, rhs, rtol=1e-5)
        else:
            with warnings.catch_warnings():
                # An inexact inner solve is normal for Newton-Krylov; the outer residual decides.
                warnings.simplefilter("ignore", ConvergenceWarning)
                dz = self.solve(matvec, rhs)
        return z + self.damping * dz


def _batched_gmres(
    matvec: Flat, b: torch.Tensor, *, rtol: float, restart: int = 20, maxiter: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve ``A x = b`` for a block-diagonal ``A`` on ``(B, n)`` matrices, sample by sample.

    Restarted GMRES in which every row (sample) has its own Krylov basis, Givens-rotated
    Hessenberg matrix and stopping test ``||b_i - A_i x_i|| <= rtol ||b_i||``; a sample stops
    when it passes (or its residual is not finite), and its rows of later products with ``A``
    are ignored. Since ``A`` acts on each row separately, every sample gets what GMRES would
    give it alone. All reductions are elementwise products and sums (no BLAS or LAPACK call,
    whose results can vary in the last bit with the memory layout), so the result is
    reproducible. Returns ``x`` and the per-sample converged flags.
    """
    batch, n = b.shape
    restart = max(1, min(restart, n))
    maxiter = 10 * n if maxiter is None else maxiter
    x = torch.zeros_like(b)
    threshold = rtol * torch.linalg.vector_norm(b, dim=-1)
    active = torch.isfinite(threshold) & (threshold > 0)
    converged = ~active & torch.isfinite(threshold)  # b_i = 0: x_i = 0 is exact
    r = b
    for cycle in range(maxiter + 1):
        if cycle:
            r = b - matvec(x)
        beta = torch.linalg.vector_norm(r, dim=-1)
        done = active & (beta <= threshold)
        converged = converged | done
        active = active & ~done & torch.isfinite(beta)
        if cycle == maxiter or not bool(active.any()):
            break
        col = active.unsqueeze(-1)
        basis = [torch.where(col, r / torch.where(beta > 0, beta, 1).unsqueeze(-1), 0)]
        R = b.new_zeros(batch, restart, restart)  # the rotated Hessenberg matrix, per sample
        g = b.new_zeros(batch, restart + 1)  # the rotated beta e1
        g[:, 0] = torch.where(active, beta, 0)
        cs: list[torch.Tensor] = []
        sn: list[torch.Tensor] = []
        ncols = torch.zeros(batch, dtype=torch.long, device=b.device)
        running = active.clone()  # still iterating in this cycle
        for k in range(restart):
            w = torch.where(running.unsqueeze(-1), matvec(basis[k]), 0)
            h = b.new_zeros(batch, k + 1)
            for _ in range(2):  # classical Gram-Schmidt, twice
                V = torch.stack(basis, 1)  # (B, k + 1, n)
                dh = (V * w.unsqueeze(1)).sum(-1)  # (B, k + 1)
                h = h + dh
                w = w - (dh.unsqueeze(-1) * V).sum(1)
            h_next = torch.linalg.vector_norm(w, dim=-1)
            column = list(h.unbind(-1)) + [h_next]
            for j in range(k):  # the earlier rotations
                a, c = column[j], column[j + 1]
                column[j], column[j + 1] = cs[j] * a + sn[j] * c, cs[j] * c - sn[j] * a
            rho = torch.hypot(column[k], column[k + 1])
            safe = torch.where(rho > 0, rho, 1)
            cs.append(torch.where(rho > 0, column[k] / safe, 1))
            sn.append(torch.where(rho > 0, column[k + 1] / safe, 0))
            column[k] = rho
            R[:, : k + 1, k] = torch.stack(column[: k + 1], -1)
            g[:, k + 1] = -sn[k] * g[:, k]
            g[:, k] = cs[k] * g[:, k]
            res = g[:, k + 1].abs()
            ncols = torch.where(running, k + 1, ncols)
            # A sample stops when it passes, breaks down (h_next = 0: the solution is exact in
            # this basis) or goes non-finite; the others go on.
            stop = running & ((res <= threshold) | (h_next == 0) | ~torch.isfinite(res))
            running = running & ~stop
            unit = w / torch.where(h_next > 0, h_next, 1).unsqueeze(-1)
            basis.append(torch.where(running.unsqueeze(-1), unit, 0))
            if not bool(running.any()):
                break
        # Back substitution R y = g on each sample's first ncols columns (identity beyond).
        m = len(cs)
        y = [b.new_zeros(batch) for _ in range(m)]
        for i in range(m - 1, -1, -1):
            used = ncols > i
            acc = g[:, i]
            for j in range(i + 1, m):
                acc = acc - R[:, i, j] * y[j]
            y[i] = torch.where(used, acc / torch.where(used, R[:, i, i], 1), 0)
        step = b.new_zeros(batch, n)
        for i in range(m):
            step = step + y[i].unsqueeze(-1) * basis[i]
        x = torch.where(col, x + step, x)
        active = active & torch.isfinite(x).all(-1)
    return x, converged


def _solver(value: Any, *, root: bool, what: str = "'solver'") -> Solver:
    if isinstance(value, str):
        if value not in _SOLVERS:
            raise ValueError(
                f"Unknown {what}: {value!r} (expected one of {sorted(_SOLVERS)}, or an "
                "instance of Picard, Anderson, Broyden or Newton)"
            )
        return _SOLVERS[value]()
    if isinstance(value, (Picard, Anderson, Broyden, Newton)):
        return value
    raise TypeError(
        f"{what} must be one of {sorted(_SOLVERS)} or a Picard, Anderson, Broyden or Newton "
        f"instance, got {type(value).__name__}"
    )


# --------------------------------------------------------------------------------------------
# Backward modes


@dataclasses.dataclass(frozen=True)
class Implicit:
    """Implicit function theorem: solve the adjoint ``u = g + J^T u`` (``J = dT/dz`` at ``z*``).

    The adjoint of each sample is solved to a tolerance relative to its own cotangent ``g``:
    ``||u - g - J^T u|| <= tol * ||g||`` (whatever the forward ``stop_mode``), so the gradient's
    accuracy does not depend on the scale of the loss. First-order only: a backward pass with
    ``create_graph=True`` raises a ``RuntimeError``.

    Args:
        linear_solve: A solver from :mod:`difopt_implicit.linear_solve` for
            ``(I - J^T) u = g`` on the whole batch (its own ``rtol``/``atol`` apply); None
            applies the forward solver (same configuration) to the adjoint fixed point
            ``u = g + J^T u`` per sample, except for ``root`` and :class:`Newton`, which use a
            per-sample GMRES with ``rtol`` = the adjoint ``tol`` (at most 1e-5, at least 10
            machine epsilons).
        tol: Relative tolerance of the adjoint solve (see above); None uses the forward ``tol``.
        max_iter: Iteration limit of the adjoint fixed-point solve; None uses the forward one.
        solver: The fixed-point solver of the adjoint ``u = g + J^T u`` (a :class:`Picard`,
            :class:`Anderson` or :class:`Broyden` instance, or its name); None uses the
            forward's (GMRES for ``root`` and :class:`Newton`, as above). The adjoint is
            linear and contracts at the rate of ``J`` at ``z*``: plain ``Picard()`` costs a
            fraction of an Anderson iteration when ``f`` is small, but needs more iterations
            where ``J`` contracts slowly (on the DEQ of ``benchmarks/deq_digits.py``, about
            three times as many, for a backward of 6.6 against 8.3 ms in one run). Cannot be
            combined with ``linear_solve``.
    """

    linear_solve: LinearSolver | None = None
    tol: float | None = None
    max_iter: int | None = None
    solver: Picard | Anderson | Broyden | str | None = None

    def __post_init__(self) -> None:
        if self.linear_solve is not None and not callable(self.linear_solve):
            raise TypeError(
                "'linear_solve' must be a solver from difopt.linear_solve (e.g. "
                f"difopt.linear_solve.solve_gmres()), got {type(self.linear_solve).__name__}"
            )
        if self.tol is not None:
            _set(self, "tol", _check_number("tol", self.tol, low=0.0))
        if self.max_iter is not None:
            _check_int("max_iter", self.max_iter)
        if self.solver is not None:
            if self.linear_solve is not None:
                raise ValueError(
                    "Implicit: give 'linear_solve' (the adjoint as one linear system) or "
                    "'solver' (its fixed-point solver), not both"
                )
            solver = _solver(self.solver, root=False, what="Implicit 'solver'")
            if isinstance(solver, Newton):
                raise ValueError(
                    "Implicit 'solver' must be a Picard, Anderson or Broyden solver: Newton's "
                    "forward-mode products cannot act on the adjoint (use linear_solve="
                    "difopt.linear_solve.solve_gmres() for a Krylov solve)"
                )
            _set(self, "solver", solver)


@dataclasses.dataclass(frozen=True)
class Phantom:
    """Phantom gradient: autograd through ``k`` damped steps from the detached solution.

    ``z_0 = z*`` (detached), ``z_{i+1} = (1 - damping) z_i + damping T(z_i)``; the output has
    the value ``z*`` and the gradient of ``z_k`` (Geng et al., "On Training Implicit Models",
    NeurIPS 2021). ``Phantom(1, 1.0)`` is :class:`JFB`.

    Args:
        k: Number of steps (>= 1).
        damping: ``lambda`` in ``(0, 1]``.
    """

    k: int = 5
    damping: float = 0.5

    def __post_init__(self) -> None:
        _check_int("k", self.k)
        _set(self, "damping", _check_number("damping", self.damping, low=0.0, high=1.0))


@dataclasses.dataclass(frozen=True)
class JFB:
    """Jacobian-free backprop: the value ``z*`` with the gradient of ``T(z*)``, ``z*`` detached.

    Fung et al., 2022.
    """


@dataclasses.dataclass(frozen=True)
class Unrolled:
    """Autograd through every forward iteration (exact for the iterate; memory ~ iterations)."""


Backward = Union[Implicit, Phantom, JFB, Unrolled]
_BACKWARDS: dict[str, type] = {
    "implicit": Implicit,
    "jfb": JFB,
    "phantom": Phantom,
    "unrolled": Unrolled,
}


def _backward(value: Any, *, root: bool) -> Backward:
    if isinstance(value, str):
        if value not in _BACKWARDS:
            raise ValueError(
                f"Unknown 'backward': {value!r} (expected one of {sorted(_BACKWARDS)}, or an "
                "instance of Implicit, Phantom, JFB or Unrolled)"
            )
        value = _BACKWARDS[value]()
    if not isinstance(value, (Implicit, Phantom, JFB, Unrolled)):
        raise TypeError(
            f"'backward' must be one of {sorted(_BACKWARDS)} or an Implicit, Phantom, JFB or "
            f"Unrolled instance, got {type(value).__name__}"
        )
    if root and isinstance(value, (Phantom, JFB)):
        raise ValueError(
            f"'backward'={value!r} is defined for fixed points only; root() accepts "
            "'implicit' or 'unrolled' (use fixed_point with f(z) = z - F(z) for a phantom "
            "gradient of a root)"
        )
    return value


# --------------------------------------------------------------------------------------------
# Pytree <-> (B, n) matrix


class _Layout:
    """The leaves of ``z0`` as one ``(B, n)`` matrix (``B = 1`` when not batched), and back."""

    def __init__(self, z0: Any, batched: bool) -> None:
        flat, self.spec = pytree.tree_flatten(z0, namespace=pytree.NAMESPACE)
        if not flat:
            raise ValueError(f"'z0' must contain at least one tensor, got {z0!r}")
        for leaf in flat:
            if not isinstance(leaf, torch.Tensor):
                raise TypeError(
                    "'z0' must be a tensor or a pytree of tensors, but it has a leaf of type "
                    f"{type(leaf).__name__}"
                )
        dtypes = {t.dtype for t in flat}
        if len(dtypes) > 1 or not flat[0].is_floating_point():
            raise TypeError(
                f"the tensors of 'z0' must share one floating-point dtype, got {sorted(map(str, dtypes))}"
            )
        if len({t.device for t in flat}) > 1:
            raise ValueError("the tensors of 'z0' must be on one device")
        self.batched = batched
        if batched:
            sizes = {t.shape[0] if t.dim() else None for t in flat}
            if None in sizes or len(sizes) != 1:
                raise ValueError(
                    "with batched=True every tensor of 'z0' must have the same leading (batch) "
                    f"dimension, got shapes {[tuple(t.shape) for t in flat]}"
                )
            self.batch = flat[0].shape[0]
        else:
            self.batch = 1
        self.shapes = [t.shape for t in flat]
        # z0 a single tensor: its (B, n) view needs no pytree walk (and no reshape if 2-d).
        self.tensor = isinstance(z0, torch.Tensor)
        self.matrix = self.tensor and z0.dim() == 2 and batched
        self.sizes = [t.numel() // self.batch if self.batch else 0 for t in flat]
        self.dtype = flat[0].dtype
        self.device = flat[0].device

    def ravel(self, tree: Any, what: str) -> torch.Tensor:
        if (
            self.tensor
            and isinstance(tree, torch.Tensor)
            and tree.shape == self.shapes[0]
            and tree.dtype == self.dtype
        ):
            return tree if self.matrix else tree.reshape(self.batch, -1)
        flat, spec = pytree.tree_flatten(tree, namespace=pytree.NAMESPACE)
        if (
            spec != self.spec
            or any(not isinstance(t, torch.Tensor) for t in flat)
            or any(t.shape != s for t, s in zip(flat, self.shapes))
        ):
            got = [
                tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in flat
            ]
            raise ValueError(
                f"'{what}' must return a value structured like 'z0' ({self.spec} with shapes "
                f"{[tuple(s) for s in self.shapes]}), got {spec} with shapes {got}"
            )
        wrong = [t.dtype for t in flat if t.dtype != self.dtype]
        if wrong:
            raise ValueError(
                f"'{what}' must return tensors of the dtype of 'z0' ({self.dtype}), got {wrong[0]}"
            )
        if len(flat) == 1:
            return flat[0].reshape(self.batch, -1)
        return torch.cat([t.reshape(self.batch, -1) for t in flat], 1)

    def unravel(self, z: torch.Tensor) -> Any:
        if self.tensor:
            return z if self.matrix else z.reshape(self.shapes[0])
        if len(self.shapes) == 1:
            return pytree.tree_unflatten(self.spec, [z.reshape(self.shapes[0])])
        parts = torch.split(z, self.sizes, 1)
        leaves = [p.reshape(s) for p, s in zip(parts, self.shapes)]
        return pytree.tree_unflatten(self.spec, leaves)

    def per_sample(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.batched else t[0]


# --------------------------------------------------------------------------------------------
# The iteration


def _no_sample_active(active: torch.Tensor) -> bool:
    """Whether every sample is done; False when that cannot be known (inside torch.func.vmap)."""
    try:
        return not bool(active.any())
    except RuntimeError as exc:  # vmap forbids data-dependent control flow: run max_iter
        if "vmap" in str(exc) or "data-dependent" in str(exc):
            return False
        raise


def _iterate(
    residual: Flat,
    z: torch.Tensor,
    solver: Solver,
    tol: float,
    max_iter: int,
    stop_mode: str,
    check_iterate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Run ``solver`` on ``G(z) = residual(z)`` from ``z`` (a ``(B, n)`` matrix).

    A sample is active while its residual is finite and above ``tol``; a step that gives it a
    non-finite iterate or residual is discarded and the sample stops there (not converged).
    ``check_iterate=False`` says that a finite residual implies a finite iterate (true of
    ``G(z) = T(z) - z``: a non-finite ``z`` makes ``G`` non-finite), which saves a test per
    step. Returns the final iterate, its residual vector, the per-sample iteration counts, the
    converged flags and the trace of residual norms.
    """

    def norm(z: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The residual, and a per-sample value that is finite iff the sample is finite.
        r = torch.linalg.vector_norm(g, dim=-1)
        if stop_mode == "rel":
            image = torch.linalg.vector_norm(z + g, dim=-1)  # finite: z + g and g finite
            return r / (image + torch.finfo(z.dtype).tiny), r + image
        if check_iterate:
            return r, torch.where(torch.isfinite(z).all(-1), r, math.inf)
        return r, r

    g = residual(z)
    res, check = norm(z, g)
    finite = check < math.inf  # check >= 0 unless NaN
    active = finite & (res > tol)
    run = solver._start(residual, z, g)
    # The active masks before each step: the iteration counts are their sum.
    was_active: list[torch.Tensor] = []
    trace = [res.detach()]
    for _ in range(max_iter):
        if _no_sample_active(active):
            break
        z_new = run.step(z, g, active)
        g_new = residual(z_new)
        res_new, check = norm(z_new, g_new)
        # A sample whose step gave a non-finite value stops where it was.
        take = active & (check < math.inf)
        col = take.unsqueeze(-1)
        z = torch.where(col, z_new, z)
        g = torch.where(col, g_new, g)
        res = torch.where(take, res_new, res)
        was_active.append(active)
        active = take & (res > tol)
        run.observe(z, g, take)
        trace.append(res.detach())
    # A sample that went non-finite kept its residual above tol (it was active).
    converged = finite & (res <= tol)
    if was_active:
        iterations = torch.stack(was_active).sum(0)
    else:
        iterations = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
    return z, g, iterations, converged, trace


# --------------------------------------------------------------------------------------------
# Backward attachment


def _straight_through(z_star: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The value of ``z*`` with the gradient of ``out``, sample by sample.

    Where ``out`` is not finite (``f`` gave a NaN or an inf at ``z*``) the sample is ``z*``,
    without a gradient: never ``NaN - NaN``. When nothing ``out`` depends on requires grad the
    result is ``z*`` detached, so the value never depends on the grad mode.
    """
    z_star = z_star.detach()
    if not out.requires_grad:
        return z_star
    ok = torch.isfinite(out).all(-1, keepdim=True)
    return torch.where(ok, z_star + (out - out.detach()), z_star)


_SECOND_ORDER = (
    "backward='implicit' gives first-order gradients only: its adjoint is solved without a "
    "graph, so a backward pass with create_graph=True (or torch.autograd.grad of a gradient, "
    "e.g. a Hessian-vector product) would silently give wrong second derivatives. Use "
    "backward='unrolled', 'phantom' or 'jfb' (plain autograd) for higher-order gradients"
)


def _attach_implicit(
    T: Flat,
    z_star: torch.Tensor,
    config: Implicit,
    solver: Solver,
    tol: float,
    max_iter: int,
    root: bool,
) -> torch.Tensor:
    out = T(z_star)
    if not out.requires_grad:
        return z_star.detach()  # nothing T uses requires grad
    ok = torch.isfinite(out).all(-1, keepdim=True)  # samples with a gradient

    def adjoint(grad: torch.Tensor | None) -> torch.Tensor | None:
        if grad is None:  # an undefined (zero) cotangent: the adjoint is zero too
            return None
        # J = dT/dz at z*, from one more evaluation of T (the forward graph has no z branch).
        try:
            with torch.enable_grad():
                z_leaf = z_star.detach().requires_grad_()
                out_z = T(z_leaf)
        except RuntimeError as exc:
            if "functorch" not in str(exc):
                raise
            raise RuntimeError(
                "backward='implicit' cannot run inside a torch.func transform (torch.func.grad, "
                "or vmap of it): its backward pass calls autograd on the solution. Use "
                "backward='jfb', 'phantom' or 'unrolled' there, or loss.backward() outside it"
            ) from exc
        if torch.is_grad_enabled():  # autograd runs hooks in grad mode iff create_graph=True
            raise RuntimeError(_SECOND_ORDER)

        every_ok = _no_sample_active(~ok)

        def jt(v: torch.Tensor) -> torch.Tensor:  # J^T v on the samples with a gradient
            (vjp,) = torch.autograd.grad(out_z, z_leaf, v, retain_graph=True, allow_unused=True)
            if vjp is None:
                return torch.zeros_like(v)
            return vjp if every_ok else torch.where(ok, vjp, 0.0)

        if not every_ok:
            grad = torch.where(ok, grad, 0.0)
        with torch.no_grad():
            if config.linear_solve is not None:  # the whole batch as one system
                return config.linear_solve(lambda v: v - jt(v), grad)
            # Each sample's adjoint is solved to a tolerance relative to its own |g|, so the
            # gradient does not depend on the scale of the loss.
            adj_tol = config.tol if config.tol is not None else tol
            if config.solver is None and (root or isinstance(solver, Newton)):
                # Newton's forward-mode products cannot go through autograd.grad: GMRES, to the
                # forward tolerance within the dtype's resolution, sample by sample.
                rtol = min(max(adj_tol, 10 * torch.finfo(grad.dtype).eps), 1e-5)
                u, converged = _batched_gmres(lambda v: v - jt(v), grad, rtol=rtol)
                what = "GMRES solve"
            else:
                # The adjoint is linear in g: solve it for g / |g| with the absolute test, which
                # is the test |u - g - J^T u| <= tol |g| for g (a zero g gives u = 0 at once).
                scale = torch.linalg.vector_norm(grad, dim=-1, keepdim=True)
                scale = torch.where(scale > 0, scale, torch.ones_like(scale))
                g_unit = grad / scale
                u, _, _, converged, _ = _iterate(
                    lambda u: jt(u) + g_unit - u,
                    g_unit,
                    # Implicit() turned a name into its solver; None: the forward's.
                    config.solver
                    if isinstance(config.solver, (Picard, Anderson, Broyden))
                    else solver,
                    adj_tol,
                    config.max_iter if config.max_iter is not None else max_iter,
                    "abs",
                    check_iterate=False,
                )
                u = u * scale
                what = "fixed point"
            if not _no_sample_active(~converged):
                warnings.warn(
                    f"the adjoint {what} of the implicit backward did not converge for "
                    f"{int((~converged).sum())} of {converged.numel()} sample(s); the gradient "
                    "may be inaccurate (raise Implicit(max_iter=...) or pass a linear_solve)",
                    ConvergenceWarning,
                    stacklevel=2,
                )
        return u

    out.register_hook(adjoint)
    # The value is z* itself (T(z*) differs from it by up to the tolerance; for a root, by a
    # step that need not be small in z); the gradient flows through T(z*).
    return _straight_through(z_star, out)


_EAGER_SOLVE: list[Callable[..., Any]] = []


def _solve_outside_compile(*args: Any, **kwargs: Any) -> tuple[Any, FixedPointInfo]:
    """``_solve``, run eagerly when called from code that ``torch.compile`` is tracing.

    The solver stops on a data-dependent test and its memory grows with the iterations, so
    tracing it would recompile at every iteration count; instead it is a graph break, and the
    model around it is compiled. ``torch.compiler.disable`` imports dynamo: only done here.
    """
    if torch.compiler.is_compiling():
        if not _EAGER_SOLVE:
            _EAGER_SOLVE.append(torch.compiler.disable(_solve, recursive=True))
        return _EAGER_SOLVE[0](*args, **kwargs)
    return _solve(*args, **kwargs)


def _solve(
    T: Callable[..., Any],
    z0: Any,
    args: tuple[Any, ...],
    *,
    root: bool,
    name: str,
    solver: Any,
    backward: Any,
    tol: Any,
    max_iter: Any,
    stop_mode: Any,
    batched: Any,
    raise_on_failure: Any,
) -> tuple[Any, FixedPointInfo]:
    if not callable(T):
        raise TypeError(f"'{name}' must be callable, got {type(T).__name__}")
    solver_cfg = _solver(solver, root=root)
    backward_cfg = _backward(backward, root=root)
    tol = _check_number("tol", tol, low=0.0)
    max_iter = _check_int("max_iter", max_iter)
    if stop_mode not in ("abs", "rel"):
        raise ValueError(f"Invalid value for 'stop_mode': {stop_mode!r} (expected 'abs' or 'rel')")
    for flag, value in (("batched", batched), ("raise_on_failure", raise_on_failure)):
        if not isinstance(value, bool):
            raise TypeError(f"'{flag}' must be a bool, got {type(value).__name__}")
    if isinstance(backward_cfg, Unrolled) and isinstance(solver_cfg, Newton):
        raise ValueError(
            "'backward'='unrolled' cannot differentiate through solver=Newton (its Krylov "
            "solve updates buffers in place); use 'implicit', or an unrolled Picard, Anderson "
            "or Broyden solve"
        )
    layout = _Layout(z0, batched)

    def fixed_map(z: torch.Tensor) -> torch.Tensor:  # T(z), on (B, n) matrices
        out = layout.ravel(T(layout.unravel(z), *args), name)
        return z - out if root else out

    def residual(z: torch.Tensor) -> torch.Tensor:  # G(z) = T(z) - z (root: -F(z))
        out = layout.ravel(T(layout.unravel(z), *args), name)
        return -out if root else out - z

    start = layout.ravel(z0, "z0").detach()
    unrolled = isinstance(backward_cfg, Unrolled) and torch.is_grad_enabled()
    with torch.set_grad_enabled(unrolled):
        z, g, iterations, converged, trace = _iterate(
            residual, start, solver_cfg, tol, max_iter, stop_mode, check_iterate=root
        )
    info = FixedPointInfo(
        iterations=layout.per_sample(iterations),
        residual=layout.per_sample(trace[-1]),
        converged=layout.per_sample(converged),
        trace=torch.stack(trace) if layout.batched else torch.stack(trace)[:, 0],
    )
    if raise_on_failure and not _no_sample_active(~converged):
        bad = int((~converged).sum())
        raise NotConvergedError(
            f"{'root' if root else 'fixed_point'}: {bad} of {converged.numel()} sample(s) did "
            f"not converge with solver={solver_cfg!r} in max_iter={max_iter} iterations: "
            f"largest residual {float(trace[-1].max()):.3g} > tol={tol:g} (stop_mode="
            f"{stop_mode!r}); raise 'max_iter', loosen 'tol' or change 'solver'"
        )
    if not torch.is_grad_enabled() or unrolled:
        return layout.unravel(z if unrolled else z.detach()), info
    if isinstance(backward_cfg, Implicit):
        out = _attach_implicit(fixed_map, z.detach(), backward_cfg, solver_cfg, tol, max_iter, root)
    elif isinstance(backward_cfg, Phantom):
        steps = z.detach()
        for _ in range(backward_cfg.k):
            steps = steps + backward_cfg.damping * (fixed_map(steps) - steps)
        out = _straight_through(z, steps)
    else:  # JFB
        out = _straight_through(z, fixed_map(z.detach()))
    return layout.unravel(out), info


def fixed_point(
    f: Callable[..., Any],
    z0: Any,
    *args: Any,
    solver: Any = "anderson",
    backward: Any = "implicit",
    tol: float = 1e-5,
    max_iter: int = 100,
    stop_mode: str = "abs",
    batched: bool = False,
    raise_on_failure: bool = False,
) -> tuple[Any, FixedPointInfo]:
    """Solve ``z = f(z, *args)`` and return ``(z*, info)``, differentiable in ``args``.

    ``z0`` and ``f``'s output are a tensor or a pytree of tensors of one floating dtype. The
    solve runs without a graph (except ``backward="unrolled"``); the backward mode attaches the
    gradient with respect to every tensor ``f`` uses: ``args``, and the parameters of an
    ``nn.Module`` ``f`` or the tensors a closure captures. The returned value is the solution
    ``z*`` in every mode and grad mode; ``"implicit"``, ``"jfb"`` and ``"phantom"`` give it the
    gradient of their expression (the adjoint through ``f(z*)``, ``f(z*)``, the ``k`` damped
    steps from ``z*``). A sample for which that expression is not finite (``f`` returned a NaN
    or an inf at ``z*``) keeps the value ``z*`` (its last finite iterate) and gets no gradient.
    First-order gradients only for ``"implicit"`` (``create_graph=True`` raises).

    Args:
        f: ``f(z, *args)``, returning a value structured like ``z0``.
        z0: Initial guess.
        *args: Passed to ``f``; gradients reach every tensor in them.
        solver: ``"anderson"``, ``"broyden"``, ``"picard"``, ``"newton"``, or a configured
            :class:`Anderson`, :class:`Broyden`, :class:`Picard` or :class:`Newton`.
        backward: How gradients reach ``args`` and the tensors the function captures:
            ``"implicit"`` (or :class:`Implicit`), ``"phantom"`` (:class:`Phantom`),
            ``"jfb"``, ``"unrolled"``.
        tol: Tolerance (> 0) on each sample's residual norm.
        max_iter: Maximum number of iterations (>= 1).
        stop_mode: ``"abs"`` (the residual norm) or ``"rel"`` (divided by the norm of the image).
        batched: Whether the leading dimension of every leaf of ``z0`` indexes independent
            samples, each with its own convergence test.
        raise_on_failure: Raise :class:`NotConvergedError` when a sample does not converge,
            instead of only reporting it in the info.

    Returns:
        ``(z, info)``: the solution, structured like ``z0``, and a :class:`FixedPointInfo`.

    Raises:
        TypeError: ``f`` not callable, ``z0`` not a pytree of floating tensors of one dtype, a
            ``solver``/``backward`` of the wrong type, a non-bool flag.
        ValueError: ``tol <= 0``, ``max_iter < 1``, an unknown ``solver``/``backward``/
            ``stop_mode``, batch dimensions that differ, ``f`` returning the wrong structure
            or shapes.
        NotConvergedError: with ``raise_on_failure=True``, a sample that did not converge.

    Examples:
        >>> import torch
        >>> from difopt_implicit import fixed_point
        >>> a = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
        >>> z, info = fixed_point(lambda z, a: a * torch.cos(z), torch.zeros((), dtype=a.dtype), a,
        ...                     tol=1e-10)
        >>> bool(info.converged), round(float(z), 6)
        (True, 0.450184)
        >>> (dz,) = torch.autograd.grad(z, a)  # cos z / (1 + a sin z), by the IFT
        >>> round(float(dz), 6) == round(float(torch.cos(z) / (1 + a * torch.sin(z))), 6)
        True
    """
    return _solve_outside_compile(
        f,
        z0,
        args,
        root=False,
        name="f",
        solver=solver,
        backward=backward,
        tol=tol,
        max_iter=max_iter,
        stop_mode=stop_mode,
        batched=batched,
        raise_on_failure=raise_on_failure,
    )


def root(
    F: Callable[..., Any],
    z0: Any,
    *args: Any,
    solver: Any = "newton",
    backward: Any = "implicit",
    tol: float = 1e-5,
    max_iter: int = 100,
    stop_mode: str = "abs",
    batched: bool = False,
    raise_on_failure: bool = False,
) -> tuple[Any, FixedPointInfo]:
    """Solve ``F(z, *args) = 0`` and return ``(z*, info)``, differentiable in ``args``.

    The same machinery as :func:`fixed_point` on the map ``T(z) = z - F(z)``; the implicit
    backward solves ``dF/dz^T u = g`` (by default with ``solve_gmres()``). ``"phantom"`` and
    ``"jfb"`` are defined for fixed points only. With ``stop_mode="rel"`` the residual
    ``||F(z)||`` is divided by ``||z - F(z)||``.

    Args:
        F: ``F(z, *args)``, returning a value structured like ``z0``.
        z0: Initial guess.
        *args: Passed to ``F``; gradients reach every tensor in them.
        solver: ``"anderson"``, ``"broyden"``, ``"picard"``, ``"newton"``, or a configured
            :class:`Anderson`, :class:`Broyden`, :class:`Picard` or :class:`Newton`.
        backward: How gradients reach ``args`` and the tensors the function captures:
            ``"implicit"`` (or :class:`Implicit`), ``"phantom"`` (:class:`Phantom`),
            ``"jfb"``, ``"unrolled"``.
        tol: Tolerance (> 0) on each sample's residual norm.
        max_iter: Maximum number of iterations (>= 1).
        stop_mode: ``"abs"`` (the residual norm) or ``"rel"`` (divided by the norm of the image).
        batched: Whether the leading dimension of every leaf of ``z0`` indexes independent
            samples, each with its own convergence test.
        raise_on_failure: Raise :class:`NotConvergedError` when a sample does not converge,
            instead of only reporting it in the info.

    Returns:
        ``(z, info)``: the root, structured like ``z0``, and a :class:`FixedPointInfo`.

    Raises:
        TypeError, ValueError, NotConvergedError: as :func:`fixed_point`.

    Examples:
        >>> import torch
        >>> from difopt_implicit import root
        >>> a = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
        >>> z0 = torch.ones((), dtype=torch.float64)
        >>> z, info = root(lambda z, a: z * z - a, z0, a, tol=1e-12)
        >>> round(float(z), 8), int(info.iterations) < 10
        (1.41421356, True)
        >>> (dz,) = torch.autograd.grad(z, a)  # 1 / (2 sqrt(a))
        >>> round(float(dz), 6)
        0.353553
    """
    return _solve_outside_compile(
        F,
        z0,
        args,
        root=True,
        name="F",
        solver=solver,
        backward=backward,
        tol=tol,
        max_iter=max_iter,
        stop_mode=stop_mode,
        batched=batched,
        raise_on_failure=raise_on_failure,
    )
