"""ImplicitMetaGradientModule as TorchOpt 0.7.3 documents it: ``solve`` runs without grad (so
it may write its parameters in place), the TorchOpt tutorial's printed meta-gradients, and the
``torchopt.diff.implicit.nn.module`` functions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import difopt
from difopt_implicit import ImplicitMetaGradientModule, linear_solve
from difopt_implicit.nn.module import enable_implicit_gradients, make_optimality_from_objective

DT = torch.float64


class Affine(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class FixedPointNet(
    difopt.nn.ImplicitMetaGradientModule,
    linear_solve=difopt.linear_solve.solve_normal_cg(maxiter=5, atol=0),
):
    """TorchOpt's tutorial 5, section 2 (DEQ): ``solve`` copies into its parameter in place."""

    def __init__(self, meta_net: nn.Module, x0: torch.Tensor, iters: int = 10) -> None:
        super().__init__()
        self.meta_net = meta_net
        self.x = nn.Parameter(x0.clone().detach_(), requires_grad=True)
        self.iters = iters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.meta_net(x)

    def optimality(self) -> tuple[torch.Tensor]:
        return (self.x - self(self.x),)

    def solve(self) -> FixedPointNet:
        for _ in range(self.iters):
            self.x.copy_(self(self.x))  # a leaf that requires grad, written in place
        return self


def test_tutorial5_fixed_point_solve_writes_its_parameter_in_place() -> None:
    torch.manual_seed(0)
    meta_net = Affine(4)
    x0 = torch.randn(1, 4)
    optimal = FixedPointNet(meta_net, x0).solve()
    grads = torch.autograd.grad(optimal.x.mean(), meta_net.parameters())
    # The meta-gradient TorchOpt's tutorial prints (4 decimals).
    expected_weight = torch.tensor(
        [
            [0.0272, 0.0031, -0.0156, -0.0238],
            [0.1004, 0.0113, -0.0573, -0.0878],
            [0.0666, 0.0075, -0.0380, -0.0583],
            [0.1446, 0.0163, -0.0826, -0.1265],
        ]
    )
    expected_bias = torch.tensor([0.0574, 0.2114, 0.1403, 0.3046])
    torch.testing.assert_close(grads[0], expected_weight, rtol=0, atol=6e-5)
    torch.testing.assert_close(grads[1], expected_bias, rtol=0, atol=6e-5)


def test_in_place_fixed_point_matches_the_closed_form() -> None:
    """x* = W x* + b, so x* = (I - W)^-1 b: differentiate that direct solve instead."""
    torch.manual_seed(1)
    meta_net = Affine(4).to(DT)
    with torch.no_grad():
        meta_net.fc.weight.mul_(0.5 / torch.linalg.matrix_norm(meta_net.fc.weight, ord=2))

    class Exact(FixedPointNet, linear_solve=difopt.linear_solve.solve_normal_cg()):
        pass  # the default solver (to full precision), the tutorial's solve

    model = Exact(meta_net, torch.zeros(1, 4, dtype=DT), iters=200)
    model.solve()
    grads = torch.autograd.grad(model.x.mean(), meta_net.parameters())
    w, b = (p.detach().clone().requires_grad_() for p in meta_net.parameters())
    exact = torch.linalg.solve(torch.eye(4, dtype=DT) - w, b)
    for got, ref in zip(grads, torch.autograd.grad(exact.mean(), (w, b))):
        torch.testing.assert_close(got, ref, rtol=1e-7, atol=1e-9)


