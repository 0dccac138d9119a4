"""Krylov solvers for ``A x = b`` on pytrees: conjugate gradient, GMRES and BiCGSTAB.

Each solver views the pytree ``b`` as one vector (see :class:`~._common.Flat`), so ``A`` may
couple leaves. Tolerances follow SciPy's non-legacy rule: stop when
``norm(b - A x) <= max(rtol * norm(b), atol)``. A solver that stops on ``maxiter`` (or on a
breakdown) above that tolerance emits a :class:`ConvergenceWarning` naming the residual.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from difopt_implicit.linalg._common import (
    Flat,
    Operator,
    TensorTree,
    as_operator,
    check_maxiter,
    check_real,
    check_tolerances,
    initial_guess,
    norm,
    vdot_real,
    warn_not_converged,
)

Vector = torch.Tensor


def _setup(
    solver: str,
    a: TensorTree | Operator,
    b: TensorTree,
    x0: TensorTree | None,
    rtol: Any,
    atol: Any,
    maxiter: Any,
    m: TensorTree | Operator | None,
) -> tuple[
    Flat,
    Callable[[Vector], Vector],
    Callable[[Vector], Vector] | None,
    Vector,
    Vector,
    Vector,
    float,
]:
    check_tolerances(rtol, atol)
    check_maxiter(maxiter)
    matvec = as_operator(a, "A")
    flat = Flat(b, "b")
    op = flat.operator(matvec)
    precond = None if m is None else flat.operator(as_operator(m, "M"))
    b_vec = flat.ravel(b, "'b'")
    x = initial_guess(flat, b_vec, x0)
    # From the zero vector the residual is b itself: no product with A needed.
    r = b_vec if x0 is None else b_vec - op(x)
    tolerance = max(rtol * norm(b_vec), atol)
    return flat, op, precond, b_vec, x, r, tolerance


def cg(
    A: TensorTree | Operator,
    b: TensorTree,
    x0: TensorTree | None = None,
    *,
    rtol: float = 1e-5,
    atol: float = 0.0,
    maxiter: int | None = None,
    M: TensorTree | Operator | None = None,
) -> TensorTree:
    """Solve ``A x = b`` by (preconditioned) conjugate gradient.

    ``A`` must be Hermitian positive definite. Same signature and defaults as TorchOpt 0.7.3's
    ``torchopt.linalg.cg``, except that the default ``maxiter`` is ``10 * n`` with ``n`` the
    number of elements of ``b`` (SciPy's rule), so a 0-d ``b`` gets 10 iterations, not 0.

    Args:
        A: A function ``x -> A x`` on pytrees shaped like ``b``, or a pytree of square matrices
            of shape ``(..., n, n)``, one per leaf of ``b`` (leading dimensions are a batch).
        b: The right-hand side: a tensor or a pytree of tensors of any shapes.
        x0: Initial guess, structured like ``b``; zeros when None.
        rtol: Relative tolerance on the residual norm.
        atol: Absolute tolerance on the residual norm.
        maxiter: Maximum number of iterations; ``10 * n`` when None.
        M: Preconditioner approximating ``A^{-1}``: a function or a pytree of matrices like
            ``A``. None means no preconditioning.

    Returns:
        The solution, structured like ``b``.

    Warns:
        ConvergenceWarning: ``maxiter`` iterations did not reach the tolerance, or the
            iteration broke down (non-finite residual: ``A`` is not positive definite).

    Examples:
        >>> import torch
        >>> from difopt_implicit.linalg import cg
        >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]])
        >>> x = cg(A, torch.tensor([1.0, 2.0]), rtol=1e-7)
        >>> torch.allclose(A @ x, torch.tensor([1.0, 2.0]))
        True
    """
    flat, op, precond, b_vec, x, r, tolerance = _setup("cg", A, b, x0, rtol, atol, maxiter, M)
    maxiter = 10 * flat.numel if maxiter is None else maxiter
    z = r if precond is None else precond(r)
    p = z
    gamma = vdot_real(r, z)
    # Without a preconditioner gamma = |r|^2: the residual norm costs no extra reduction.
    residual = math.sqrt(max(float(gamma), 0.0)) if precond is None else norm(r)
    k = 0
    while residual > tolerance and k < maxiter and math.isfinite(residual):
        ap = op(p)
        alpha = gamma / vdot_real(p, ap)
        x = x + alpha * p
        r = r - alpha * ap
        z = r if precond is None else precond(r)
        gamma_next = vdot_real(r, z)
        p = z + (gamma_next / gamma) * p
        gamma = gamma_next
        residual = math.sqrt(max(float(gamma), 0.0)) if precond is None else norm(r)
        k += 1
    if not residual <= tolerance:
        warn_not_converged("cg", k, residual, tolerance, hint="; raise 'maxiter' or 'rtol'")
    return flat.unravel(x)


def _givens(a: float, b: float) -> tuple[float, float]:
    if b == 0.0:
        return 1.0, 0.0
    r = math.hypot(a, b)
    return a / r, b / r


def gmres(
    A: TensorTree | Operator,
    b: TensorTree,
    x0: TensorTree | None = None,
    *,
    rtol: float = 1e-5,
    atol: float = 0.0,
    restart: int = 20,
    maxiter: int | None = None,
    M: TensorTree | Operator | None = None,
) -> TensorTree:
    """Solve ``A x = b`` by restarted GMRES, for general (non-symmetric) real ``A``.

    The Krylov basis is orthogonalized by classical Gram-Schmidt applied twice, and the
    least-squares problem is updated with Givens rotations, so the residual is known at every
    step without extra products with ``A``. ``M`` is applied as a right preconditioner.

    Args:
        A: A function ``x -> A x`` on pytrees shaped like ``b``, or a pytree of square matrices.
        b: The right-hand side: a tensor or a pytree of real floating-point tensors.
        x0: Initial guess, structured like ``b``; zeros when None.
        rtol: Relative tolerance on the residual norm.
        atol: Absolute tolerance on the residual norm.
        restart: Size of the Krylov subspace built before each restart (capped at ``n``).
        maxiter: Maximum number of restart cycles (SciPy's meaning); ``10 * n`` when None.
        M: Preconditioner approximating ``A^{-1}``; None means none.

    Returns:
        The solution, structured like ``b``.

    Warns:
        ConvergenceWarning: ``maxiter`` cycles did not reach the tolerance.

    Examples:
        >>> import torch
        >>> from difopt_implicit.linalg import gmres
        >>> A = torch.tensor([[2.0, 1.0], [-1.0, 3.0]])   # not symmetric
        >>> x = gmres(A, torch.tensor([1.0, 2.0]), rtol=1e-7)
        >>> torch.allclose(A @ x, torch.tensor([1.0, 2.0]), atol=1e-6)
        True
    """
    if isinstance(restart, bool) or not isinstance(restart, int) or restart < 1:
        raise ValueError(f"Invalid value for 'restart': {restart!r} (expected an int >= 1)")
    flat, op, precond, b_vec, x, r, tolerance = _setup("gmres", A, b, x0, rtol, atol, maxiter, M)
    check_real(flat, "gmres")
    n = flat.numel
    maxiter = 10 * n if maxiter is None else maxiter
    restart = min(restart, n)
    apply_m = (lambda v: v) if precond is None else precond
    residual = norm(r)
    cycles = 0
    while residual > tolerance and cycles < maxiter and math.isfinite(residual):
        beta = residual
        basis = torch.empty(restart + 1, n, dtype=b_vec.dtype, device=b_vec.device)
        basis[0] = r / beta
        hessenberg = [[0.0] * restart for _ in range(restart + 1)]
        cs: list[float] = []
        sn: list[float] = []
        g = [beta] + [0.0] * restart
        steps = 0
        for j in range(restart):
            w = op(apply_m(basis[j]))
            h = torch.zeros(j + 1, dtype=w.dtype, device=w.device)
            for _ in range(2):  # Gram-Schmidt twice keeps the basis orthogonal in floats
                coef = basis[: j + 1] @ w
                w = w - basis[: j + 1].T @ coef
                h = h + coef
            new_norm = norm(w)
            column = h.tolist() + [new_norm]
            for i in range(j):  # apply the previous rotations to the new column
                a, c = column[i], column[i + 1]
                column[i], column[i + 1] = cs[i] * a + sn[i] * c, -sn[i] * a + cs[i] * c
            c_j, s_j = _givens(column[j], column[j + 1])
            cs.append(c_j)
            sn.append(s_j)
            column[j], column[j + 1] = c_j * column[j] + s_j * column[j + 1], 0.0
            g[j], g[j + 1] = c_j * g[j], -s_j * g[j]
            for i in range(j + 1):
                hessenberg[i][j] = column[i]
            steps = j + 1
            # A tiny new direction means the Krylov space is invariant: the solution is in it.
            if abs(g[j + 1]) <= tolerance or new_norm <= 1e-14 * beta:
                break
            basis[j + 1] = w / new_norm
        y = [0.0] * steps
        for i in reversed(range(steps)):  # back substitution on the triangular factor
            acc = g[i] - sum(hessenberg[i][k] * y[k] for k in range(i + 1, steps))
            y[i] = acc / hessenberg[i][i] if hessenberg[i][i] != 0.0 else 0.0
        coeffs = torch.tensor(y, dtype=b_vec.dtype, device=b_vec.device)
        x = x + apply_m(basis[:steps].T @ coeffs)
        r = b_vec - op(x)  # the true residual, also the start of the next cycle
        residual = norm(r)
        cycles += 1
    if not residual <= tolerance:
        warn_not_converged(
            "gmres", cycles, residual, tolerance, hint="; raise 'maxiter' or 'restart'"
        )
    return flat.unravel(x)


def bicgstab(
    A: TensorTree | Operator,
    b: TensorTree,
    x0: TensorTree | None = None,
    *,
    rtol: float = 1e-5,
    atol: float = 0.0,
    maxiter: int | None = None,
    M: TensorTree | Operator | None = None,
) -> TensorTree:
    """Solve ``A x = b`` by BiCGSTAB (van der Vorst, 1992), for general real ``A``.

    Two products with ``A`` per iteration and constant memory, unlike GMRES whose memory grows
    with ``restart``. ``M`` is applied as a right preconditioner.

    Args:
        A: A function ``x -> A x`` on pytrees shaped like ``b``, or a pytree of square matrices.
        b: The right-hand side: a tensor or a pytree of real floating-point tensors.
        x0: Initial guess, structured like ``b``; zeros when None.
        rtol: Relative tolerance on the residual norm.
        atol: Absolute tolerance on the residual norm.
        maxiter: Maximum number of iterations; ``10 * n`` when None.
        M: Preconditioner approximating ``A^{-1}``; None means none.

    Returns:
        The solution, structured like ``b``.

    Warns:
        ConvergenceWarning: ``maxiter`` iterations did not reach the tolerance, or the
            iteration broke down (a zero inner product).

    Examples:
        >>> import torch
        >>> from difopt_implicit.linalg import bicgstab
        >>> A = torch.tensor([[2.0, 1.0], [-1.0, 3.0]])
        >>> x = bicgstab(A, torch.tensor([1.0, 2.0]), rtol=1e-7)
        >>> torch.allclose(A @ x, torch.tensor([1.0, 2.0]), atol=1e-6)
        True
    """
    flat, op, precond, b_vec, x, r, tolerance = _setup("bicgstab", A, b, x0, rtol, atol, maxiter, M)
    check_real(flat, "bicgstab")
    maxiter = 10 * flat.numel if maxiter is None else maxiter
    apply_m = (lambda v: v) if precond is None else precond
    r_hat = r.clone()
    rho = alpha = omega = 1.0
    p = v = torch.zeros_like(r)
    residual = norm(r)
    k = 0
    breakdown = False
    while residual > tolerance and k < maxiter and math.isfinite(residual):
        rho_next = float(torch.dot(r_hat, r))
        if rho_next == 0.0:
            breakdown = True
            break
        beta = (rho_next / rho) * (alpha / omega)
        p = r + beta * (p - omega * v)
        p_hat = apply_m(p)
        v = op(p_hat)
        denominator = float(torch.dot(r_hat, v))
        if denominator == 0.0:
            breakdown = True
            break
        alpha = rho_next / denominator
        s = r - alpha * v
        k += 1
        if norm(s) <= tolerance:
            x = x + alpha * p_hat
            residual = norm(s)
            break
        s_hat = apply_m(s)
        t = op(s_hat)
        tt = float(torch.dot(t, t))
        omega = float(torch.dot(t, s)) / tt if tt != 0.0 else 0.0
        x = x + alpha * p_hat + omega * s_hat
        r = s - omega * t
        rho = rho_next
        residual = norm(r)
        if omega == 0.0:
            breakdown = True
            break
    if not residual <= tolerance:
        hint = " (breakdown: a zero inner product)" if breakdown else "; raise 'maxiter'"
        warn_not_converged("bicgstab", k, residual, tolerance, hint=hint)
    return flat.unravel(x)
