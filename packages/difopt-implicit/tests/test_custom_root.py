"""custom_root against independent oracles: closed forms, unrolled iterations, finite differences."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch

import difopt
from difopt_implicit import custom_root, linear_solve
from difopt_implicit.linalg import ConvergenceWarning

DT = torch.float64

# ---------------------------------------------------------------------------------------------
# Ridge regression: the meta-gradient of a validation loss with respect to the ridge strength.
#
#   theta*(lam) = argmin_theta 1/2 |X theta - y|^2 + lam/2 |theta|^2 = H^{-1} X^T y,
#   H = X^T X + lam I.  Differentiating H theta* = X^T y in lam: H dtheta*/dlam + theta* = 0,
#   so dtheta*/dlam = -H^{-1} theta*, and for L(lam) = 1/2 |Xv theta* - yv|^2,
#   dL/dlam = -(Xv^T (Xv theta* - yv))^T H^{-1} theta*.   (computed below with numpy)
# ---------------------------------------------------------------------------------------------


def ridge_data() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(42)
    x = torch.randn(30, 5, generator=g, dtype=DT) / 30**0.5
    y = torch.randn(30, generator=g, dtype=DT)
    xv = torch.randn(20, 5, generator=g, dtype=DT)
    yv = torch.randn(20, generator=g, dtype=DT)
    return x, y, xv, yv


def ridge_closed_form(lam: float) -> float:
    x, y, xv, yv = (t.numpy() for t in ridge_data())
    h = x.T @ x + lam * np.eye(x.shape[1])
    theta = np.linalg.solve(h, x.T @ y)
    residual = xv @ theta - yv
    return float(-(xv.T @ residual) @ np.linalg.solve(h, theta))


def ridge_optimality(
    theta: torch.Tensor, lam: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    return x.T @ (x @ theta - y) + lam * theta


RIDGE_SOLVERS = {
    "solve_cg": linear_solve.solve_cg(rtol=1e-14),
    "solve_normal_cg": linear_solve.solve_normal_cg(rtol=1e-14),
    "solve_inv": linear_solve.solve_inv(),
    "solve_inv_ns": linear_solve.solve_inv(ns=True, maxiter=300, alpha=0.3),
    "solve_gmres": linear_solve.solve_gmres(rtol=1e-14),
    "solve_bicgstab": linear_solve.solve_bicgstab(rtol=1e-14),
    "default": None,
}


@pytest.mark.parametrize("solver", sorted(RIDGE_SOLVERS))
def test_ridge_meta_gradient_matches_the_closed_form(solver: str) -> None:
    x, y, xv, yv = ridge_data()
    lam = torch.tensor(0.8, dtype=DT, requires_grad=True)  # a 0-d tensor input

    kwargs: dict[str, Any] = {}
    if RIDGE_SOLVERS[solver] is not None:
        kwargs["solve"] = RIDGE_SOLVERS[solver]
    if solver == "default":  # TorchOpt's default solver, with its default tolerance too tight
        kwargs["solve"] = linear_solve.solve_normal_cg(rtol=1e-14)

    @custom_root(ridge_optimality, argnums=1, **kwargs)
    def ridge(
        theta0: torch.Tensor, lam: torch.Tensor, x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        h = x.T @ x + lam * torch.eye(x.shape[1], dtype=x.dtype)
        return torch.linalg.solve(h, x.T @ y)

    theta = ridge(torch.zeros(5, dtype=DT), lam, x, y)
    loss = 0.5 * ((xv @ theta - yv) ** 2).sum()
    (grad,) = torch.autograd.grad(loss, lam)
    assert float(grad) == pytest.approx(ridge_closed_form(0.8), rel=1e-8, abs=1e-12)


def test_default_solver_is_solve_normal_cg_and_scalar_roots_get_a_gradient() -> None:
    """TorchOpt returned 0 here (its issue #222): a 0-d system got zero CG iterations."""

    def optimality(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return x * x - a

    @custom_root(optimality, argnums=1)
    def sqrt(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        for _ in range(50):
            x = 0.5 * (x + a / x)
        return x

    a = torch.tensor(2.25, dtype=DT, requires_grad=True)
    root = sqrt(torch.tensor(1.0, dtype=DT), a)
    assert root.shape == ()
    (grad,) = torch.autograd.grad(root, a)
    assert float(grad) == pytest.approx(1.0 / (2.0 * 1.5), rel=1e-9)


# ---------------------------------------------------------------------------------------------
# A fixed point theta = tanh(W theta + phi), W a contraction: implicit vs unrolled gradients.
# ---------------------------------------------------------------------------------------------

N = 6
ITERATIONS = 500


def fixed_point_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    w = torch.randn(N, N, generator=g, dtype=DT)
    w = 0.6 * w / torch.linalg.matrix_norm(w, ord=2)  # spectral norm 0.6: a contraction
    phi = torch.randn(N, generator=g, dtype=DT)
    c = torch.randn(N, generator=g, dtype=DT)
    return w, phi, c


def iterate(theta: torch.Tensor, w: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    for _ in range(ITERATIONS):
        theta = torch.tanh(w @ theta + phi)
    return theta


def unrolled_gradients() -> tuple[torch.Tensor, torch.Tensor]:
    w, phi, c = fixed_point_data()
    w.requires_grad_(True)
    phi.requires_grad_(True)
    theta = iterate(torch.zeros(N, dtype=DT), w, phi)
    return torch.autograd.grad((c * theta).sum(), (w, phi))  # type: ignore[return-value]


FIXED_POINT_SOLVERS = {
    "solve_normal_cg": linear_solve.solve_normal_cg(rtol=1e-13),
    "solve_gmres": linear_solve.solve_gmres(rtol=1e-13),
    "solve_bicgstab": linear_solve.solve_bicgstab(rtol=1e-13),
    "solve_inv": linear_solve.solve_inv(),
}


def fp_optimality(theta: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    return theta - torch.tanh(params["W"] @ theta + params["phi"])


@pytest.mark.parametrize("solver", sorted(FIXED_POINT_SOLVERS))
def test_fixed_point_gradient_matches_500_unrolled_iterations(solver: str) -> None:
    """``argnums`` points at a dict (a pytree) holding both W and phi."""
    w, phi, c = fixed_point_data()
    params = {"W": w.requires_grad_(True), "phi": phi.requires_grad_(True)}

    @custom_root(fp_optimality, argnums=1, solve=FIXED_POINT_SOLVERS[solver])
    def fixed_point(theta: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            return iterate(theta, params["W"], params["phi"])

    theta = fixed_point(torch.zeros(N, dtype=DT), params)
    grad_w, grad_phi = torch.autograd.grad((c * theta).sum(), (params["W"], params["phi"]))
    ref_w, ref_phi = unrolled_gradients()
    torch.testing.assert_close(grad_w, ref_w, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad_phi, ref_phi, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad_phi, ref_phi, rtol=1e-9, atol=1e-12)  # and much closer


def test_tuple_argnums_and_keyword_arguments() -> None:
    """argnums=(1, 2); the solver takes phi by keyword and has an option the optimality lacks."""
    w, phi, c = fixed_point_data()
    w.requires_grad_(True)
    phi.requires_grad_(True)

    def optimality(theta: torch.Tensor, w: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        return theta - torch.tanh(w @ theta + phi)

    @custom_root(optimality, argnums=(1, 2), solve=linear_solve.solve_gmres(rtol=1e-13))
    def fixed_point(
        theta: torch.Tensor, w: torch.Tensor, phi: torch.Tensor, *, steps: int = 10
    ) -> torch.Tensor:
        for _ in range(steps):
            theta = torch.tanh(w @ theta + phi)
        return theta

    theta = fixed_point(torch.zeros(N, dtype=DT), w, phi=phi, steps=ITERATIONS)
    grads = torch.autograd.grad((c * theta).sum(), (w, phi))
    for got, ref in zip(grads, unrolled_gradients()):
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)


def test_positional_matching_when_names_differ_like_torchopt() -> None:
    w, phi, c = fixed_point_data()
    phi.requires_grad_(True)

    def optimality(z: torch.Tensor, matrix: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        return z - torch.tanh(matrix @ z + shift)

    @custom_root(optimality, argnums=2, solve=linear_solve.solve_inv())
    def fixed_point(theta: torch.Tensor, w: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        return iterate(theta, w, phi)

    theta = fixed_point(torch.zeros(N, dtype=DT), w, phi)
    (grad,) = torch.autograd.grad((c * theta).sum(), phi)
    torch.testing.assert_close(grad, unrolled_gradients()[1], rtol=0, atol=1e-6)


def test_pytree_solution_and_has_aux() -> None:
    """The solution is a dict; aux comes back unchanged and is not differentiated."""
    w, phi, c = fixed_point_data()
    phi.requires_grad_(True)

    def optimality(state: dict[str, torch.Tensor], phi: torch.Tensor) -> dict[str, torch.Tensor]:
        head, tail = state["head"], state["tail"]
        theta = torch.cat([head, tail])
        residual = theta - torch.tanh(w @ theta + phi)
        return {"head": residual[:2], "tail": residual[2:]}

    @custom_root(optimality, argnums=1, has_aux=True, solve=linear_solve.solve_gmres(rtol=1e-13))
    def fixed_point(
        state: dict[str, torch.Tensor], phi: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        theta = iterate(torch.cat([state["head"], state["tail"]]), w, phi)
        return {"head": theta[:2], "tail": theta[2:]}, {"iterations": ITERATIONS}

    init = {"head": torch.zeros(2, dtype=DT), "tail": torch.zeros(N - 2, dtype=DT)}
    state, aux = fixed_point(init, phi)
    assert aux == {"iterations": ITERATIONS}
    loss = (c[:2] * state["head"]).sum() + (c[2:] * state["tail"]).sum()
    (grad,) = torch.autograd.grad(loss, phi)
    torch.testing.assert_close(grad, unrolled_gradients()[1], rtol=0, atol=1e-6)


def test_gradcheck_in_float64() -> None:
    """Finite differences of the converged solver against the implicit backward."""
    w, phi, _ = fixed_point_data()

    @custom_root(fp_optimality, argnums=1, solve=linear_solve.solve_gmres(rtol=1e-13))
    def fixed_point(theta: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return iterate(theta, params["W"], params["phi"])

    def f(w: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        return fixed_point(torch.zeros(N, dtype=DT), {"W": w, "phi": phi})

    assert torch.autograd.gradcheck(
        f, (w.requires_grad_(True), phi.requires_grad_(True)), eps=1e-6, atol=1e-7
    )


def test_solver_runs_on_detached_inputs_and_may_use_autograd() -> None:
    """The solver is gradient descent written with autograd; it leaves lam.grad untouched."""
    x, y, xv, yv = ridge_data()
    lam = torch.tensor(0.8, dtype=DT, requires_grad=True)

    @custom_root(ridge_optimality, argnums=1, solve=linear_solve.solve_cg(rtol=1e-14))
    def ridge(
        theta: torch.Tensor, lam: torch.Tensor, x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        assert not lam.requires_grad
        theta = theta.clone().requires_grad_(True)
        for _ in range(3000):
            loss = 0.5 * ((x @ theta - y) ** 2).sum() + 0.5 * lam * (theta**2).sum()
            (g,) = torch.autograd.grad(loss, theta)
            theta = (theta - 0.5 * g).detach().requires_grad_(True)
        return theta

    theta = ridge(torch.zeros(5, dtype=DT), lam, x, y)
    assert lam.grad is None
    loss = 0.5 * ((xv @ theta - yv) ** 2).sum()
    loss.backward()
    assert float(lam.grad) == pytest.approx(ridge_closed_form(0.8), rel=1e-8)


def test_no_graph_when_nothing_requires_grad() -> None:
    x, y, _, _ = ridge_data()

    @custom_root(ridge_optimality, argnums=1)
    def ridge(
        theta: torch.Tensor, lam: torch.Tensor, x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        return torch.linalg.solve(x.T @ x + lam * torch.eye(5, dtype=DT), x.T @ y)

    out = ridge(torch.zeros(5, dtype=DT), torch.tensor(1.0, dtype=DT), x, y)
    assert out.grad_fn is None and not out.requires_grad
    with torch.no_grad():
        out = ridge(torch.zeros(5, dtype=DT), torch.tensor(1.0, dtype=DT, requires_grad=True), x, y)
    assert out.grad_fn is None


def test_reachable_through_core_as_torchopt_code_spells_it() -> None:
    torchopt = difopt
    x, y, xv, yv = ridge_data()
    lam = torch.tensor(0.8, dtype=DT, requires_grad=True)

    @torchopt.diff.implicit.custom_root(
        ridge_optimality, argnums=1, solve=torchopt.linear_solve.solve_cg(rtol=1e-14)
    )
    def ridge(
        theta: torch.Tensor, lam: torch.Tensor, x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        return torchopt.linalg.cg(lambda v: x.T @ (x @ v) + lam * v, x.T @ y, rtol=1e-14)

    theta = ridge(torch.zeros(5, dtype=DT), lam, x, y)
    (grad,) = torch.autograd.grad(0.5 * ((xv @ theta - yv) ** 2).sum(), lam)
    assert float(grad) == pytest.approx(ridge_closed_form(0.8), rel=1e-8)


# ---------------------------------------------------------------------------------------------
# Bad input: each error names the argument.
# ---------------------------------------------------------------------------------------------


def _identity_solver(theta: torch.Tensor, lam: torch.Tensor, n: int = 3) -> torch.Tensor:
    return theta * 0 + lam


def _residual(theta: torch.Tensor, lam: torch.Tensor, n: int = 3) -> torch.Tensor:
    return theta - lam


@pytest.mark.parametrize(
    ("argnums", "error", "match"),
    [
        (0, ValueError, "must not contain 0"),
        ((1, 0), ValueError, "must not contain 0"),
        (-1, ValueError, ">= 1"),
        ((1, 1), ValueError, "duplicates"),
        (True, TypeError, "'argnums' must be an int"),
        ("1", TypeError, "'argnums' must be an int"),
        ((), TypeError, "non-empty"),
        ((1, 2.0), TypeError, "'argnums' must contain ints"),
    ],
)
def test_bad_argnums_fail_at_decoration(argnums: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        custom_root(_residual, argnums=argnums)


def test_argnums_out_of_range_fails_at_call() -> None:
    solver = custom_root(_residual, argnums=5)(_identity_solver)
    with pytest.raises(ValueError, match=r"'argnums' contains 5.*3 positional argument"):
        solver(torch.zeros(3), torch.ones(3))


def test_argnums_pointing_at_a_non_tensor_fails_at_call() -> None:
    solver = custom_root(_residual, argnums=2)(_identity_solver)
    with pytest.raises(TypeError, match=r"'argnums' contains 2.*argument 'n'.*int"):
        solver(torch.zeros(3), torch.ones(3), 4)


def test_argnums_pointing_at_integer_tensors_fails_at_call() -> None:
    solver = custom_root(_residual, argnums=1)(_identity_solver)
    with pytest.raises(TypeError, match="floating point"):
        solver(torch.zeros(3), torch.ones(3, dtype=torch.long))


def test_optimality_output_not_matching_the_solution_fails_in_backward() -> None:
    def wrong(theta: torch.Tensor, lam: torch.Tensor, n: int = 3) -> torch.Tensor:
        return (theta - lam)[:2]

    lam = torch.ones(3, requires_grad=True)
    out = custom_root(wrong, argnums=1)(_identity_solver)(torch.zeros(3), lam)
    with pytest.raises(
        ValueError,
        match=r"optimality_fn must return a residual structured like the solution.*\(3,\).*\(2,\)",
    ):
        out.sum().backward()


def test_a_linear_solve_not_converging_within_maxiter_warns_with_the_residual() -> None:
    w, phi, c = fixed_point_data()
    phi.requires_grad_(True)

    @custom_root(
        fp_optimality, argnums=1, solve=linear_solve.solve_normal_cg(maxiter=1, rtol=1e-12)
    )
    def fixed_point(theta: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return iterate(theta, params["W"], params["phi"])

    theta = fixed_point(torch.zeros(N, dtype=DT), {"W": w, "phi": phi})
    with pytest.warns(
        ConvergenceWarning, match=r"cg did not converge after 1 iteration.*residual norm"
    ):
        (c * theta).sum().backward()


def test_solver_output_errors() -> None:
    lam = torch.ones(3, requires_grad=True)
    with pytest.raises(TypeError, match=r"has_aux=True.*pair"):
        custom_root(_residual, argnums=1, has_aux=True)(_identity_solver)(torch.zeros(3), lam)
    with pytest.raises(TypeError, match="solver_fn must return a tensor or a pytree of tensors"):
        custom_root(_residual, argnums=1)(lambda theta, lam, n=3: "done")(torch.zeros(3), lam)


def test_optimality_signature_that_cannot_take_the_solver_arguments() -> None:
    def residual(theta: torch.Tensor) -> torch.Tensor:
        return theta

    solver = custom_root(residual, argnums=1)(_identity_solver)
    with pytest.raises(TypeError, match=r"cannot be passed to optimality_fn"):
        solver(torch.zeros(3), torch.ones(3, requires_grad=True))


def test_other_bad_arguments() -> None:
    with pytest.raises(TypeError, match="'optimality_fn' must be callable"):
        custom_root(None, argnums=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'solve' must be a linear solver"):
        custom_root(_residual, argnums=1, solve="cg")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'has_aux' must be a bool"):
        custom_root(_residual, argnums=1, has_aux=1)  # type: ignore[arg-type]


def test_converged_backward_does_not_warn() -> None:
    x, y, xv, yv = ridge_data()
    lam = torch.tensor(0.8, dtype=DT, requires_grad=True)
    solver = custom_root(ridge_optimality, argnums=1, solve=linear_solve.solve_cg())(
        lambda theta, lam, x, y: torch.linalg.solve(x.T @ x + lam * torch.eye(5, dtype=DT), x.T @ y)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        theta = solver(torch.zeros(5, dtype=DT), lam, x, y)
        ((xv @ theta - yv) ** 2).sum().backward()


def test_backward_evaluates_the_optimality_once() -> None:
    # One evaluation of optimality_fn serves every A^T product of the solve and B^T u.
    x, y, _, _ = ridge_data()
    calls = [0]

    def optimality(theta: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return ridge_optimality(theta, lam, x, y)

    @custom_root(optimality, argnums=1, solve=linear_solve.solve_cg(rtol=1e-12))
    def ridge(theta0: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        return torch.linalg.solve(x.T @ x + lam * torch.eye(x.shape[1], dtype=DT), x.T @ y)

    lam = torch.tensor(0.8, dtype=DT, requires_grad=True)
    theta = ridge(torch.zeros(5, dtype=DT), lam)
    calls[0] = 0
    (grad,) = torch.autograd.grad(theta.sum(), lam)
    assert calls[0] == 1
    h = x.T @ x + 0.8 * torch.eye(5, dtype=DT)
    expected = -torch.linalg.solve(h, torch.ones(5, dtype=DT)) @ theta.detach()
    torch.testing.assert_close(grad, expected)
