"""The plugin registry: third-party optimizers, broken plugins, lazy TorchOpt paths."""

from __future__ import annotations

import subprocess
import warnings

import pytest
import torch

import difopt
from core_testing import run_python
from difopt import registry

FIXTURES = {p.distribution for p in registry.plugins()}
needs_fixtures = pytest.mark.skipif(
    not {"difopt-fixture-signsgd", "difopt-fixture-broken", "difopt-fixture-future"} <= FIXTURES,
    reason="fixture plugins from tests/fixtures are not installed (the nox session installs them)",
)


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_python("-c", code, env=env, check=False)


def test_core_optimizers_are_registered_through_the_entry_point_group():
    builtins = {
        p.name
        for p in registry.plugins()
        if p.group == "difopt.optimizers" and p.distribution == "difopt-core"
    }
    assert builtins == {
        "sgd",
        "adam",
        "adamw",
        "adamax",
        "radam",
        "adadelta",
        "adagrad",
        "rmsprop",
        "nadam",
        "lion",
        "adan",
        "muon",
        "adafactor",
        "rprop",
        "asgd",
    }
    assert registry.load("difopt.optimizers", "adam") is difopt.adam


def test_alternative_spellings_are_the_same_objects():
    assert difopt.RMSprop is difopt.RMSProp is difopt.optim.RMSprop
    assert difopt.AdaGrad is difopt.Adagrad and difopt.AdaMax is difopt.Adamax
    assert difopt.AdaDelta is difopt.Adadelta
    assert difopt.MetaRMSprop is difopt.MetaRMSProp and difopt.MetaAdaGrad is difopt.MetaAdagrad
    # Any capitalisation resolves through the registry to the same generated class.
    assert difopt.Nadam is difopt.NAdam and difopt.MetaNadam is difopt.MetaNAdam


@needs_fixtures
def test_third_party_optimizer_gets_three_forms():
    fn = difopt.signsgd
    cls = difopt.SignSGD
    assert difopt.Signsgd is cls and difopt.optim.SignSGD is cls
    meta_cls = difopt.MetaSignSGD
    assert difopt.optim.meta.MetaSignSGD is meta_cls
    # classic: p -= lr * sign(g)
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = cls([w], lr=0.5)
    (w * torch.tensor([2.0, -1.0, 0.0])).sum().backward()
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([0.5, -1.5, 3.0]))
    # functional
    impl = fn(lr=0.1)
    upd, _ = impl.update([torch.tensor([-3.0])], impl.init([torch.zeros(1)]))
    torch.testing.assert_close(upd[0], torch.tensor([0.1]))
    # meta: differentiable step on a module
    net = torch.nn.Linear(2, 1)
    meta = meta_cls(net, lr=0.1)
    meta.step(net(torch.ones(1, 2)).sum())
    assert net.weight.grad_fn is not None
    import inspect

    assert list(inspect.signature(cls).parameters) == ["params", "lr", "maximize"]
    assert "signSGD" in cls.__doc__


