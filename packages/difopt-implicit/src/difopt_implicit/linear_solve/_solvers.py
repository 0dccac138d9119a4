"""Linear solvers ``solver(matvec, b) -> x`` for implicit differentiation.

Each public function validates its keyword arguments when it is called, so a bad option fails
where the solver is configured, not in the middle of a backward pass, and returns a solver for
:func:`difopt_implicit.custom_root`'s ``solve=``. ``matvec`` is a function on pytrees shaped
like ``b``; ``ridge`` adds ``ridge * I`` to the operator the solver inverts.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import torch

from difopt import pytree
from difopt_implicit import linalg
from difopt_implicit.linalg._common import (
    Flat,
    Operator,
    TensorTree,
    check_maxiter,
    check_tolerances,
    leaves,
)
from difopt_implicit.linalg._ns import check_series

LinearSolver = Callable[[Operator, TensorTree], TensorTree]

_ITERATIVE = ("rtol", "atol", "maxiter", "M")


# The solver's own arguments, which TorchOpt's factories also accept (they bind everything with
# functools.partial): keywords given at call time replace them.
_CALL_ARGS = ("matvec", "b")


def _check_kwargs(solver: str, kwargs: dict[str, Any], accepted: tuple[str, ...]) -> None:
    unknown = sorted(set(kwargs) - set(accepted) - set(_CALL_ARGS))
    if unknown:
        raise TypeError(
            f"{solver}() got unexpected keyword argument(s) {unknown}; accepted: "
            f"{', '.join(accepted)}"
        )
    ridge = kwargs.get("ridge")
    if ridge is not None and (
        isinstance(ridge, bool)
        or not isinstance(ridge, (int, float))
        or not math.isfinite(ridge)
        or ridge < 0
    ):
        raise ValueError(f"Invalid value for 'ridge': {ridge!r} (expected None or a float >= 0)")
    init = kwargs.get("init")
    if init is not None:
        leaves(init, "init")
    check_tolerances(kwargs.get("rtol", 1e-5), kwargs.get("atol", 0.0))
    check_maxiter(kwargs.get("maxiter"))


def _with_ridge(matvec: Operator, ridge: float | None) -> Operator:
    if not ridge:
        return matvec
    return lambda x: pytree.tree_add_scalar_mul(matvec(x), x, alpha=ridge)


def _solve_cg(
    matvec: Operator,
    b: TensorTree,
    ridge: float | None = None,
    init: TensorTree | None = None,
    **kwargs: Any,
) -> TensorTree:
    return linalg.cg(_with_ridge(matvec, ridge), b, x0=init, **kwargs)


def solve_cg(**kwargs: Any) -> LinearSolver:
    """Return a solver of ``A x = b`` by conjugate gradient (``A`` symmetric positive definite).

    Suits optimality conditions that are the gradient of an objective (``A`` is its Hessian).

    Args:
        **kwargs: ``ridge`` (solve ``(A + ridge I) x = b``; None for no ridge), ``init``
            (initial guess structured like ``b``; zeros when None), and the options of
            :func:`difopt_implicit.linalg.cg`: ``rtol``, ``atol``, ``maxiter``, ``M``.

    Returns:
        A function ``solver(matvec, b) -> x`` with ``matvec(x) = A x``.

    Raises:
        TypeError: an unknown keyword argument.
        ValueError: an invalid ``ridge``, ``rtol``, ``atol`` or ``maxiter``.

    Examples:
        >>> import torch
        >>> from difopt_implicit.linear_solve import solve_cg
        >>> A = torch.tensor([[3.0, 1.0], [1.0, 2.0]])
        >>> x = solve_cg(rtol=1e-7)(lambda v: A @ v, torch.tensor([1.0, 0.0]))
        >>> torch.allclose(A @ x, torch.tensor([1.0, 0.0]), atol=1e-6)
        True
    """
    _check_kwargs("solve_cg", kwargs, ("ridge", "init", *_ITERATIVE))
    return functools.partial(_solve_cg, **kwargs)


def _transpose(matvec: Operator, example: TensorTree) -> Operator:
    # matvec is linear, so its VJP at any point is the product with A^T.
    vjp = torch.func.vjp(matvec, example)[1]
    return lambda y: vjp(y)[0]


def _solve_normal_cg(
    matvec: Operator,
    b: TensorTree,
    ridge: float | None = None,
    init: TensorTree | None = None,
    **kwargs: Any,
) -> TensorTree:
    example = b if init is None else init
    rmatvec = _transpose(matvec, example)

    def normal_matvec(x: TensorTree) -> TensorTree:
        return rmatvec(matvec(x))

    return linalg.cg(_with_ridge(normal_matvec, ridge), rmatvec(b), x0=init, **kwargs)


def solve_normal_cg(**kwargs: Any) -> LinearSolver:
    """Return a solver of ``A x = b`` through the normal equations ``A^T A x = A^T b`` by CG.

    Works for any non-singular ``A`` (TorchOpt's default for ``custom_root``), at the price of
    squaring its condition number; ``A^T`` products come from a VJP of ``matvec``.

    Args:
        **kwargs: ``ridge`` (solve ``(A^T A + ridge I) x = A^T b``), ``init``, and the options
            of :func:`difopt_implicit.linalg.cg`: ``rtol``, ``atol``, ``maxiter``, ``M``.

    Returns:
        A function ``solver(matvec, b) -> x`` with ``matvec(x) = A x``.

    Raises:
        TypeError: an unknown keyword argument.
        ValueError: an invalid ``ridge``, ``rtol``, ``atol`` or ``maxiter``.

    Examples:
        >>> import torch
        >>> from difopt_implicit.linear_solve import solve_normal_cg
        >>> A = torch.tensor([[2.0, 1.0], [-1.0, 3.0]])
        >>> x = solve_normal_cg(rtol=1e-7)(lambda v: A @ v, torch.tensor([1.0, 2.0]))
        >>> torch.allclose(A @ x, torch.tensor([1.0, 2.0]), atol=1e-5)
        True
    """
    _check_kwargs("solve_normal_cg", kwargs, ("ridge", "init", *_ITERATIVE))
    return functools.partial(_solve_normal_cg, **kwargs)


def _materialize(matvec: Operator, b: TensorTree) -> tuple[torch.Tensor, Flat]:
    """The dense matrix of ``matvec`` on the flattened pytree ``b`` (all leaves, coupled)."""
    flat = Flat(b, "b")
    op = flat.operator(matvec)
    b_vec = flat.ravel(b)
    eye = torch.eye(flat.numel, dtype=b_vec.dtype, device=b_vec.device)
    columns = torch.stack([op(e) for e in eye.unbind(0)], dim=1)
    return columns, flat


def _solve_inv(
    matvec: Operator,
    b: TensorTree,
    ridge: float | None = None,
    ns: bool = False,
    **kwargs: Any,
) -> TensorTree:
    matvec = _with_ridge(matvec, ridge)
    if ns:
        return linalg.ns(matvec, b, **kwargs)
    matrix, flat = _materialize(matvec, b)
    return flat.unravel(torch.linalg.solve(matrix, flat.ravel(b)))


def solve_inv(**kwargs: Any) -> LinearSolver:
    """Return a solver of ``A x = b`` by a dense solve, or a Neumann series with ``ns=True``.

    The dense path materializes ``A`` with one ``matvec`` per unknown (over the whole pytree,
    so blocks coupling different leaves are kept) and calls :func:`torch.linalg.solve`: exact,
    for small systems. ``ns=True`` uses :func:`difopt_implicit.linalg.ns` instead.

    Args:
        **kwargs: ``ridge`` (solve ``(A + ridge I) x = b``), ``ns`` (bool, default False), and
            with ``ns=True`` the options of :func:`difopt_implicit.linalg.ns`: ``maxiter``,
            ``alpha``.

    Returns:
        A function ``solver(matvec, b) -> x`` with ``matvec(x) = A x``.

    Raises:
        TypeError: an unknown keyword argument, or ``maxiter``/``alpha`` without ``ns=True``.
        ValueError: an invalid ``ridge``, ``maxiter`` or ``alpha``.

    Examples:
        >>> import torch
        >>> from difopt_implicit.linear_solve import solve_inv
        >>> A = torch.tensor([[2.0, 1.0], [-1.0, 3.0]])
        >>> x = solve_inv()(lambda v: A @ v, torch.tensor([1.0, 2.0]))
        >>> torch.allclose(A @ x, torch.tensor([1.0, 2.0]))
        True
    """
    _check_kwargs("solve_inv", kwargs, ("ridge", "ns", "maxiter", "alpha"))
    ns = kwargs.get("ns", False)
    if not isinstance(ns, bool):
        raise TypeError(f"'ns' must be a bool, got {type(ns).__name__}")
    if not ns and ({"maxiter", "alpha"} & set(kwargs)):
        raise TypeError("solve_inv(): 'maxiter' and 'alpha' apply only with ns=True")
    if ns:
        check_series(kwargs.get("maxiter"), kwargs.get("alpha"))
    return functools.partial(_solve_inv, **kwargs)


def _solve_gmres(
    matvec: Operator,
    b: TensorTree,
    ridge: float | None = None,
    init: TensorTree | None = None,
    **kwargs: Any,
) -> TensorTree:
    return linalg.gmres(_with_ridge(matvec, ridge), b, x0=init, **kwargs)


def solve_gmres(**kwargs: Any) -> LinearSolver:
    """Return a solver of ``A x = b`` by restarted GMRES, for non-symmetric ``A``.

    Fixed-point conditions ``x - T(x, theta) = 0`` give a non-symmetric ``A = I - dT/dx``;
    GMRES solves it without squaring the condition number as :func:`solve_normal_cg` does.

    Args:
        **kwargs: ``ridge``, ``init``, and the options of :func:`difopt_implicit.linalg.gmres`:
            ``rtol``, ``atol``, ``restart``, ``maxiter``, ``M``.

    Returns:
        A function ``solver(matvec, b) -> x`` with ``matvec(x) = A x``.

    Raises:
        TypeError: an unknown keyword argument.
        ValueError: an invalid ``ridge``, ``rtol``, ``atol``, ``restart`` or ``maxiter``.

    Examples:
        >>> import torch
        >>> from difopt_implicit.linear_solve import solve_gmres
        >>> A = torch.tensor([[2.0, 1.0], [-1.0, 3.0]])
        >>> x = solve_gmres(rtol=1e-7)(lambda v: A @ v, torch.tensor([1.0, 2.0]))
        >>> torch.allclose(A @ x, torch.tensor([1.0, 2.0]), atol=1e-6)
        True
    """
    _check_kwargs("solve_gmres", kwargs, ("ridge", "init", "restart", *_ITERATIVE))
    restart = kwargs.get("restart", 20)
    if isinstance(restart, bool) or not isinstance(restart, int) or restart < 1:
        raise ValueError(f"Invalid value for 'restart': {restart!r} (expected an int >= 1)")
    return functools.partial(_solve_gmres, **kwargs)


def _solve_bicgstab(
    matvec: Operator,
    b: TensorTree,
    ridge: float | None = None,
    init: TensorTree | None = None,
    **kwargs: Any,
) -> TensorTree:
    return linalg.bicgstab(_with_ridge(matvec, ridge), b, x0=init, **kwargs)


def solve_bicgstab(**kwargs: Any) -> LinearSolver:
    """Return a solver of ``A x = b`` by BiCGSTAB, for non-symmetric ``A`` in constant memory.

    Args:
        **kwargs: ``ridge``, ``init``, and the options of
            :func:`difopt_implicit.linalg.bicgstab`: ``rtol``, ``atol``, ``maxiter``, ``M``.

    Returns:
        A function ``solver(matvec, b) -> x`` with ``matvec(x) = A x``.

    Raises:
        TypeError: an unknown keyword argument.
        ValueError: an invalid ``ridge``, ``rtol``, ``atol`` or ``maxiter``.

    Examples:
        >>> import torch
        >>> from difopt_implicit.linear_solve import solve_bicgstab
        >>> A = torch.tensor([[2.0, 1.0], [-1.0, 3.0]])
        >>> x = solve_bicgstab(rtol=1e-7)(lambda v: A @ v, torch.tensor([1.0, 2.0]))
        >>> torch.allclose(A @ x, torch.tensor([1.0, 2.0]), atol=1e-6)
        True
    """
    _check_kwargs("solve_bicgstab", kwargs, ("ridge", "init", *_ITERATIVE))
    return functools.partial(_solve_bicgstab, **kwargs)
