"""Smoke tests every plugin package keeps: it installs, speaks core's plugin API, and loads."""

import importlib.metadata as md

import difopt
import difopt_template
from difopt import registry

DIST = "difopt-template"


def test_installed_version_is_the_module_version() -> None:
    assert md.version(DIST) == difopt_template.__version__


def test_plugin_api_major_version_matches_core() -> None:
    ours = difopt_template.DIFOPT_PLUGIN_API.split(".")[0]
    assert ours == registry.PLUGIN_API_VERSION.split(".")[0]


def test_every_declared_entry_point_loads() -> None:
    declared = [ep for ep in md.distribution(DIST).entry_points if ep.group in registry.GROUPS]
    for ep in declared:
        assert registry.load(ep.group, ep.name) is not None, f"{ep.group}:{ep.name}"
    assert {(p.group, p.name) for p in difopt.plugins() if p.distribution == DIST} == {
        (ep.group, ep.name) for ep in declared
    }
