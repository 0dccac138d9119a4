"""The pytree linear algebra (difopt.linalg) against dense solves from numpy."""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np
import pytest
import torch

from difopt_implicit import linalg, linear_solve
from difopt_implicit.linalg import ConvergenceWarning

DT = torch.float64


def spd(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, n, generator=g, dtype=DT)
    return q @ q.T / n + torch.eye(n, dtype=DT)


def nonsymmetric(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, n, generator=g, dtype=DT) / n**0.5 + 2 * torch.eye(n, dtype=DT)


def np_solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.linalg.solve(a.numpy(), b.numpy()))


KRYLOV: dict[str, Callable[..., Any]] = {
    "cg": linalg.cg,
    "gmres": linalg.gmres,
    "bicgstab": linalg.bicgstab,
}
GENERAL = {"gmres": linalg.gmres, "bicgstab": linalg.bicgstab}


@pytest.mark.parametrize("name", sorted(KRYLOV))
def test_krylov_solvers_match_a_dense_solve_on_spd_systems(name: str) -> None:
    a, b = spd(12, 1), torch.randn(12, dtype=DT)
    x = KRYLOV[name](a, b, rtol=1e-12)
    torch.testing.assert_close(x, np_solve(a, b), rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", sorted(GENERAL))
def test_general_solvers_match_a_dense_solve_on_nonsymmetric_systems(name: str) -> None:
    a, b = nonsymmetric(15, 2), torch.randn(15, dtype=DT)
    x = GENERAL[name](a, b, rtol=1e-12)
    torch.testing.assert_close(x, np_solve(a, b), rtol=0, atol=1e-9)


def test_gmres_restarts_still_converge() -> None:
    a, b = nonsymmetric(15, 3), torch.randn(15, dtype=DT)
    x = linalg.gmres(a, b, rtol=1e-12, restart=3)
    torch.testing.assert_close(x, np_solve(a, b), rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", sorted(KRYLOV))
def test_pytree_operator_couples_leaves(name: str) -> None:
    """A function on a dict of tensors of different shapes is one system over all leaves."""
    a = spd(7, 4)  # symmetric positive definite, so every solver applies

    def to_vec(t: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([t["u"].reshape(-1), t["v"].reshape(-1)])

    def matvec(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        y = a @ to_vec(t)
        return {"u": y[:3], "v": y[3:].reshape(2, 2)}

    b = {"u": torch.randn(3, dtype=DT), "v": torch.randn(2, 2, dtype=DT)}
    x = KRYLOV[name](matvec, b, rtol=1e-12)
    assert set(x) == {"u", "v"} and x["v"].shape == (2, 2)
    torch.testing.assert_close(to_vec(x), np_solve(a, to_vec(b)), rtol=0, atol=1e-9)


def test_cg_dense_operator_batches_over_leading_dimensions() -> None:
    a = torch.stack([spd(5, s) for s in range(3)])
    b = torch.randn(3, 5, dtype=DT)
    x = linalg.cg(a, b, rtol=1e-12)
    for i in range(3):
        torch.testing.assert_close(x[i], np_solve(a[i], b[i]), rtol=0, atol=1e-9)


def test_cg_preconditioner_and_initial_guess() -> None:
    a, b = spd(10, 5), torch.randn(10, dtype=DT)
    jacobi = torch.diag(1.0 / torch.diagonal(a))
    x = linalg.cg(a, b, x0=torch.ones(10, dtype=DT), M=jacobi, rtol=1e-12)
    torch.testing.assert_close(x, np_solve(a, b), rtol=0, atol=1e-9)


def test_cg_default_maxiter_counts_elements_so_0d_systems_are_solved() -> None:
    """TorchOpt summed shapes: a 0-d system got maxiter=0 and the initial guess back."""
    x = linalg.cg(lambda v: 4.0 * v, torch.tensor(2.0, dtype=DT))
    assert float(x) == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize("name", sorted(KRYLOV))
def test_not_converging_within_maxiter_warns_with_the_residual(name: str) -> None:
    a, b = spd(20, 6), torch.randn(20, dtype=DT)
    if name == "gmres":
        kwargs = {"maxiter": 1, "restart": 2}
    else:
        kwargs = {"maxiter": 2}
    with pytest.warns(ConvergenceWarning, match=r"did not converge.*residual norm [0-9.e+-]+ >"):
        KRYLOV[name](a, b, rtol=1e-12, **kwargs)


def test_cg_on_an_indefinite_operator_warns_instead_of_returning_nan_silently() -> None:
    a = torch.diag(torch.tensor([1.0, -1.0], dtype=DT))
    with pytest.warns(ConvergenceWarning):
        linalg.cg(a, torch.tensor([1.0, 1.0], dtype=DT), maxiter=5)


def test_converged_solves_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        linalg.cg(spd(6, 7), torch.randn(6, dtype=DT))
        linalg.gmres(nonsymmetric(6, 7), torch.randn(6, dtype=DT))


def test_neumann_series_matches_the_closed_form_sum() -> None:
    """ns adds maxiter terms after the first, ns_inv sums maxiter terms (TorchOpt's counts)."""
    a = 0.5 * spd(4, 8) / 2
    b = torch.randn(4, dtype=DT)
    eye = torch.eye(4, dtype=DT)
    alpha, k = 0.7, 6
    step = eye - alpha * a
    series = sum(torch.linalg.matrix_power(step, i) for i in range(k + 1))
    torch.testing.assert_close(linalg.ns(a, b, k, alpha=alpha), alpha * series @ b)
    series_inv = sum(torch.linalg.matrix_power(step, i) for i in range(k))
    torch.testing.assert_close(linalg.ns_inv(a, k, alpha=alpha), alpha * series_inv)


def test_neumann_series_converges_to_the_inverse_and_batches() -> None:
    a = torch.stack([0.3 * spd(3, s) for s in range(2)])
    inv = linalg.ns_inv(a, 200)
    torch.testing.assert_close(inv, torch.from_numpy(np.linalg.inv(a.numpy())))
    b = torch.randn(2, 3, dtype=DT)
    x = linalg.ns({"a": a}, {"a": b}, 200)["a"]
    torch.testing.assert_close(
        x, torch.from_numpy(np.linalg.solve(a.numpy(), b.numpy()[..., None])[..., 0])
    )


def test_diverging_neumann_series_warns() -> None:
    with pytest.warns(ConvergenceWarning, match="does not converge"):
        linalg.ns(3.0 * torch.eye(2, dtype=DT), torch.ones(2, dtype=DT), 10)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: linalg.cg(torch.ones(2, 3), torch.ones(2)),
            "'A' must be a callable or a pytree of square",
        ),
        (
            lambda: linalg.cg(torch.eye(2), [1.0, 2.0]),
            "'b' must be a tensor or a pytree of tensors",
        ),
        (lambda: linalg.cg(torch.eye(2), torch.ones(2), rtol=-1.0), "'rtol'"),
        (lambda: linalg.cg(torch.eye(2), torch.ones(2), atol=float("nan")), "'atol'"),
        (lambda: linalg.cg(torch.eye(2), torch.ones(2), maxiter=1.5), "'maxiter'"),
        (lambda: linalg.cg(torch.eye(2), torch.ones(2), x0=torch.ones(3)), "'x0'"),
        (lambda: linalg.gmres(torch.eye(2), torch.ones(2), restart=0), "'restart'"),
        (lambda: linalg.gmres(torch.eye(2), torch.ones(2, dtype=torch.complex64)), "real"),
        (lambda: linalg.ns(torch.eye(2), torch.ones(2), alpha=0.0), "'alpha'"),
        (lambda: linalg.ns_inv(torch.ones(2, 3)), "square"),
        (lambda: linear_solve.solve_cg(tol=1e-3), r"unexpected keyword.*\['tol'\].*rtol"),
        (lambda: linear_solve.solve_cg(ridge=-1.0), "'ridge'"),
        (lambda: linear_solve.solve_inv(maxiter=3), "only with ns=True"),
        (lambda: linear_solve.solve_inv(ns=True, alpha=-2.0), "'alpha'"),
        (lambda: linear_solve.solve_gmres(restart=-1), "'restart'"),
        (lambda: linear_solve.solve_bicgstab(maxiter=-1), "'maxiter'"),
    ],
)
def test_bad_input_names_the_argument(call: Callable[[], Any], match: str) -> None:
    with pytest.raises((TypeError, ValueError), match=match):
        call()


SOLVERS = {
    "solve_cg": linear_solve.solve_cg(rtol=1e-12),
    "solve_normal_cg": linear_solve.solve_normal_cg(rtol=1e-13),
    "solve_inv": linear_solve.solve_inv(),
    "solve_inv_ns": linear_solve.solve_inv(ns=True, maxiter=400, alpha=0.5),
    "solve_gmres": linear_solve.solve_gmres(rtol=1e-12),
    "solve_bicgstab": linear_solve.solve_bicgstab(rtol=1e-12),
}


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_linear_solvers_with_ridge_on_pytrees(name: str) -> None:
    a = spd(5, 9)
    ridge = 0.3

    def matvec(t: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        y = a @ torch.cat([t[0], t[1].reshape(-1)])
        return y[:1], y[1:].reshape(2, 2)

    b = (torch.randn(1, dtype=DT), torch.randn(2, 2, dtype=DT))
    solver = SOLVERS[name]
    if name.startswith("solve_normal"):
        expected_matrix = a.T @ a + ridge * torch.eye(5, dtype=DT)
        rhs = a.T @ torch.cat([b[0], b[1].reshape(-1)])
    else:
        expected_matrix = a + ridge * torch.eye(5, dtype=DT)
        rhs = torch.cat([b[0], b[1].reshape(-1)])
    kwargs = dict(solver.keywords, ridge=ridge)  # type: ignore[attr-defined]
    x = solver.func(matvec, b, **kwargs)  # type: ignore[attr-defined]
    got = torch.cat([x[0], x[1].reshape(-1)])
    torch.testing.assert_close(got, np_solve(expected_matrix, rhs), rtol=0, atol=1e-8)


def test_solve_inv_keeps_blocks_that_couple_leaves() -> None:
    """TorchOpt's dense solve_inv kept only the diagonal blocks of a pytree operator."""
    a = torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=DT)

    def matvec(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        y = a @ torch.stack([t["p"], t["q"]])
        return {"p": y[0], "q": y[1]}

    x = linear_solve.solve_inv()(
        matvec, {"p": torch.tensor(1.0, dtype=DT), "q": torch.tensor(0.0, dtype=DT)}
    )
    torch.testing.assert_close(
        torch.stack([x["p"], x["q"]]), np_solve(a, torch.tensor([1.0, 0.0], dtype=DT))
    )


@pytest.mark.parametrize("name", ["cg", "gmres", "bicgstab"])
def test_solving_from_zero_spends_no_product_on_the_initial_residual(name: str) -> None:
    # From x0 = 0 the residual is b: every product with A is a step of the method (the
    # backward of custom_root pays one VJP per product).
    a = spd(6, 11)
    b = torch.arange(1.0, 7.0, dtype=DT)
    calls = [0]

    def matvec(v: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return a @ v

    x = getattr(linalg, name)(matvec, b, rtol=1e-12, maxiter=100)
    torch.testing.assert_close(x, np_solve(a, b))
    # A Krylov method solves an n x n system in at most n steps (GMRES adds one product per
    # cycle for the true residual, BiCGSTAB makes two per step).
    assert calls[0] <= {"cg": 6, "gmres": 7, "bicgstab": 12}[name]


def test_torchopt_linalg_utils() -> None:
    import difopt

    mats = [torch.randn(4, 4, dtype=torch.float64) for _ in range(3)]
    xs = [torch.randn(4, 2, dtype=torch.float64), torch.randn(4, dtype=torch.float64)] + [
        torch.randn(4, 1, dtype=torch.float64)
    ]
    matvec = difopt.linalg.utils.normalize_matvec(mats)
    for got, a, x in zip(matvec(xs), mats, xs):
        torch.testing.assert_close(got, a @ x)
    fn = lambda x: x  # noqa: E731
    assert difopt.linalg.utils.normalize_matvec(fn) is fn
    with pytest.raises(TypeError, match="square matrices; leaf 0 is \\(2, 3\\)"):
        difopt.linalg.utils.normalize_matvec([torch.zeros(2, 3)])
    with pytest.raises(ValueError, match="'x' has 1 leaves but 'matvec' has 3"):
        matvec(xs[:1])
    assert difopt.linalg.utils.cat_shapes({"a": torch.zeros(2, 3), "b": torch.zeros(4)}) == (
        2,
        3,
        4,
    )


def test_solver_factories_accept_the_call_arguments_as_torchopt_does() -> None:
    # TorchOpt binds every factory keyword with functools.partial, so code passes matvec and b
    # to the factory too, then calls the solver with keywords (which take precedence).
    a = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    b = torch.tensor([1.0, 2.0], dtype=torch.float64)
    expected = torch.linalg.solve(a + 0.5 * torch.eye(2, dtype=torch.float64), b)
    for factory in (linear_solve.solve_inv, linear_solve.solve_cg, linear_solve.solve_normal_cg):
        solver = factory(matvec=lambda v: v, b=torch.zeros(2, dtype=torch.float64), ridge=0.5)
        x = solver(matvec=lambda v: a @ v, b=b)
        if factory is linear_solve.solve_normal_cg:
            expected_x = torch.linalg.solve(
                a.T @ a + 0.5 * torch.eye(2, dtype=torch.float64), a.T @ b
            )
            torch.testing.assert_close(x, expected_x, rtol=1e-6, atol=1e-8)
        else:
            torch.testing.assert_close(x, expected, rtol=1e-6, atol=1e-8)
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        linear_solve.solve_inv(tol=1e-3)