class Regression(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, 1, bias=True)
        nn.init.ones_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class IMAMLNet(
    difopt.nn.ImplicitMetaGradientModule,
    linear_solve=difopt.linear_solve.solve_normal_cg(maxiter=5, atol=0),
):
    """TorchOpt's tutorial 5, section 2 (iMAML): an inner optimizer under enable_grad()."""

    def __init__(self, meta_net: nn.Module, n_inner_iter: int, reg_param: float) -> None:
        super().__init__()
        self.meta_net = meta_net
        self.net = difopt.module_clone(meta_net, by="deepcopy", detach_buffers=True)
        self.n_inner_iter = n_inner_iter
        self.reg_param = reg_param
        self.grad_enabled_in_solve: bool | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def objective(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.mse_loss(self(x), y)
        reg = sum(
            0.5 * self.reg_param * torch.sum(torch.square(p1.view(-1) - p2.view(-1)))
            for p1, p2 in zip(self.parameters(), self.meta_parameters())
        )
        return loss + reg

    def solve(self, x: torch.Tensor, y: torch.Tensor) -> IMAMLNet:
        self.grad_enabled_in_solve = torch.is_grad_enabled()
        params = tuple(self.parameters())
        inner_optim = difopt.SGD(params, lr=2e-2)
        with torch.enable_grad():
            for _ in range(self.n_inner_iter):
                loss = self.objective(x, y)
                inner_optim.zero_grad()
                loss.backward(inputs=params)
                inner_optim.step()
        return self


def test_tutorial5_imaml_inner_optimizer_under_enable_grad() -> None:
    torch.manual_seed(0)
    x = torch.randn(20, 4)
    w = torch.randn(4, 1)
    b = torch.randn(1)
    y = x @ w + b + 0.5 * torch.randn(20, 1)
    meta_net = Regression(4)
    inner = IMAMLNet(meta_net, 100, reg_param=1)
    assert torch.is_grad_enabled()
    optimal = inner.solve(x, y)
    assert inner.grad_enabled_in_solve is False  # as in TorchOpt, whatever the caller's mode
    assert all(p.grad is None for p in meta_net.parameters())
    grads = torch.autograd.grad(optimal(x).mean(), meta_net.parameters())
    # The meta-gradient TorchOpt's tutorial prints, for both its functional and its OOP API.
    torch.testing.assert_close(
        grads[0], torch.tensor([[-0.0369, 0.0248, 0.0347, 0.0067]]), rtol=0, atol=6e-5
    )
    torch.testing.assert_close(grads[1], torch.tensor([0.3156]), rtol=0, atol=6e-5)


class NoEnableGrad(ImplicitMetaGradientModule, linear_solve=linear_solve.solve_cg()):
    def __init__(self, prior: torch.Tensor) -> None:
        super().__init__()
        self.prior = prior
        self.w = nn.Parameter(torch.zeros(3))

    def objective(self) -> torch.Tensor:
        return ((self.w - self.prior) ** 2).sum()

    def solve(self) -> None:
        self.objective().backward(inputs=[self.w])  # forgot torch.enable_grad()


def test_backward_in_solve_without_enable_grad_says_how_to_fix_it() -> None:
    model = NoEnableGrad(torch.ones(3, requires_grad=True))
    with pytest.raises(RuntimeError, match=r"(?s)does not require grad.*torch\.enable_grad\(\)"):
        model.solve()


def test_torchopt_module_path_functions() -> None:
    import difopt.diff.implicit.nn.module as torchopt_path

    assert torchopt_path.enable_implicit_gradients is enable_implicit_gradients
    assert torchopt_path.make_optimality_from_objective is make_optimality_from_objective
    assert torchopt_path.ImplicitMetaGradientModule is difopt.nn.ImplicitMetaGradientModule

    class WithObjective(ImplicitMetaGradientModule):
        def objective(self) -> torch.Tensor:
            return torch.tensor(0.0)

        def solve(self) -> None:
            pass

    # TorchOpt's messages (its tests match them).
    with pytest.raises(TypeError, match="Implicit gradients are already enabled for the `solve`"):
        enable_implicit_gradients(WithObjective)

    class WithOptimality(ImplicitMetaGradientModule):
        def optimality(self) -> tuple[torch.Tensor, ...]:
            return (torch.tensor(0.0),)

        def solve(self) -> None:
            pass

    with pytest.raises(TypeError, match="The objective function is not defined."):
        make_optimality_from_objective(WithOptimality)
    with pytest.raises(TypeError, match="takes a subclass of ImplicitMetaGradientModule"):
        enable_implicit_gradients(nn.Linear)  # type: ignore[arg-type]


def test_make_optimality_from_objective_gives_the_objectives_gradient() -> None:
    """Applied by hand to a class whose optimality was written out, it replaces it by the
    gradient of the objective: (w - prior) * 2, checked at a point where it is not zero."""

    class Both(ImplicitMetaGradientModule):
        def __init__(self, prior: torch.Tensor) -> None:
            super().__init__()
            self.prior = prior
            self.w = nn.Parameter(torch.tensor([3.0, -1.0], dtype=DT))

        def objective(self) -> torch.Tensor:
            return ((self.w - self.prior) ** 2).sum()

        def optimality(self) -> tuple[torch.Tensor, ...]:
            return (torch.zeros(2, dtype=DT),)

        def solve(self) -> None:
            pass

    prior = torch.tensor([1.0, 1.0], dtype=DT, requires_grad=True)
    assert make_optimality_from_objective(Both) is Both
    (residual,) = Both(prior).optimality()
    torch.testing.assert_close(residual, torch.tensor([4.0, -4.0], dtype=DT))
