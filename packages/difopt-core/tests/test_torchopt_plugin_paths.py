"""TorchOpt module paths that core holds for plugins: ``torchopt.diff.implicit.nn.module``,
``torchopt.diff.zero_order.nn.module`` and the torch modules ``torchopt.distributed`` exposes
outside its ``__all__`` (``rpc``, ``dist``)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
import torch

from difopt import registry

MODULE_PATHS = [
    (
        "difopt.diff.implicit.nn.module",
        [
            "ImplicitMetaGradientModule",
            "enable_implicit_gradients",
            "make_optimality_from_objective",
        ],
        "implicit",
        "difopt-implicit",
    ),
    (
        "difopt.diff.zero_order.nn.module",
        ["ZeroOrderGradientModule", "enable_zero_order_gradients"],
        "zero_order",
        "difopt-zeroorder",
    ),
]


@pytest.mark.parametrize(
    ("path", "names", "entry", "package"), MODULE_PATHS, ids=[p[0] for p in MODULE_PATHS]
)
def test_nn_module_paths(path: str, names: list[str], entry: str, package: str) -> None:
    module = importlib.import_module(path)
    parent = importlib.import_module(path.rsplit(".", 1)[0])
    assert parent.module is module
    assert module.__all__ == names
    installed = entry in registry.names("difopt.diff")
    for name in names:
        if installed:
            assert getattr(module, name) is getattr(parent, name, getattr(module, name))
        else:
            with pytest.raises(registry.PluginNotInstalledError, match=package):
                getattr(module, name)


def test_nn_module_paths_import_no_plugin() -> None:
    code = (
        "import sys\n"
        "from difopt.diff.implicit.nn import module\n"
        "import difopt.diff.zero_order.nn.module\n"
        "assert not [m for m in sys.modules if m.startswith('difopt_')], sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_distributed_rpc_and_dist_are_torchs_modules_without_the_plugin() -> None:
    import difopt.distributed as todist

    assert todist.rpc is torch.distributed.rpc
    assert todist.dist is torch.distributed
    assert "rpc" not in todist.__all__ and "dist" not in todist.__all__  # as in TorchOpt
