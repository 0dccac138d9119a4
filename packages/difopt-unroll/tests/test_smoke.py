"""Smoke tests: the plugin installs, speaks core's plugin API, loads through the registry,
and uses only difopt's public names."""

from __future__ import annotations

import ast
import importlib.metadata as md
import pathlib

import pytest

import difopt
import difopt_unroll
from difopt import registry

DIST = "difopt-unroll"


def test_installed_version_is_the_module_version() -> None:
    assert md.version(DIST) == difopt_unroll.__version__


def test_plugin_api_major_version_matches_core() -> None:
    ours = difopt_unroll.DIFOPT_PLUGIN_API.split(".")[0]
    assert ours == registry.PLUGIN_API_VERSION.split(".")[0]


def test_every_declared_entry_point_loads() -> None:
    declared = [ep for ep in md.distribution(DIST).entry_points if ep.group in registry.GROUPS]
    assert {(ep.group, ep.name) for ep in declared} == {("difopt.diff", "unroll")}
    for ep in declared:
        assert registry.load(ep.group, ep.name) is difopt_unroll
    assert {(p.group, p.name) for p in difopt.plugins() if p.distribution == DIST} == {
        (ep.group, ep.name) for ep in declared
    }


CONSTANTS = {
    "DIFOPT_PLUGIN_API": "1.0",
    "MODES": ("exact", "first_order", "truncated"),
    "POLICY_NAMES": ("binomial", "none", "sqrt"),
}


@pytest.mark.parametrize("name", difopt_unroll.__all__)
def test_every_public_name_resolves(name: str) -> None:
    """Each public name is one of the documented constants, or a class or function defined
    in this package (not a re-export of something else), with a docstring."""
    obj = getattr(difopt_unroll, name)
    if name == "__version__":
        assert obj == md.version(DIST)
    elif name in CONSTANTS:
        assert obj == CONSTANTS[name]
    else:
        assert callable(obj)
        assert obj.__module__.startswith("difopt_unroll."), obj.__module__
        assert obj.__doc__ and obj.__doc__.strip()


def test_public_names_are_the_documented_ones() -> None:
    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    for name in ("unroll", "unroll_module", "transformation_step", "inner_grad", "Every"):
        assert name in difopt_unroll.__all__ and f"{name}(" in readme


def test_core_path_resolves_to_the_plugin() -> None:
    import difopt.diff.unroll

    assert difopt.diff.unroll.unroll is difopt_unroll.unroll
    assert difopt.diff.unroll.unroll_module is difopt_unroll.unroll_module


def test_docstring_examples_run() -> None:
    import doctest

    for module in (difopt_unroll.api, difopt_unroll.policies):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0


def _private_difopt_uses(tree: ast.AST) -> list[str]:
    found = []
    aliases = {"difopt"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "difopt":
                    found += [a.name] if any(p.startswith("_") for p in a.name.split(".")) else []
                    aliases.add((a.asname or a.name).split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] == "difopt":
                parts = [*node.module.split("."), *(a.name for a in node.names)]
                found += [node.module] if any(p.startswith("_") for p in parts) else []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in aliases and not node.attr.startswith("__"):
                found.append(node.attr)
    return found


def test_only_public_difopt_names_are_used() -> None:
    """Plugins import only public difopt names (DESIGN.md): no difopt._module, no _attr."""
    src = pathlib.Path(difopt_unroll.__file__).parent
    files = sorted(src.glob("*.py"))
    assert files
    for path in files:
        assert _private_difopt_uses(ast.parse(path.read_text())) == [], path.name
    # The checker itself catches what it must.
    assert _private_difopt_uses(ast.parse("from difopt import _leafwise")) != []
    assert _private_difopt_uses(ast.parse("import difopt\ndifopt.optim._plan")) != []
