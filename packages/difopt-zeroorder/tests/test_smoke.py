"""Smoke tests: the plugin installs, speaks core's plugin API, and backs TorchOpt's paths."""

import importlib.metadata as md

import pytest
import torch

import difopt
import difopt_zeroorder
from difopt import registry

DIST = "difopt-zeroorder"


def test_installed_version_is_the_module_version() -> None:
    assert md.version(DIST) == difopt_zeroorder.__version__


def test_plugin_api_major_version_matches_core() -> None:
    ours = difopt_zeroorder.DIFOPT_PLUGIN_API.split(".")[0]
    assert ours == registry.PLUGIN_API_VERSION.split(".")[0]


def test_every_declared_entry_point_loads() -> None:
    declared = [ep for ep in md.distribution(DIST).entry_points if ep.group in registry.GROUPS]
    assert {(ep.group, ep.name) for ep in declared} == {("difopt.diff", "zero_order")}
    for ep in declared:
        assert registry.load(ep.group, ep.name) is difopt_zeroorder
    assert {(p.group, p.name) for p in difopt.plugins() if p.distribution == DIST} == {
        (ep.group, ep.name) for ep in declared
    }


@pytest.mark.parametrize("name", difopt_zeroorder.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(difopt_zeroorder, name) is not None


def test_torchopt_paths_resolve_to_the_plugin() -> None:
    assert difopt.diff.zero_order.zero_order is difopt_zeroorder.zero_order
    assert (
        difopt.diff.zero_order.ZeroOrderGradientModule is difopt_zeroorder.ZeroOrderGradientModule
    )
    assert difopt.diff.ZeroOrderGradientModule is difopt_zeroorder.ZeroOrderGradientModule
    assert difopt.nn.ZeroOrderGradientModule is difopt_zeroorder.ZeroOrderGradientModule


def test_the_module_itself_is_the_decorator_factory() -> None:
    """TorchOpt's README spelling: ``@torchopt.diff.zero_order(distribution, method)``."""
    dist = torch.distributions.Normal(0.0, 1.0)

    @difopt.diff.zero_order(dist, "antithetic", num_samples=8, sigma=0.1, generator=0)
    def f(x: torch.Tensor) -> torch.Tensor:
        return (x**2).sum()

    x = torch.ones(3, requires_grad=True)
    (grad,) = torch.autograd.grad(f(x), x)
    assert grad.shape == x.shape and torch.isfinite(grad).all()


def test_docstring_examples_run() -> None:
    import doctest

    import difopt_zeroorder.decorator

    result = doctest.testmod(difopt_zeroorder.decorator, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_disabled_plugin_error_names_the_package() -> None:
    """With the plugin disabled, core's paths raise an error that says what to install."""
    import os
    import subprocess
    import sys

    code = (
        "import difopt\n"
        "try:\n"
        "    difopt.diff.zero_order.zero_order\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    env = {**os.environ, "DIFOPT_DISABLE_PLUGINS": DIST}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "PluginNotInstalledError" in out and "pip install difopt-zeroorder" in out
