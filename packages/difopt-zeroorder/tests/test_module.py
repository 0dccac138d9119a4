"""ZeroOrderGradientModule: class keywords, parameters, seeding, agreement with the decorator."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import difopt
from difopt_zeroorder import METHODS, ZeroOrderGradientModule, zero_order


def make_quadratic(method: str, vectorize: bool) -> type[ZeroOrderGradientModule]:
    class Quadratic(
        ZeroOrderGradientModule,
        method=method,
        num_samples=12,
        sigma=0.3,
        vectorize=vectorize,
    ):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.tensor([[1.0, -1.0], [0.5, 2.0]]))
            self.b = nn.Parameter(torch.tensor([0.1, 0.2]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return ((x @ self.w + self.b) ** 2).sum()

        def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
            return torch.randn(sample_shape)

    return Quadratic


@pytest.mark.parametrize("vectorize", [False, True], ids=["loop", "vmap"])
@pytest.mark.parametrize("method", METHODS)
def test_module_and_decorator_give_identical_estimates(method: str, vectorize: bool) -> None:
    module = make_quadratic(method, vectorize)().manual_seed(42)
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.5]])
    module(x).backward()

    def f(params: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return ((x @ params[0] + params[1]) ** 2).sum()

    params = tuple(p.detach().clone().requires_grad_() for p in (module.w, module.b))
    wrapped = zero_order(
        module.sample, method, num_samples=12, sigma=0.3, generator=42, vectorize=vectorize
    )(f)
    grads = torch.autograd.grad(wrapped(params, x), params)
    assert torch.equal(module.w.grad, grads[0])
    assert torch.equal(module.b.grad, grads[1])


def test_torchopt_paths_give_the_same_class() -> None:
    assert difopt.nn.ZeroOrderGradientModule is ZeroOrderGradientModule

    class Tiny(difopt.nn.ZeroOrderGradientModule, method="antithetic", num_samples=2):
        def __init__(self) -> None:
            super().__init__()
            self.p = nn.Parameter(torch.ones(2))

        def forward(self) -> torch.Tensor:
            return self.p.sum()

        def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
            return torch.randn(sample_shape)

    tiny = Tiny()
    tiny().backward()
    assert tiny.p.grad is not None and tiny.p.grad.shape == (2,)


def test_the_value_and_the_parameters_are_untouched() -> None:
    module = make_quadratic("forward", False)().manual_seed(0)
    x = torch.randn(3, 2)
    before = copy.deepcopy(module.state_dict())
    value = module(x)
    with torch.no_grad():
        plain = ((x @ module.w + module.b) ** 2).sum()
    torch.testing.assert_close(value, plain)
    value.backward()
    for name, tensor in module.state_dict().items():
        assert torch.equal(tensor, before[name])
    assert isinstance(module.w, nn.Parameter)


def test_frozen_parameters_are_not_perturbed_and_tied_ones_once() -> None:
    class Tied(ZeroOrderGradientModule, method="antithetic", num_samples=64, sigma=0.1):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 3, bias=False)
            self.b = nn.Linear(3, 3, bias=False)
            self.b.weight = self.a.weight  # tied
            self.frozen = nn.Parameter(torch.ones(3), requires_grad=False)
            self.shapes: list[torch.Size] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # The frozen parameter must reach forward unperturbed.
            assert torch.equal(self.frozen, torch.ones(3))
            assert self.a.weight is self.b.weight
            return (self.b(self.a(x)) * self.frozen).pow(2).mean()

        def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
            self.shapes.append(sample_shape)
            return torch.randn(sample_shape)

    module = Tied().manual_seed(3)
    module(torch.randn(5, 3)).backward()
    assert module.shapes == [torch.Size((64, 3, 3))]  # one leaf: the tied weight
    assert module.a.weight.grad is not None and module.frozen.grad is None


def test_subclasses_inherit_class_keywords_and_forward() -> None:
    base = make_quadratic("antithetic", False)

    class Child(base, num_samples=3):  # type: ignore[misc,valid-type]
        pass

    assert Child._zero_order_options.method == "antithetic"
    assert Child._zero_order_options.num_samples == 3
    assert Child._zero_order_options.sigma == 0.3
    child = Child().manual_seed(0)
    child(torch.ones(1, 2)).backward()
    assert child.w.grad is not None


def test_an_overriding_forward_may_call_super_forward() -> None:
    base = make_quadratic("naive", True)

    class Scaled(base):  # type: ignore[misc,valid-type]
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2.0 * super().forward(x)

    x = torch.tensor([[1.0, 2.0]])
    scaled, plain = Scaled().manual_seed(1), base().manual_seed(1)
    out_scaled, out_plain = scaled(x), plain(x)
    torch.testing.assert_close(out_scaled, 2.0 * out_plain)
    out_scaled.backward()
    out_plain.backward()
    torch.testing.assert_close(scaled.w.grad, 2.0 * plain.w.grad)


def test_manual_seed_makes_estimates_reproducible() -> None:
    cls = make_quadratic("naive", False)
    x = torch.ones(1, 2)
    grads = []
    for _ in range(2):
        module = cls().manual_seed(123)
        module(x).backward()
        grads.append(module.w.grad)
    assert torch.equal(grads[0], grads[1])


def test_es_training_of_a_module_reduces_its_loss() -> None:
    module = make_quadratic("antithetic", True)().manual_seed(0)
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.3, -0.7]])
    optimizer = difopt.SGD(module.parameters(), lr=0.02)
    first = float(module(x).detach())
    for _ in range(100):
        optimizer.zero_grad()
        module(x).backward()
        optimizer.step()
    assert float(module(x).detach()) < 0.1 * first


def test_torchopt_style_module_code_runs_unchanged() -> None:
    """TorchOpt 0.7.3's usage: a distribution attribute, integer Normal parameters, Adam."""
    import difopt as torchopt

    class Net(torchopt.nn.ZeroOrderGradientModule, method="forward", sigma=0.05, num_samples=16):
        def __init__(self, dim: int) -> None:
            super().__init__()
            self.fc = nn.Linear(dim, 1)
            self.distribution = torch.distributions.Normal(loc=0, scale=1)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.mse_loss(self.fc(x), y)

        def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
            return self.distribution.sample(sample_shape)

    torch.manual_seed(0)
    x = torch.randn(64, 3)
    y = x @ torch.tensor([[1.0], [-1.0], [2.0]]) + 0.5
    net = Net(3)
    optimizer = torchopt.Adam(net.parameters(), lr=0.05)
    first = float(net(x, y).detach())
    for _ in range(100):
        loss = net(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(net(x, y).detach()) < 0.1 * first


def test_enable_zero_order_gradients_at_torchopts_module_path() -> None:
    """``torchopt.diff.zero_order.nn.module.enable_zero_order_gradients``: the class decorator
    every subclass gets; applying it twice is TorchOpt's TypeError."""
    import difopt.diff.zero_order.nn.module as torchopt_path
    from difopt_zeroorder.module import enable_zero_order_gradients

    assert torchopt_path.enable_zero_order_gradients is enable_zero_order_gradients
    assert torchopt_path.ZeroOrderGradientModule is ZeroOrderGradientModule

    class Wrapped(ZeroOrderGradientModule):
        def forward(self) -> torch.Tensor:
            return torch.tensor(0.0)

        def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
            return torch.zeros(sample_shape)

    with pytest.raises(
        TypeError,
        match="Zero-order gradient estimation is already enabled for the `forward` method.",
    ):
        enable_zero_order_gradients(Wrapped)
    with pytest.raises(TypeError, match="takes a subclass of ZeroOrderGradientModule"):
        enable_zero_order_gradients(nn.Linear)  # type: ignore[arg-type]


def test_enable_zero_order_gradients_on_an_unwrapped_forward() -> None:
    """Applied to a class whose forward was attached after class creation, it wraps it with
    the given estimator. With every noise draw equal to the all-ones vector u, the forward
    difference of f(w) = |w|^2 is (f(w + s u) - f(w)) / s * u = (2 w.u + s n) u: a closed
    form that depends on the method and on sigma given here."""
    import abc

    from difopt_zeroorder.module import enable_zero_order_gradients

    class Late(ZeroOrderGradientModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))

        def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
            return torch.ones(sample_shape, dtype=torch.float64)

    def forward(self: Late) -> torch.Tensor:
        return (self.w**2).sum()

    Late.forward = forward  # type: ignore[method-assign]
    abc.update_abstractmethods(Late)
    assert enable_zero_order_gradients(Late, method="forward", num_samples=2, sigma=0.5) is Late
    module = Late()
    value = module()
    torch.testing.assert_close(value.detach(), torch.tensor(5.25, dtype=torch.float64))
    value.backward()
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    expected = (2 * w.sum() + 0.5 * 3) * torch.ones(3, dtype=torch.float64)
    torch.testing.assert_close(module.w.grad, expected)
