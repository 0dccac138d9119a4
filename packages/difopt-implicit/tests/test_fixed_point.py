"""fixed_point / root: forward solvers, backward modes, batching and errors.

Oracles are independent of the code under test: closed forms (numpy solves, the Dottie number,
square roots), plain Picard loops written out here, central finite differences and
torch.autograd.gradcheck in float64, and phantom / JFB gradients written from their
definitions.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
import torch

import difopt
import difopt_implicit as di
from difopt_implicit.linear_solve import solve_gmres

DT = torch.float64
SOLVERS = {
    "picard": di.Picard(),
    "picard_damped": di.Picard(damping=0.7),
    "anderson": di.Anderson(m=5),
    "anderson_damped": di.Anderson(m=3, damping=0.8),
    "broyden_good": di.Broyden(memory=30, variant="good"),
    "broyden_bad": di.Broyden(memory=30, variant="bad"),
    "newton": di.Newton(),
}
DOTTIE = 0.739085133215160641655312087673873404  # the root of cos(z) = z


def solver_params() -> Any:
    return pytest.mark.parametrize("solver", list(SOLVERS.values()), ids=list(SOLVERS))


def contraction(n: int, rate: float, seed: int = 0) -> torch.Tensor:
    """A non-symmetric matrix with spectral norm ``rate``."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=DT)
    return rate * A / torch.linalg.matrix_norm(A, ord=2)


def picard_by_hand(f: Any, z: torch.Tensor, iters: int = 3000) -> torch.Tensor:
    for _ in range(iters):
        z = f(z)
    return z


# ------------------------------------------------------------------------------ forward


@solver_params()
def test_linear_fixed_point_matches_the_closed_form(solver: Any) -> None:
    A, b = contraction(6, 0.6), torch.linspace(-1, 1, 6, dtype=DT)
    z, info = di.fixed_point(
        lambda z: A @ z + b, torch.zeros(6, dtype=DT), solver=solver, tol=1e-11
    )
    expected = np.linalg.solve(np.eye(6) - A.numpy(), b.numpy())
    np.testing.assert_allclose(z.numpy(), expected, rtol=0, atol=1e-9)
    assert bool(info.converged) and float(info.residual) <= 1e-11
    assert info.trace.shape == (int(info.iterations) + 1,)


@solver_params()
def test_cosine_fixed_point_is_the_dottie_number(solver: Any) -> None:
    z, info = di.fixed_point(torch.cos, torch.ones(3, dtype=DT), solver=solver, tol=1e-12)
    np.testing.assert_allclose(z.numpy(), DOTTIE, rtol=0, atol=1e-11)
    assert bool(info.converged)


