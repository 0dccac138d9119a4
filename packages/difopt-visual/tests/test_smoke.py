"""Smoke tests every plugin package keeps: it installs, speaks core's plugin API, and loads."""

import importlib.metadata as md
import subprocess
import sys

import difopt
import difopt_visual
from difopt import registry

DIST = "difopt-visual"


def test_installed_version_is_the_module_version() -> None:
    assert md.version(DIST) == difopt_visual.__version__


def test_plugin_api_major_version_matches_core() -> None:
    ours = difopt_visual.DIFOPT_PLUGIN_API.split(".")[0]
    assert ours == registry.PLUGIN_API_VERSION.split(".")[0]


def test_every_declared_entry_point_loads() -> None:
    declared = [ep for ep in md.distribution(DIST).entry_points if ep.group in registry.GROUPS]
    assert {(ep.group, ep.name) for ep in declared} == {("difopt.visual", "visual")}
    for ep in declared:
        assert registry.load(ep.group, ep.name) is not None, f"{ep.group}:{ep.name}"
    assert {(p.group, p.name) for p in difopt.plugins() if p.distribution == DIST} == {
        (ep.group, ep.name) for ep in declared
    }


def test_difopt_visual_resolves_to_this_plugin() -> None:
    assert difopt.visual.make_dot is difopt_visual.make_dot
    assert difopt.visual.resize_graph is difopt_visual.resize_graph
    assert difopt.visual.summary is difopt_visual.summary


def test_every_public_name_resolves() -> None:
    for name in difopt_visual.__all__:
        assert getattr(difopt_visual, name) is not None, name


def test_import_difopt_does_not_import_graphviz() -> None:
    code = "import sys, difopt; print('graphviz' in sys.modules, 'difopt_visual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
