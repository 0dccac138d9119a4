"""Smoke tests every plugin package keeps: it installs, speaks core's plugin API, and loads."""

import importlib.metadata as md

import pytest

import difopt
import difopt_implicit
from difopt import registry

DIST = "difopt-implicit"


def test_installed_version_is_the_module_version() -> None:
    assert md.version(DIST) == difopt_implicit.__version__


def test_plugin_api_major_version_matches_core() -> None:
    ours = difopt_implicit.DIFOPT_PLUGIN_API.split(".")[0]
    assert ours == registry.PLUGIN_API_VERSION.split(".")[0]


def test_every_declared_entry_point_loads() -> None:
    declared = [ep for ep in md.distribution(DIST).entry_points if ep.group in registry.GROUPS]
    assert {(ep.group, ep.name) for ep in declared} == {("difopt.diff", "implicit")}
    for ep in declared:
        assert registry.load(ep.group, ep.name) is difopt_implicit
    assert {(p.group, p.name) for p in difopt.plugins() if p.distribution == DIST} == {
        (ep.group, ep.name) for ep in declared
    }


@pytest.mark.parametrize(
    "module",
    [difopt_implicit, difopt_implicit.linalg, difopt_implicit.linear_solve, difopt_implicit.nn],
    ids=lambda m: m.__name__,
)
def test_every_name_in_all_resolves(module: object) -> None:
    for name in module.__all__:  # type: ignore[attr-defined]
        assert getattr(module, name) is not None, name


# TorchOpt 0.7.3's public names on the paths core resolves through this plugin.
TORCHOPT_PATHS = {
    "diff.implicit": ["custom_root", "ImplicitMetaGradientModule"],
    "linear_solve": ["solve_cg", "solve_normal_cg", "solve_inv"],
    "linalg": ["cg", "ns", "ns_inv"],
    "nn": ["ImplicitMetaGradientModule"],
    "diff": ["ImplicitMetaGradientModule"],
}


@pytest.mark.parametrize("path", sorted(TORCHOPT_PATHS))
def test_torchopt_paths_resolve_to_the_plugin(path: str) -> None:
    module = difopt
    for part in path.split("."):
        module = getattr(module, part)
    for name in TORCHOPT_PATHS[path]:
        value = getattr(module, name)
        assert value.__module__.startswith("difopt_implicit"), (path, name)


def test_beyond_torchopt_names_resolve_through_core() -> None:
    assert difopt.linear_solve.solve_gmres is difopt_implicit.linear_solve.solve_gmres
    assert difopt.linear_solve.solve_bicgstab is difopt_implicit.linear_solve.solve_bicgstab
    assert difopt.linalg.gmres is difopt_implicit.linalg.gmres
    assert difopt.diff.implicit.nn.ImplicitMetaGradientModule is (
        difopt_implicit.ImplicitMetaGradientModule
    )


def test_import_difopt_does_not_import_the_plugin() -> None:
    """Core discovers the plugin from metadata; the module loads on first use only."""
    import subprocess
    import sys

    code = "import sys, difopt; assert 'difopt_implicit' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