@solver_params()
def test_pytree_fixed_point_matches_the_closed_form(solver: Any) -> None:
    A, b = contraction(5, 0.5, seed=1), torch.arange(5, dtype=DT)

    def f(z: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        v = A @ torch.cat([z["a"], z["b"].reshape(-1)]) + b
        return {"a": v[:1], "b": v[1:].reshape(2, 2)}

    z0 = {"a": torch.zeros(1, dtype=DT), "b": torch.zeros(2, 2, dtype=DT)}
    z, info = di.fixed_point(f, z0, solver=solver, tol=1e-11)
    expected = np.linalg.solve(np.eye(5) - A.numpy(), b.numpy())
    np.testing.assert_allclose(z["a"].numpy(), expected[:1], atol=1e-9)
    np.testing.assert_allclose(z["b"].numpy(), expected[1:].reshape(2, 2), atol=1e-9)


# z <- z - damping F(z) contracts when the damping is below 2 / (largest eigenvalue of dF/dz).
ROOT_SOLVERS = {**SOLVERS, "picard": di.Picard(damping=0.2), "picard_damped": di.Picard(0.3)}


@pytest.mark.parametrize("solver", list(ROOT_SOLVERS.values()), ids=list(ROOT_SOLVERS))
def test_linear_root_matches_the_closed_form(solver: Any) -> None:
    A = torch.eye(6, dtype=DT) + contraction(6, 0.5, seed=2)
    b = torch.linspace(1, 2, 6, dtype=DT)
    z, info = di.root(
        lambda z: A @ z - b, torch.zeros(6, dtype=DT), solver=solver, tol=1e-11, max_iter=1000
    )
    np.testing.assert_allclose(z.numpy(), np.linalg.solve(A.numpy(), b.numpy()), atol=1e-9)
    assert bool(info.converged)


@pytest.mark.parametrize("solver", list(ROOT_SOLVERS.values()), ids=list(ROOT_SOLVERS))
def test_square_root(solver: Any) -> None:
    a = torch.tensor([2.0, 3.0, 5.0], dtype=DT)
    z0 = torch.full((3,), 1.5, dtype=DT)
    z, info = di.root(lambda z: z * z - a, z0, solver=solver, tol=1e-12, max_iter=1000)
    assert bool(info.converged)
    np.testing.assert_allclose(z.numpy(), np.sqrt([2.0, 3.0, 5.0]), atol=1e-11)


def test_anderson_and_broyden_take_fewer_iterations_on_an_ill_conditioned_contraction() -> None:
    n = 20
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=DT))
    A = Q @ torch.diag(torch.linspace(0.0, 0.99, n, dtype=DT)) @ Q.T  # rate 0.99
    b = torch.randn(n, dtype=DT)
    counts = {}
    for name, solver in [
        ("picard", di.Picard()),
        ("anderson", di.Anderson(m=10)),
        ("broyden", di.Broyden(memory=n + 5)),
    ]:
        z, info = di.fixed_point(
            lambda z: A @ z + b, torch.zeros(n, dtype=DT), solver=solver, tol=1e-8, max_iter=5000
        )
        assert bool(info.converged), name
        np.testing.assert_allclose(
            z.numpy(), np.linalg.solve(np.eye(n) - A.numpy(), b.numpy()), atol=1e-6
        )
        counts[name] = int(info.iterations)
    assert counts["picard"] > 1000  # about log(1e-8) / log(0.99)
    assert counts["anderson"] * 10 < counts["picard"], counts
    assert counts["broyden"] * 10 < counts["picard"], counts


def broyden_by_hand(f: Any, z: torch.Tensor, memory: int, iters: int, good: bool) -> torch.Tensor:
    """Broyden's method with a dense inverse Jacobian H of G(z) = f(z) - z, reset to -I once it
    holds `memory` rank-1 updates (before the next update)."""
    n = z.numel()
    H, updates = -torch.eye(n, dtype=z.dtype), 0
    g = f(z) - z
    for _ in range(iters):
        z_new = z - H @ g
        g_new = f(z_new) - z_new
        dz, dg = z_new - z, g_new - g
        if updates == memory:
            H, updates = -torch.eye(n, dtype=z.dtype), 0
        v = H.T @ dz if good else dg
        H = H + torch.outer((dz - H @ dg) / (v @ dg), v)
        updates += 1
        z, g = z_new, g_new
    return z