@needs_fixtures
def test_broken_plugin_does_not_break_import_and_warns_once():
    code = (
        "import warnings\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    import difopt\n"
        "assert not w, [str(x.message) for x in w]\n"
        "from difopt.registry import PluginLoadError\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    for _ in range(2):\n"
        "        try:\n"
        "            difopt.brokenopt\n"
        "        except PluginLoadError as e:\n"
        "            assert isinstance(e.__cause__, ImportError), e.__cause__\n"
        "            assert 'difopt-fixture-broken' in str(e)\n"
        "        else:\n"
        "            raise SystemExit('no error')\n"
        "msgs = [str(x.message) for x in w]\n"
        "assert len(msgs) == 1 and 'difopt-fixture-broken' in msgs[0], msgs\n"
        "assert difopt.adam() is not None\n"
        "print('ok')\n"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@needs_fixtures
def test_incompatible_plugin_api_is_refused():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        with pytest.raises(registry.PluginLoadError, match="plugin API"):
            difopt.futureopt
    info = {p.name: p for p in registry.plugins()}["futureopt"]
    assert info.status == "incompatible"
    assert any("difopt-fixture-future" in str(x.message) for x in w)


@needs_fixtures
def test_strict_mode_fails_at_import_without_warning():
    code = (
        "import warnings\n"
        "warnings.simplefilter('error')\n"
        "try:\n"
        "    import difopt\n"
        "except ImportError as e:\n"
        "    print(type(e).__name__, 'difopt-fixture-broken' in str(e))\n"
    )
    out = _run(code, DIFOPT_STRICT_PLUGINS="1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["PluginLoadError", "True"]
    # With the broken plugins denied, strict mode loads the rest and imports fine.
    ok = _run(
        "import difopt; print(sorted(p.status for p in difopt.plugins()"
        " if p.distribution == 'difopt-fixture-signsgd'))",
        DIFOPT_STRICT_PLUGINS="1",
        DIFOPT_DISABLE_PLUGINS="difopt-fixture-broken,difopt-fixture-future",
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "['loaded']"


@needs_fixtures
def test_deny_list_environment_variable():
    code = (
        "import difopt\n"
        "try:\n"
        "    difopt.signsgd\n"
        "except AttributeError:\n"
        "    print('hidden')\n"
        "print(difopt.Adam.__name__)\n"
        "print({p.name: p.status for p in difopt.plugins()}['signsgd'])\n"
    )
    out = _run(code, DIFOPT_DISABLE_PLUGINS="difopt-fixture-signsgd, other")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["hidden", "Adam", "disabled"]


@needs_fixtures
def test_import_reads_metadata_only():
    code = (
        "import sys, difopt\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('difopt_') or m == 'graphviz')\n"
        "print(loaded)\n"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_python_m_difopt_info_lists_plugins():
    out = run_python("-m", "difopt", "info")
    assert f"difopt-core {difopt.__version__}" in out.stdout
    assert "difopt.optimizers:adam" in out.stdout
    if "difopt-fixture-broken" in FIXTURES:
        out = run_python("-m", "difopt", "info", "--load")
        assert "[failed]" in out.stdout and "[incompatible]" in out.stdout


LAZY = [
    ("difopt.linear_solve", "solve_cg", "difopt-implicit", "implicit"),
    ("difopt.linalg", "cg", "difopt-implicit", "implicit"),
    ("difopt.diff.implicit", "custom_root", "difopt-implicit", "implicit"),
    ("difopt.nn", "ImplicitMetaGradientModule", "difopt-implicit", "implicit"),
    ("difopt.diff.zero_order", "zero_order", "difopt-zeroorder", "zero_order"),
    ("difopt.nn", "ZeroOrderGradientModule", "difopt-zeroorder", "zero_order"),
    ("difopt.visual", "make_dot", "difopt-visual", "visual"),
    ("difopt.distributed", "auto_init_rpc", "difopt-distributed", "distributed"),
]


@pytest.mark.parametrize("module,attr,package,entry", LAZY, ids=[f"{m}.{a}" for m, a, *_ in LAZY])
def test_missing_plugin_paths_name_the_package(module, attr, package, entry):
    if entry in registry.names("difopt.diff") + registry.names("difopt.visual") + registry.names(
        "difopt.distributed"
    ):
        pytest.skip(f"{package} is installed here")
    import importlib

    mod = importlib.import_module(module)
    with pytest.raises(registry.PluginNotInstalledError, match=f"pip install {package}"):
        getattr(mod, attr)
    with pytest.raises(ImportError, match=package):
        exec(f"from {module} import {attr}", {})


def test_zero_order_module_is_callable_and_names_its_package():
    if "zero_order" in registry.names("difopt.diff"):
        pytest.skip("difopt-zeroorder is installed here")
    with pytest.raises(registry.PluginNotInstalledError, match="difopt-zeroorder"):
        difopt.diff.zero_order(lambda shape: torch.zeros(shape), method="naive")


def test_use_accelerated_op_without_provider_warns_once_and_matches_pure():
    if registry.op_provider("adam") is not None:
        pytest.skip("a fused op provider is installed here")
    registry._warned.discard("accelerated-op-missing")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        fused = difopt.adam(1e-2, use_accelerated_op=True)
        difopt.adamw(1e-2, use_accelerated_op=True)
    assert len([x for x in w if "difopt-accel" in str(x.message)]) == 1
    assert difopt.accelerated_op_available() is False
    params = [torch.randn(3, dtype=torch.float64)]
    grads = [torch.randn(3, dtype=torch.float64)]
    pure = difopt.adam(1e-2)
    u1, _ = fused.update(grads, fused.init(params), params=params, inplace=False)
    u2, _ = pure.update(grads, pure.init(params), params=params, inplace=False)
    torch.testing.assert_close(u1, u2, rtol=0, atol=0)
