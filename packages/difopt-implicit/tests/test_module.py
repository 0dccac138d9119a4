"""ImplicitMetaGradientModule: same meta-gradients as custom_root and as exact oracles."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn

import difopt
from difopt_implicit import ImplicitMetaGradientModule, custom_root, linear_solve

DT = torch.float64


def ridge_data() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(42)
    x = torch.randn(30, 5, generator=g, dtype=DT) / 30**0.5
    y = torch.randn(30, generator=g, dtype=DT)
    xv = torch.randn(20, 5, generator=g, dtype=DT)
    yv = torch.randn(20, generator=g, dtype=DT)
    return x, y, xv, yv


class RidgeModule(ImplicitMetaGradientModule, linear_solve=linear_solve.solve_cg(rtol=1e-14)):
    """Ridge regression; the optimality is derived from the objective's gradient."""

    def __init__(self, lam: torch.Tensor, n: int) -> None:
        super().__init__()
        self.lam = lam
        self.theta = nn.Parameter(torch.zeros(n, dtype=DT))

    def objective(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((x @ self.theta - y) ** 2).sum() + 0.5 * self.lam * (self.theta**2).sum()

    def solve(self, x: torch.Tensor, y: torch.Tensor) -> str:
        params = (self.theta,)
        optimizer = torch.optim.LBFGS(
            params,
            lr=1.0,
            max_iter=100,
            tolerance_grad=1e-14,
            tolerance_change=0,
            line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = self.objective(x, y)
            loss.backward(inputs=params)
            return loss

        optimizer.step(closure)
        return "solved"


def test_module_meta_gradient_equals_custom_root_and_closed_form() -> None:
    x, y, xv, yv = ridge_data()
    lam = torch.tensor(0.8, dtype=DT, requires_grad=True)
    model = RidgeModule(lam, 5)
    assert [n for n, _ in model.named_meta_parameters()] == ["lam"]
    assert model.solve(x, y) == "solved"
    assert lam.grad is None  # the solver's backward passes never reach the meta-parameter
    loss = 0.5 * ((xv @ model.theta - yv) ** 2).sum()
    (module_grad,) = torch.autograd.grad(loss, lam)

    def optimality(theta: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        return x.T @ (x @ theta - y) + lam * theta

    @custom_root(optimality, argnums=1, solve=linear_solve.solve_cg(rtol=1e-14))
    def ridge(theta: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        return torch.linalg.solve(x.T @ x + lam * torch.eye(5, dtype=DT), x.T @ y)

    theta = ridge(torch.zeros(5, dtype=DT), lam)
    (root_grad,) = torch.autograd.grad(0.5 * ((xv @ theta - yv) ** 2).sum(), lam)
    assert float(module_grad) == pytest.approx(float(root_grad), rel=1e-8)

    # Independent oracle: differentiate through an exact dense solve.
    h = x.T @ x + lam * torch.eye(5, dtype=DT)
    exact = torch.linalg.solve(h, x.T @ y)
    (oracle,) = torch.autograd.grad(0.5 * ((xv @ exact - yv) ** 2).sum(), lam)
    assert float(module_grad) == pytest.approx(float(oracle), rel=1e-8)


class FixedPoint(ImplicitMetaGradientModule, linear_solve=linear_solve.solve_gmres(rtol=1e-13)):
    """theta = tanh(W theta + phi), with an explicit optimality (a non-symmetric system)."""

    def __init__(self, w: torch.Tensor, phi: torch.Tensor) -> None:
        super().__init__()
        self.w, self.phi = w, phi
        self.theta = nn.Parameter(torch.zeros(phi.shape[0], dtype=DT))

    def optimality(self) -> tuple[torch.Tensor]:
        return (self.theta - torch.tanh(self.w @ self.theta + self.phi),)

    def solve(self) -> None:
        with torch.no_grad():
            for _ in range(500):
                self.theta.copy_(torch.tanh(self.w @ self.theta + self.phi))


def test_module_with_explicit_optimality_matches_unrolling() -> None:
    g = torch.Generator().manual_seed(7)
    w = torch.randn(6, 6, generator=g, dtype=DT)
    w = (0.6 * w / torch.linalg.matrix_norm(w, ord=2)).requires_grad_(True)
    phi = torch.randn(6, generator=g, dtype=DT, requires_grad=True)
    c = torch.randn(6, generator=g, dtype=DT)
    model = FixedPoint(w, phi)
    model.solve()
    grads = torch.autograd.grad((c * model.theta).sum(), (w, phi))
    theta = torch.zeros(6, dtype=DT)
    for _ in range(500):
        theta = torch.tanh(w @ theta + phi)
    for got, ref in zip(grads, torch.autograd.grad((c * theta).sum(), (w, phi))):
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)


class HeadOnFeatures(ImplicitMetaGradientModule, linear_solve=linear_solve.solve_cg(rtol=1e-14)):
    """A ridge head fitted on the features of a meta-learned network (with BatchNorm)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.head = nn.Parameter(torch.zeros(3, dtype=DT))

    def objective(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        features = self.net(x)
        return 0.5 * ((features @ self.head - y) ** 2).sum() + 0.5 * (self.head**2).sum()

    def solve(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.no_grad():
            features = self.net(x)
            a = features.T @ features + torch.eye(3, dtype=DT)
            self.head.copy_(torch.linalg.solve(a, features.T @ y))


def make_net() -> nn.Module:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).to(DT)
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        net[1].running_mean.copy_(torch.tensor([0.3, -0.2, 0.1]))
        net[1].running_var.copy_(torch.tensor([1.5, 0.7, 2.0]))
        net[1].weight.copy_(torch.tensor([1.2, 0.8, 1.1]))
        net[1].bias.copy_(torch.tensor([0.1, -0.3, 0.2]))
    return net


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_batchnorm_meta_module_in_train_and_eval_mode(mode: str) -> None:
    """Meta-parameters are found whatever the module's mode (TorchOpt lost them in eval mode,
    its issue #144); the meta-gradient equals differentiating an exact solve; backward does
    not touch the running statistics."""
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(16, 4, generator=g, dtype=DT), torch.randn(16, generator=g, dtype=DT)
    xv, yv = torch.randn(16, 4, generator=g, dtype=DT), torch.randn(16, generator=g, dtype=DT)

    net = make_net().train(mode == "train")
    model = HeadOnFeatures(net)
    names = [n for n, _ in model.named_meta_parameters()]
    assert names == ["net.0.weight", "net.0.bias", "net.1.weight", "net.1.bias"]
    assert [n for n, _ in model.named_parameters()] == ["head"]
    model.solve(x, y)
    stats = [net[1].running_mean.clone(), net[1].running_var.clone()]
    loss = 0.5 * ((model.net(xv) @ model.head - yv) ** 2).sum()
    stats_after_outer_forward = [net[1].running_mean.clone(), net[1].running_var.clone()]
    grads = torch.autograd.grad(loss, list(net.parameters()))
    torch.testing.assert_close(net[1].running_mean, stats_after_outer_forward[0])
    torch.testing.assert_close(net[1].running_var, stats_after_outer_forward[1])
    del stats

    oracle_net = make_net().train(mode == "train")
    features = oracle_net(x)
    head = torch.linalg.solve(features.T @ features + torch.eye(3, dtype=DT), features.T @ y)
    oracle_loss = 0.5 * ((oracle_net(xv) @ head - yv) ** 2).sum()
    oracle = torch.autograd.grad(oracle_loss, list(oracle_net.parameters()))
    for got, ref in zip(grads, oracle):
        torch.testing.assert_close(got, ref, rtol=1e-8, atol=1e-10)


def test_solving_the_same_module_again_starts_from_leaves() -> None:
    x, y, xv, yv = ridge_data()
    lam = torch.tensor(0.8, dtype=DT, requires_grad=True)
    model = RidgeModule(lam, 5)
    model.solve(x, y)
    assert model.theta.grad_fn is not None
    model.solve(x, y)  # LBFGS needs leaf parameters: they were restored
    (grad,) = torch.autograd.grad(0.5 * ((xv @ model.theta - yv) ** 2).sum(), lam)
    h = x.T @ x + lam * torch.eye(5, dtype=DT)
    (oracle,) = torch.autograd.grad(
        0.5 * ((xv @ torch.linalg.solve(h, x.T @ y) - yv) ** 2).sum(), lam
    )
    assert float(grad) == pytest.approx(float(oracle), rel=1e-8)


def test_torchopt_spelling_through_core() -> None:
    torchopt = difopt
    assert torchopt.nn.ImplicitMetaGradientModule is ImplicitMetaGradientModule
    assert torchopt.diff.implicit.ImplicitMetaGradientModule is ImplicitMetaGradientModule


def test_a_module_without_meta_parameters_fails_clearly() -> None:
    model = RidgeModule(torch.tensor(0.8, dtype=DT), 5)  # does not require grad: not meta
    x, y, _, _ = ridge_data()
    with pytest.raises(
        RuntimeError,
        match="^The module has no meta-parameters. RidgeModule has no meta-parameters: pass the",
    ):
        model.solve(x, y)


def test_a_module_without_inner_parameters_fails_clearly() -> None:
    class NoInner(ImplicitMetaGradientModule):
        def __init__(self, prior: torch.Tensor) -> None:
            super().__init__()
            self.prior = prior

        def objective(self) -> torch.Tensor:
            return self.prior.sum()

        def solve(self) -> None:
            pass

    # TorchOpt's sentence first (code matches on it), then the explanation.
    with pytest.raises(RuntimeError, match="^The module has no parameters. NoInner has no"):
        NoInner(torch.zeros(2)).solve()
    with pytest.raises(RuntimeError, match="^The module has no parameters."):
        NoInner(torch.zeros(2, requires_grad=True)).solve()


def test_class_definition_errors() -> None:
    with pytest.raises(TypeError, match="must define optimality\\(\\).*or objective\\(\\)"):

        class Neither(ImplicitMetaGradientModule):
            def solve(self) -> None:
                pass

    with pytest.raises(TypeError, match="optimality\\(\\) must be callable"):

        class NotCallable(ImplicitMetaGradientModule):
            optimality = 0

            def solve(self) -> None:
                pass

    with pytest.raises(TypeError, match="objective\\(\\) must be a plain method"):

        class Static(ImplicitMetaGradientModule):
            @staticmethod
            def objective() -> torch.Tensor:
                return torch.zeros(())

            def solve(self) -> None:
                pass

    with pytest.raises(TypeError, match="'linear_solve' must be a linear solver"):

        class BadSolver(ImplicitMetaGradientModule, linear_solve="cg"):  # type: ignore[call-arg]
            def objective(self) -> torch.Tensor:
                return torch.zeros(())

            def solve(self) -> None:
                pass


class ProximalTask(ImplicitMetaGradientModule, linear_solve=linear_solve.solve_cg(maxiter=20)):
    """An iMAML-style inner problem on a tiny linear model, solved by gradient descent."""

    def __init__(self, prior: torch.Tensor) -> None:
        super().__init__()
        self.prior = prior
        self.w = nn.Parameter(prior.detach().clone())

    def objective(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fit = ((x @ self.w - y) ** 2).mean()
        return fit + 0.5 * ((self.w - self.prior) ** 2).sum()

    def solve(self, x: torch.Tensor, y: torch.Tensor) -> None:
        optimizer = torch.optim.SGD([self.w], lr=0.2)
        with torch.enable_grad():  # solve() runs without grad, as in TorchOpt
            for _ in range(10):
                optimizer.zero_grad()
                self.objective(x, y).backward(inputs=[self.w])
                optimizer.step()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _live_tensors() -> int:
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="needs /proc")
def test_memory_is_flat_over_200_outer_steps() -> None:
    """No growth across outer iterations (TorchOpt's issue #113).

    CPU has no allocator counter like ``torch.cuda.memory_allocated``, so three measures are
    combined: (1) with the cyclic garbage collector disabled, each step's module and its
    solution are freed by reference counting alone as soon as the step ends (a reference cycle
    through the autograd graph, the cause of growth, would keep them alive); (2) the number of
    live tensor objects after step 200 equals the number after step 20; (3) the resident set
    size grows by less than 40 MB, while each step holds a fresh 512 KiB task batch on its
    graph, so keeping the 180 graphs after the warm-up would add about 90 MB.
    """
    prior = torch.zeros(64, dtype=DT, requires_grad=True)
    meta_optimizer = torch.optim.SGD([prior], lr=0.01)
    g = torch.Generator().manual_seed(0)
    gc.collect()
    gc.disable()
    try:
        previous: list[weakref.ref] = []
        counts, rss = {}, {}
        for step in range(1, 201):
            x = torch.randn(1024, 64, generator=g, dtype=DT)  # 512 KiB per step
            y = x[:, 0].clone()
            task = ProximalTask(prior)
            task.solve(x, y)
            meta_optimizer.zero_grad()
            ((x @ task.w - y) ** 2).mean().backward()
            meta_optimizer.step()
            refs = [weakref.ref(task), weakref.ref(task.w)]
            del task, x, y
            assert all(r() is None for r in previous + refs), f"step {step} kept its graph alive"
            previous = refs
            if step in (20, 200):
                counts[step], rss[step] = _live_tensors(), _rss_bytes()
    finally:
        gc.enable()
    assert counts[200] == counts[20]
    assert rss[200] - rss[20] < 40 * 2**20
    assert prior.grad is not None and torch.isfinite(prior).all()