@pytest.mark.parametrize("variant", ["good", "bad"])
@pytest.mark.parametrize("memory", [2, 5, 30])
@pytest.mark.parametrize("grad", [False, True], ids=["buffers", "graph"])
def test_broyden_iterates_equal_a_dense_broyden_with_restarts(
    variant: str, memory: int, grad: bool
) -> None:
    n, iters = 6, 9
    gen = torch.Generator().manual_seed(3)
    A = 0.3 * torch.randn(n, n, dtype=DT, generator=gen)
    b = torch.randn(n, dtype=DT, generator=gen).requires_grad_(grad)

    def f(z: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.tanh(A @ z + b)

    z0 = torch.zeros(n, dtype=DT)
    want = broyden_by_hand(lambda z: f(z, b.detach()), z0, memory, iters, variant == "good")
    # tol far below reach: exactly `iters` steps (grad: the unrolled mode, on the graph).
    z, info = di.fixed_point(
        f, z0, b, solver=di.Broyden(memory=memory, variant=variant), tol=1e-300,
        max_iter=iters, backward="unrolled",
    )  # fmt: skip
    assert int(info.iterations) == iters and z.requires_grad == grad
    torch.testing.assert_close(z.detach(), want, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------ gradients


def make_params() -> dict[str, Any]:
    n = 4
    g = torch.Generator().manual_seed(3)
    W = 0.4 * torch.randn(n, n, generator=g, dtype=DT) / math.sqrt(n)
    return {"W": W, "bias": (torch.randn(n, generator=g, dtype=DT), torch.tensor(0.7, dtype=DT))}


def cell(z: torch.Tensor, p: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
    bias, scale = p["bias"]
    return torch.tanh(p["W"] @ z + bias + scale * x)


X = torch.linspace(-1, 1, 4, dtype=DT)
C = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=DT)  # loss = C . z*


def loss_by_hand(p: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
    z = picard_by_hand(lambda z: cell(z, p, x), torch.zeros(4, dtype=DT), iters=200)
    return (C * z).sum()


def finite_differences(p: dict[str, Any], x: torch.Tensor, eps: float = 1e-5) -> Any:
    leaves, spec = difopt.pytree.tree_flatten((p, x))
    grads = []
    for i, leaf in enumerate(leaves):
        g = torch.zeros_like(leaf)
        for j in range(leaf.numel()):
            values = []
            for sign in (1.0, -1.0):
                shifted = [t.clone() for t in leaves]
                shifted[i].view(-1)[j] += sign * eps
                values.append(float(loss_by_hand(*difopt.pytree.tree_unflatten(spec, shifted))))
            g.view(-1)[j] = (values[0] - values[1]) / (2 * eps)
        grads.append(g)
    return grads


FD = None


def fd_oracle() -> Any:
    global FD
    if FD is None:
        FD = finite_differences(make_params(), X)
    return FD


BACKWARDS = {
    "implicit_fixed_point_adjoint": di.Implicit(tol=1e-13, max_iter=500),
    "implicit_gmres": di.Implicit(solve_gmres(rtol=1e-13)),
    "implicit_picard_adjoint": di.Implicit(tol=1e-13, max_iter=500, solver=di.Picard()),
    "implicit_broyden_adjoint": di.Implicit(tol=1e-13, max_iter=500, solver="broyden"),
    "unrolled": di.Unrolled(),
}


@pytest.mark.parametrize("backward", list(BACKWARDS.values()), ids=list(BACKWARDS))
@solver_params()
def test_gradients_match_finite_differences(solver: Any, backward: Any) -> None:
    if isinstance(solver, di.Newton) and isinstance(backward, di.Unrolled):
        pytest.skip("Newton cannot be unrolled (a documented error, tested below)")
    p = difopt.pytree.tree_map(lambda t: t.clone().requires_grad_(), make_params())
    x = X.clone().requires_grad_()
    z, info = di.fixed_point(
        cell, torch.zeros(4, dtype=DT), p, x, solver=solver, backward=backward, tol=1e-13,
        max_iter=500,
    )  # fmt: skip
    assert bool(info.converged)
    grads = torch.autograd.grad((C * z).sum(), difopt.pytree.tree_leaves((p, x)))
    for got, want in zip(grads, fd_oracle()):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-9)


def test_implicit_equals_a_hand_unrolled_picard_loop() -> None:
    p = difopt.pytree.tree_map(lambda t: t.clone().requires_grad_(), make_params())
    z, _ = di.fixed_point(cell, torch.zeros(4, dtype=DT), p, X, tol=1e-13, max_iter=500)
    got = torch.autograd.grad((C * z).sum(), difopt.pytree.tree_leaves(p))
    want = torch.autograd.grad(loss_by_hand(p, X), difopt.pytree.tree_leaves(p))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("forward", ["anderson", "newton"])
def test_implicit_adjoint_runs_the_solver_it_is_given(forward: str) -> None:
    # The adjoint solver is the one named in Implicit(solver=...), not the forward's (nor
    # GMRES after a Newton forward): a Picard iteration that records what it solves.
    seen: list[int] = []

    @dataclasses.dataclass(frozen=True)
    class RecordingPicard(di.Picard):
        def _start(self, residual: Any, z: torch.Tensor, g: torch.Tensor) -> Any:
            seen.append(z.shape[-1])
            return super()._start(residual, z, g)

    p = difopt.pytree.tree_map(lambda t: t.clone().requires_grad_(), make_params())
    backward = di.Implicit(tol=1e-13, max_iter=500, solver=RecordingPicard())
    z, _ = di.fixed_point(
        cell, torch.zeros(4, dtype=DT), p, X, solver=forward, backward=backward, tol=1e-13,
        max_iter=500,
    )  # fmt: skip
    assert seen == []  # the forward used its own solver
    got = torch.autograd.grad((C * z).sum(), difopt.pytree.tree_leaves(p))
    assert seen == [4]  # one adjoint solve, on the 4 entries of z
    want = torch.autograd.grad(loss_by_hand(p, X), difopt.pytree.tree_leaves(p))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-9, atol=1e-12)


class Cell(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        p = make_params()
        self.W = torch.nn.Parameter(p["W"].clone())
        self.bias = torch.nn.Parameter(p["bias"][0].clone())

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.W @ z + self.bias + 0.7 * x)


@pytest.mark.parametrize("backward", ["implicit", "unrolled"])
def test_gradients_reach_module_parameters_and_captured_tensors(backward: str) -> None:
    module = Cell()
    x = X.clone().requires_grad_()
    z, _ = di.fixed_point(module, torch.zeros(4, dtype=DT), x, backward=backward, tol=1e-13)
    got = torch.autograd.grad((C * z).sum(), [module.W, module.bias, x])
    p = {"W": module.W, "bias": (module.bias, torch.tensor(0.7, dtype=DT))}
    want = torch.autograd.grad(loss_by_hand(p, x), [module.W, module.bias, x])
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-8, atol=1e-12)
    # A tensor captured by a closure, not passed in args.
    scale = torch.tensor(0.7, dtype=DT, requires_grad=True)
    z, _ = di.fixed_point(
        lambda z: torch.tanh(module.W @ z + module.bias + scale * X),
        torch.zeros(4, dtype=DT),
        backward=backward,
        tol=1e-13,
    )
    (got_scale,) = torch.autograd.grad((C * z).sum(), [scale])
    p = {"W": module.W.detach(), "bias": (module.bias.detach(), scale)}
    (want_scale,) = torch.autograd.grad(loss_by_hand(p, X), [scale])
    np.testing.assert_allclose(float(got_scale), float(want_scale), rtol=1e-8)


