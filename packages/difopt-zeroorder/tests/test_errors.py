"""Bad input: each error names the argument and the accepted values."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from difopt_zeroorder import ZeroOrderGradientModule, zero_order

NORMAL = torch.distributions.Normal(0.0, 1.0)


def square(x: torch.Tensor) -> torch.Tensor:
    return (x**2).sum()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"method": "central"},
            ValueError,
            r"'method': 'central' \(expected one of 'naive', 'forward', 'antithetic'\)",
        ),
        ({"method": None}, ValueError, r"'method'"),
        ({"sigma": 0.0}, ValueError, r"'sigma': 0.0 \(expected a finite float > 0\)"),
        ({"sigma": -1.0}, ValueError, r"'sigma'"),
        ({"sigma": float("nan")}, ValueError, r"'sigma'"),
        ({"sigma": float("inf")}, ValueError, r"'sigma'"),
        ({"sigma": True}, ValueError, r"'sigma'"),
        ({"num_samples": 0}, ValueError, r"'num_samples': 0 \(expected an int >= 1\)"),
        ({"num_samples": -3}, ValueError, r"'num_samples'"),
        ({"num_samples": 2.5}, ValueError, r"'num_samples'"),
        ({"num_samples": True}, ValueError, r"'num_samples'"),
        ({"argnums": ()}, ValueError, r"'argnums'"),
        ({"argnums": (0, 0)}, ValueError, r"'argnums'"),
        ({"argnums": "0"}, ValueError, r"'argnums'"),
        ({"chunk_size": 4}, ValueError, r"'chunk_size' applies to vectorized evaluation only"),
        ({"chunk_size": 0, "vectorize": True}, ValueError, r"'chunk_size'"),
        ({"vectorize": 1}, TypeError, r"'vectorize' must be a bool"),
        (
            {"generator": "seed"},
            TypeError,
            r"'generator' must be None, an int seed or a torch.Generator",
        ),
        ({"generator": -1}, ValueError, r"'generator' seed"),
        ({"distribution": 3.0}, TypeError, r"'distribution' must be"),
    ],
)
def test_bad_decorator_arguments(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    kwargs = {"distribution": NORMAL, **kwargs}
    with pytest.raises(error, match=match):
        zero_order(**kwargs)


def test_a_non_scalar_output_is_rejected_at_the_call() -> None:
    f = zero_order(NORMAL)(lambda x: x * 2)
    with pytest.raises(ValueError, match=r"must return a scalar \(0-dim\) tensor.*shape \(3,\)"):
        f(torch.ones(3, requires_grad=True))


@pytest.mark.parametrize(
    ("output", "match"),
    [(1.0, "returned float"), (torch.tensor(1), "floating-point tensor.*torch.int64")],
)
def test_a_non_tensor_or_integer_output_is_rejected(output: Any, match: str) -> None:
    f = zero_order(NORMAL)(lambda x: output)
    with pytest.raises(TypeError, match=match):
        f(torch.ones(3, requires_grad=True))


def test_a_non_scalar_output_at_a_perturbed_point_is_rejected() -> None:
    def sometimes_vector(x: torch.Tensor) -> torch.Tensor:
        return x.sum() if x.sum() == 3.0 else x

    out = zero_order(NORMAL, num_samples=2)(sometimes_vector)(torch.ones(3, requires_grad=True))
    with pytest.raises(ValueError, match="at perturbed sample 0 it returned shape"):
        out.backward()


@pytest.mark.parametrize(
    "distribution",
    [
        torch.distributions.Normal(torch.zeros(3), 1.0),  # batch_shape (3,)
        lambda shape: torch.randn(3),  # ignores sample_shape
        lambda shape: torch.randn(shape[1:]),  # one sample instead of a batch
    ],
    ids=["batched-distribution", "fixed-shape", "no-sample-dim"],
)
def test_samples_that_do_not_match_the_parameter_shapes(distribution: Any) -> None:
    out = zero_order(distribution, num_samples=4)(square)(torch.ones(3, requires_grad=True))
    with pytest.raises(
        ValueError, match=r"'distribution' returned samples of shape .* for sample_shape=\(4, 3\)"
    ):
        out.backward()


def test_non_numeric_samples_are_rejected() -> None:
    out = zero_order(lambda shape: "noise")(square)(torch.ones(3, requires_grad=True))
    with pytest.raises(TypeError, match="'distribution' must return a tensor"):
        out.backward()


def test_argnums_out_of_range_or_not_tensors() -> None:
    with pytest.raises(ValueError, match=r"'argnums': \(1,\) refers to argument 1"):
        zero_order(NORMAL, argnums=1)(square)(torch.ones(2))
    with pytest.raises(TypeError, match="argument 0 .* floating-point tensor.*float"):
        zero_order(NORMAL)(lambda x: torch.tensor(x))(2.0)
    with pytest.raises(TypeError, match="argument 0 .*torch.int64"):
        zero_order(NORMAL)(lambda x: x.sum().float())(torch.ones(2, dtype=torch.long))
    with pytest.raises(ValueError, match="contain no tensor"):
        zero_order(NORMAL)(lambda x: torch.tensor(1.0))(())
    with pytest.raises(ValueError, match="names an argument twice"):
        zero_order(NORMAL, argnums=(0, -2))(lambda x, y: x.sum())(torch.ones(1), torch.ones(1))


def test_decorating_a_non_callable() -> None:
    with pytest.raises(TypeError, match="decorates a callable"):
        zero_order(NORMAL)(3)  # type: ignore[arg-type]


def test_a_function_that_cannot_be_vmapped_names_the_fix() -> None:
    def uses_item(x: torch.Tensor) -> torch.Tensor:
        return x.sum() * float(x.sum().item() > 0)

    out = zero_order(NORMAL, vectorize=True, num_samples=2)(uses_item)(
        torch.ones(2, requires_grad=True)
    )
    with pytest.raises(RuntimeError, match="use vectorize=False"):
        out.backward()


@pytest.mark.parametrize(
    ("keywords", "error", "match"),
    [
        ({"method": "central"}, ValueError, "'method'"),
        ({"sigma": 0.0}, ValueError, "'sigma'"),
        ({"num_samples": 0}, ValueError, "'num_samples'"),
        ({"chunk_size": 2}, ValueError, "'chunk_size'"),
    ],
)
def test_bad_class_keywords_fail_at_class_creation(
    keywords: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):

        class Bad(ZeroOrderGradientModule, **keywords):  # type: ignore[call-arg]
            def forward(self) -> torch.Tensor:
                return torch.tensor(0.0)


def test_a_module_without_trainable_parameters() -> None:
    class Empty(ZeroOrderGradientModule):
        def forward(self) -> torch.Tensor:
            return torch.tensor(0.0)

        def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
            return torch.randn(sample_shape)

    # TorchOpt's sentence first, then what to do about it.
    with pytest.raises(RuntimeError, match="The module has no parameters. Empty has no parameter"):
        Empty()()


def test_a_module_without_sample() -> None:
    class NoSample(ZeroOrderGradientModule):
        def __init__(self) -> None:
            super().__init__()
            self.p = nn.Parameter(torch.ones(2))

        def forward(self) -> torch.Tensor:
            return self.p.sum()

    # Abstract, as in TorchOpt: the class cannot be instantiated without sample().
    with pytest.raises(TypeError, match="Can't instantiate abstract class NoSample.*sample"):
        NoSample()


def test_manual_seed_rejects_bad_seeds() -> None:
    class One(ZeroOrderGradientModule):
        def __init__(self) -> None:
            super().__init__()
            self.p = nn.Parameter(torch.ones(1))

        def forward(self) -> torch.Tensor:
            return self.p.sum()

        def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
            return torch.randn(sample_shape)

    with pytest.raises(TypeError, match="'seed'"):
        One().manual_seed(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'generator' must be"):
        One().manual_seed(1.5)  # type: ignore[arg-type]