def test_gradcheck_fixed_point_and_root() -> None:
    def solve_fp(W: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        backward = di.Implicit(solve_gmres(rtol=1e-14))
        z, _ = di.fixed_point(
            lambda z: torch.tanh(W @ z + x), torch.zeros(3, dtype=DT), backward=backward,
            tol=1e-14, max_iter=500,
        )  # fmt: skip
        return z

    def solve_root(A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        z, _ = di.root(lambda z: A @ z + z**3 - b, torch.zeros(3, dtype=DT), tol=1e-14)
        return z

    W = (0.3 * torch.randn(3, 3, dtype=DT)).requires_grad_()
    x = torch.randn(3, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(solve_fp, (W, x))
    A = (torch.eye(3, dtype=DT) + 0.2 * torch.randn(3, 3, dtype=DT)).requires_grad_()
    assert torch.autograd.gradcheck(solve_root, (A, x))


def test_root_gradient_is_the_closed_form() -> None:
    a = torch.tensor([2.0, 9.0], dtype=DT, requires_grad=True)
    for solver, backward in (("newton", "implicit"), ("broyden", "unrolled")):
        z, _ = di.root(
            lambda z: z * z - a, torch.ones(2, dtype=DT), tol=1e-13, solver=solver,
            backward=backward,
        )  # fmt: skip
        (g,) = torch.autograd.grad(z.sum(), a)
        np.testing.assert_allclose(g.numpy(), 0.5 / np.sqrt([2.0, 9.0]), rtol=1e-9)


@pytest.mark.parametrize("k,damping", [(1, 1.0), (3, 0.7), (5, 0.5)])
def test_phantom_and_jfb_match_their_definitions(k: int, damping: float) -> None:
    p = difopt.pytree.tree_map(lambda t: t.clone().requires_grad_(), make_params())
    leaves = difopt.pytree.tree_leaves(p)
    with torch.no_grad():
        z_star = picard_by_hand(lambda z: cell(z, p, X), torch.zeros(4, dtype=DT), iters=200)
    # Definition (Geng et al. 2021): k damped steps from the detached fixed point.
    z = z_star
    for _ in range(k):
        z = (1 - damping) * z + damping * cell(z, p, X)
    want = torch.autograd.grad((C * z).sum(), leaves)
    backwards = [di.Phantom(k=k, damping=damping)]
    if k == 1 and damping == 1.0:
        backwards += ["jfb", di.JFB()]  # JFB: the gradient of one application of f at z*
    for backward in backwards:
        out, _ = di.fixed_point(
            cell, torch.zeros(4, dtype=DT), p, X, backward=backward, tol=1e-13, max_iter=500
        )
        got = torch.autograd.grad((C * out).sum(), leaves)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------ batching


@solver_params()
def test_batched_samples_converge_on_their_own(solver: Any) -> None:
    rates = torch.tensor([0.05, 0.3, 0.6, 0.85], dtype=DT)  # converge at different iterations
    W = contraction(5, 1.0, seed=4)
    xs = torch.randn(4, 5, dtype=DT)
    theta = torch.tensor(1.0, dtype=DT, requires_grad=True)

    def f(z: torch.Tensor, r: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return r.unsqueeze(-1) * torch.tanh(z @ W.T) + theta * x

    z, info = di.fixed_point(
        f, torch.zeros(4, 5, dtype=DT), rates, xs, solver=solver, batched=True, tol=1e-10,
        max_iter=500,
    )  # fmt: skip
    assert info.iterations.shape == info.residual.shape == info.converged.shape == (4,)
    assert bool(info.converged.all())
    assert len(set(info.iterations.tolist())) > 1, info.iterations
    (g_batch,) = torch.autograd.grad(z.sum(), theta)
    g_alone = torch.zeros((), dtype=DT)
    for i in range(4):
        zi, info_i = di.fixed_point(
            f, torch.zeros(1, 5, dtype=DT), rates[i : i + 1], xs[i : i + 1], solver=solver,
            batched=True, tol=1e-10, max_iter=500,
        )  # fmt: skip
        np.testing.assert_allclose(z[i].detach().numpy(), zi[0].detach().numpy(), atol=1e-9)
        assert int(info.iterations[i]) == int(info_i.iterations[0])  # Newton included
        assert bool(info_i.converged[0])
        g_alone = g_alone + torch.autograd.grad(zi.sum(), theta)[0]
    np.testing.assert_allclose(float(g_batch), float(g_alone), rtol=1e-8)


# ------------------------------------------------------------------------------ failures


def test_a_non_contracting_map_is_reported_not_a_nan() -> None:
    z, info = di.fixed_point(lambda z: 2 * z + 1, torch.zeros(3), solver="picard", max_iter=20)
    assert not bool(info.converged) and int(info.iterations) == 20
    assert torch.isfinite(z).all()
    with pytest.raises(di.NotConvergedError, match="max_iter=20"):
        di.fixed_point(
            lambda z: 2 * z + 1, torch.zeros(3), solver="picard", max_iter=20,
            raise_on_failure=True,
        )  # fmt: skip
    # Blows up to inf: the sample keeps its last finite iterate and is flagged.
    z, info = di.fixed_point(lambda z: z * z + 1, torch.ones(2), solver="picard", max_iter=50)
    assert not bool(info.converged) and torch.isfinite(z).all()


@pytest.mark.parametrize("stop_mode", ["abs", "rel"])
def test_a_non_finite_start_is_not_reported_converged(stop_mode: str) -> None:
    # F is finite at z = inf: with stop_mode="rel" the residual |F| / |z - F| would be 0.
    z0 = torch.tensor([math.inf, 0.0], dtype=DT)
    z, info = di.root(lambda z: torch.tanh(z) - 0.5, z0, solver="picard", stop_mode=stop_mode)
    assert not bool(info.converged) and int(info.iterations) == 0


def test_batched_failure_flags_only_the_bad_sample() -> None:
    rates = torch.tensor([0.5, 2.0])
    z, info = di.fixed_point(
        lambda z: rates[:, None] * z + 1, torch.zeros(2, 3), solver="picard", batched=True,
        max_iter=200,
    )  # fmt: skip
    assert info.converged.tolist() == [True, False]
    np.testing.assert_allclose(z[0].numpy(), 2.0, atol=1e-4)
    assert torch.isfinite(z).all()


IDENTITY = lambda z: z  # noqa: E731


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"tol": 0.0}, ValueError, "'tol'"),
        ({"tol": -1e-3}, ValueError, "'tol'"),
        ({"tol": float("nan")}, ValueError, "'tol'"),
        ({"max_iter": 0}, ValueError, "'max_iter'"),
        ({"max_iter": 2.5}, ValueError, "'max_iter'"),
        ({"solver": "adam"}, ValueError, "'solver'.*anderson"),
        ({"solver": 3}, TypeError, "'solver'"),
        ({"backward": "reverse"}, ValueError, "'backward'.*implicit"),
        ({"backward": None}, TypeError, "'backward'"),
        ({"stop_mode": "max"}, ValueError, "'stop_mode'"),
        ({"batched": 1}, TypeError, "'batched'"),
        ({"raise_on_failure": "yes"}, TypeError, "'raise_on_failure'"),
        ({"f": 3}, TypeError, "'f' must be callable"),
        ({"f": lambda z: (z, z)}, ValueError, "'f' must return a value structured like 'z0'"),
        ({"f": lambda z: z[:1]}, ValueError, "'f' must return .* shapes"),
        ({"f": lambda z: z.double()}, ValueError, "'f' must return tensors of the dtype"),
        ({"z0": [1.0, 2.0]}, TypeError, "'z0'"),
        ({"z0": torch.zeros(2, dtype=torch.long)}, TypeError, "'z0'"),
        ({"z0": {}}, ValueError, "'z0'"),
        ({"z0": (torch.zeros(2), torch.zeros(3)), "batched": True}, ValueError, "batch"),
    ],
)
def test_bad_input_names_the_argument(kwargs: dict[str, Any], error: type, match: str) -> None:
    f = kwargs.pop("f", IDENTITY)
    z0 = kwargs.pop("z0", torch.zeros(2))
    with pytest.raises(error, match=match):
        di.fixed_point(f, z0, **kwargs)


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: di.Anderson(m=0), "'m'"),
        (lambda: di.Anderson(damping=0.0), "'damping'"),
        (lambda: di.Anderson(ridge=-1.0), "'ridge'"),
        (lambda: di.Picard(damping=1.5), "'damping'"),
        (lambda: di.Broyden(memory=0), "'memory'"),
        (lambda: di.Broyden(variant="ugly"), "'variant'"),
        (lambda: di.Newton(linear_solve=3), "'linear_solve'"),  # type: ignore[arg-type]
        (lambda: di.Phantom(k=0), "'k'"),
        (lambda: di.Phantom(damping=2.0), "'damping'"),
        (lambda: di.Implicit(tol=0.0), "'tol'"),
        (lambda: di.Implicit(max_iter=0), "'max_iter'"),
        (lambda: di.Implicit(solver="sor"), "Implicit 'solver'"),
        (lambda: di.Implicit(solver=3), "Implicit 'solver'"),  # type: ignore[arg-type]
        (lambda: di.Implicit(solver=di.Newton()), "Implicit 'solver'.*Newton"),
        (lambda: di.Implicit(solve_gmres(), solver="picard"), "'linear_solve'.*'solver'"),
    ],
)
def test_bad_options_name_the_option(build: Any, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        build()


def test_root_rejects_fixed_point_only_backwards_and_wrong_outputs() -> None:
    with pytest.raises(ValueError, match="'backward'='unrolled'.*Newton"):
        di.root(IDENTITY, torch.zeros(2), solver="newton", backward="unrolled")
    for backward in ("jfb", di.Phantom()):
        with pytest.raises(ValueError, match="'backward'"):
            di.root(IDENTITY, torch.zeros(2), backward=backward)
    with pytest.raises(ValueError, match="'F' must return"):
        di.root(lambda z: z.sum(), torch.zeros(2))


def test_nonconverged_adjoint_warns() -> None:
    W = torch.tensor([[0.999]], dtype=DT, requires_grad=True)
    z, _ = di.fixed_point(
        lambda z: W @ z + 1, torch.zeros(1, dtype=DT), solver="picard", tol=1e-3, max_iter=20000,
        backward=di.Implicit(max_iter=3),
    )  # fmt: skip
    with pytest.warns(di.ConvergenceWarning, match="adjoint"):
        z.sum().backward()


# ------------------------------------------------------------------------------ exposure


def test_names_resolve_through_difopt_diff_implicit() -> None:
    for name in ("fixed_point", "root", "DEQ", "Anderson", "Implicit", "FixedPointInfo"):
        assert getattr(difopt.diff.implicit, name) is getattr(di, name)


def test_the_plugin_imports_only_public_difopt_names() -> None:
    import ast
    import pathlib

    src = pathlib.Path(di.__file__).parent
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.split(".")[0] == "difopt":
                    names = node.module.split(".") + [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                names = [
                    p for a in node.names if a.name.startswith("difopt.") for p in a.name.split(".")
                ]
            private = [n for n in names if n.startswith("_")]
            assert not private, f"{path.name}: imports private difopt name(s) {private}"


# ------------------------------------------------------------------------------ review fixes


@pytest.mark.parametrize("backward", ["implicit", di.Implicit(solve_gmres(rtol=1e-10))])
@solver_params()
def test_the_adjoint_tolerance_is_relative_to_the_cotangent(solver: Any, backward: Any) -> None:
    # A loss scaled by 1e-6: its cotangent's J^T g is below an absolute tol of 1e-6, so an
    # absolute adjoint test would stop at u = g (the JFB gradient, 77% off here).
    p = difopt.pytree.tree_map(lambda t: t.clone().requires_grad_(), make_params())
    x = X.clone().requires_grad_()
    z, info = di.fixed_point(
        cell, torch.zeros(4, dtype=DT), p, x, solver=solver, backward=backward, tol=1e-6
    )
    assert bool(info.converged)
    grads = torch.autograd.grad(1e-6 * (C * z).sum(), difopt.pytree.tree_leaves((p, x)))
    for got, want in zip(grads, fd_oracle()):
        np.testing.assert_allclose(got.numpy() / 1e-6, want.numpy(), rtol=1e-4, atol=1e-5)


def test_the_root_adjoint_is_relative_to_the_cotangent() -> None:
    a = torch.tensor([2.0, 9.0], dtype=DT, requires_grad=True)
    z, _ = di.root(lambda z: z * z - a, torch.ones(2, dtype=DT), batched=True, tol=1e-6)
    (g,) = torch.autograd.grad(1e-9 * z.sum(), a)
    np.testing.assert_allclose(g.numpy() / 1e-9, 0.5 / np.sqrt([2.0, 9.0]), rtol=1e-5)


def nan_batch_cell(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    W = contraction(4, 0.5, seed=7)
    return torch.tanh(z @ W.T + torch.log(x))  # NaN for the sample with x < 0


NAN_SOLVERS = {**SOLVERS, "newton_user_gmres": di.Newton(solve_gmres(rtol=1e-10))}
NAN_BACKWARDS = ["implicit", "jfb", di.Phantom(k=3, damping=0.7), "unrolled"]


@pytest.mark.parametrize("backward", NAN_BACKWARDS, ids=str)
@pytest.mark.parametrize("solver", list(NAN_SOLVERS.values()), ids=list(NAN_SOLVERS))
def test_a_nan_sample_leaves_the_value_and_the_healthy_sample_alone(
    solver: Any, backward: Any
) -> None:
    if isinstance(solver, di.Newton) and backward == "unrolled":
        pytest.skip("Newton cannot be unrolled")
    xs = torch.tensor([[0.5, 1.0, 2.0, 1.5], [-1.0, 1.0, 1.0, 1.0]], dtype=DT)
    xs.requires_grad_()
    z0 = torch.zeros(2, 4, dtype=DT)
    kw = dict(solver=solver, backward=backward, batched=True, tol=1e-11, max_iter=300)
    with torch.no_grad():
        ref, _ = di.fixed_point(nan_batch_cell, z0, xs, **kw)
    z, info = di.fixed_point(nan_batch_cell, z0, xs, **kw)
    assert info.converged.tolist() == [True, False]
    assert int(info.iterations[1]) == 0  # non-finite at z0: it keeps z0
    # The value does not depend on the grad mode: z*, not T(z*) (which is ~tol away), up to
    # the last bit (the batched BLAS products need not be bitwise reproducible).
    torch.testing.assert_close(z.detach(), ref, rtol=0, atol=1e-14)
    assert torch.equal(z[1].detach(), z0[1])
    # The healthy sample: the fixed point of a hand-written Picard loop, and its gradient.
    x0 = xs[:1].detach().clone().requires_grad_()
    want = picard_by_hand(lambda z: nan_batch_cell(z, x0), z0[:1], iters=300)
    np.testing.assert_allclose(z[0].detach().numpy(), want[0].detach().numpy(), atol=1e-10)
    (got_g,) = torch.autograd.grad((C * z[0]).sum(), xs)
    if backward in ("implicit", "unrolled"):  # both the exact derivative of z*
        (want_g,) = torch.autograd.grad((C * want[0]).sum(), x0)
        np.testing.assert_allclose(got_g[0].numpy(), want_g[0].numpy(), rtol=1e-8, atol=1e-11)
    assert torch.isfinite(got_g[0]).all()


@pytest.mark.parametrize("solver", list(NAN_SOLVERS.values()), ids=list(NAN_SOLVERS))
def test_a_nan_sample_does_not_stop_the_others_converging(solver: Any) -> None:
    xs = torch.tensor([[0.5, 1.0, 2.0, 1.5], [-1.0, 1.0, 1.0, 1.0]], dtype=DT)
    z, info = di.fixed_point(
        nan_batch_cell, torch.zeros(2, 4, dtype=DT), xs, solver=solver, batched=True,
        tol=1e-11, max_iter=300,
    )  # fmt: skip
    alone, info_alone = di.fixed_point(
        nan_batch_cell, torch.zeros(1, 4, dtype=DT), xs[:1], solver=solver, batched=True,
        tol=1e-11, max_iter=300,
    )  # fmt: skip
    assert info.converged.tolist() == [True, False]
    assert int(info.iterations[0]) == int(info_alone.iterations[0])
    np.testing.assert_allclose(z[0].numpy(), alone[0].numpy(), atol=1e-12)


def test_second_order_through_the_implicit_backward_is_an_error() -> None:
    p = difopt.pytree.tree_map(lambda t: t.clone().requires_grad_(), make_params())
    z, _ = di.fixed_point(cell, torch.zeros(4, dtype=DT), p, X, tol=1e-10)
    with pytest.raises(RuntimeError, match="create_graph"):
        torch.autograd.grad((C * z).sum(), p["W"], create_graph=True)
    # First order, after the error, still works (and equals the hand-unrolled oracle).
    z, _ = di.fixed_point(cell, torch.zeros(4, dtype=DT), p, X, tol=1e-13)
    (got,) = torch.autograd.grad((C * z).sum(), p["W"])
    (want,) = torch.autograd.grad(loss_by_hand(p, X), p["W"])
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("variant", ["good", "bad"])
def test_broyden_is_invariant_to_the_scale_of_the_problem(variant: str) -> None:
    # f_s(z) = A z + s b has the fixed point s z*; with s a power of two, every iterate of a
    # scale-free method is exactly s times the one at s = 1, so the counts are equal.
    n = 20
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=DT, generator=torch.Generator().manual_seed(5)))
    A = Q @ torch.diag(torch.linspace(0.0, 0.95, n, dtype=DT)) @ Q.T
    b = torch.linspace(-1, 1, n, dtype=DT)
    counts = []
    for s in (1.0, 2.0**-45):
        z, info = di.fixed_point(
            lambda z, s=s: A @ z + s * b, torch.zeros(n, dtype=DT), solver=di.Broyden(variant=variant),
            tol=1e-10 * s, max_iter=2000,
        )  # fmt: skip
        assert bool(info.converged)
        expected = s * np.linalg.solve(np.eye(n) - A.numpy(), b.numpy())
        np.testing.assert_allclose(z.numpy(), expected, rtol=0, atol=1e-8 * s)
        counts.append(int(info.iterations))
    assert counts[0] == counts[1] and counts[0] < 100, counts


@pytest.mark.parametrize("tol", [np.float32(1e-6), np.float64(1e-6), torch.tensor(1e-6)])
def test_tolerances_may_be_numpy_floats_or_0d_tensors(tol: Any) -> None:
    z, info = di.fixed_point(torch.cos, torch.ones((), dtype=DT), tol=tol)
    assert bool(info.converged) and abs(float(z) - DOTTIE) < 1e-5
    di.Implicit(tol=tol)
    di.Anderson(damping=torch.tensor(0.5))
    with pytest.raises(ValueError, match="'tol'"):
        di.fixed_point(torch.cos, torch.ones(()), tol=torch.tensor([1e-6, 1e-6]))
    with pytest.raises(ValueError, match="'tol'"):
        di.fixed_point(torch.cos, torch.ones(()), tol=np.float32("nan"))
