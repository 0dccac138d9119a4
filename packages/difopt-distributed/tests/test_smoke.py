"""Smoke tests: the plugin installs, speaks core's plugin API, and backs difopt.distributed."""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys

import pytest
import torch

import difopt
import difopt_distributed as dd
from difopt import registry
from helpers import HERE

DIST = "difopt-distributed"

# torchopt.distributed 0.7.3's public names (its __all__) plus the autograd submodule's.
TORCHOPT_NAMES = [
    "is_available",
    "get_world_info",
    "get_world_rank",
    "get_rank",
    "get_world_size",
    "get_local_rank",
    "get_local_world_size",
    "get_worker_id",
    "barrier",
    "auto_init_rpc",
    "on_rank",
    "not_on_rank",
    "rank_zero_only",
    "rank_non_zero_only",
    "TensorDimensionPartitioner",
    "dim_partitioner",
    "batch_partitioner",
    "mean_reducer",
    "sum_reducer",
    "remote_async_call",
    "remote_sync_call",
    "parallelize",
    "parallelize_async",
    "parallelize_sync",
]
TORCHOPT_AUTOGRAD_NAMES = ["is_available", "context", "backward", "grad", "get_gradients"]


def test_installed_version_is_the_module_version() -> None:
    assert md.version(DIST) == dd.__version__


def test_plugin_api_major_version_matches_core() -> None:
    assert dd.DIFOPT_PLUGIN_API.split(".")[0] == registry.PLUGIN_API_VERSION.split(".")[0]


def test_every_declared_entry_point_loads() -> None:
    declared = [ep for ep in md.distribution(DIST).entry_points if ep.group in registry.GROUPS]
    assert [(ep.group, ep.name) for ep in declared] == [("difopt.distributed", "distributed")]
    for ep in declared:
        assert registry.load(ep.group, ep.name) is dd
    assert {(p.group, p.name) for p in difopt.plugins() if p.distribution == DIST} == {
        (ep.group, ep.name) for ep in declared
    }


def test_every_name_in_all_resolves() -> None:
    for name in dd.__all__:
        assert getattr(dd, name) is not None, name


@pytest.mark.parametrize("name", TORCHOPT_NAMES)
def test_torchopt_names_resolve_through_difopt_distributed(name: str) -> None:
    assert getattr(difopt.distributed, name) is getattr(dd, name)


@pytest.mark.parametrize("name", TORCHOPT_AUTOGRAD_NAMES)
def test_torchopt_autograd_names_resolve(name: str) -> None:
    assert getattr(difopt.distributed.autograd, name) is getattr(dd.autograd, name)


def test_is_available_on_this_torch() -> None:
    assert dd.is_available() is torch.distributed.rpc.is_available()
    assert dd.autograd.is_available()


def test_partitioner_and_reducer_arguments_without_a_world() -> None:
    with pytest.raises(ValueError, match="keepdim=False needs exclusive=True"):
        dd.dim_partitioner(1, keepdim=False)
    with pytest.raises(ValueError, match="workers must name at least one worker"):
        dd.dim_partitioner(workers=[])
    with pytest.raises(TypeError, match="dim must be an int"):
        dd.TensorDimensionPartitioner(0.5)  # type: ignore[arg-type]
    part = dd.dim_partitioner(1, workers=[0, 1])
    with pytest.raises(ValueError, match="same size along dim=1: got 3 and 4"):
        part(torch.ones(2, 3), torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"dim=1 is out of range for an argument of shape \(5,\)"):
        part(torch.ones(5))
    calls = part(torch.arange(10.0).reshape(2, 5), "label", k=torch.zeros(1, 5))
    assert [(r, a[0].shape, a[1], kw["k"].shape) for r, a, kw in calls] == [
        (0, (2, 2), "label", (1, 2)),
        (1, (2, 3), "label", (1, 3)),
    ]
    assert repr(dd.batch_partitioner).startswith("TensorDimensionPartitioner(dim=0,")
    with pytest.raises(
        ValueError, match=r"mean_reducer\(\) needs at least one result, got an empty sequence"
    ):
        dd.mean_reducer([])
    with pytest.raises(ValueError, match=r"sum_reducer\(\) needs at least one result"):
        dd.sum_reducer(iter([]))
    with pytest.raises(TypeError, match=r"sum_reducer\(\) reduces tensors, got a str at leaf 0"):
        dd.sum_reducer(["a", "b"])
    with pytest.raises(TypeError, match="takes a sequence of results, got a single tensor"):
        dd.mean_reducer(torch.ones(3))
    torch.testing.assert_close(
        dd.mean_reducer([torch.ones(2), torch.zeros(2)]), torch.full((2,), 0.5)
    )


def test_world_facts_and_rank_gates_from_the_environment(monkeypatch) -> None:
    from difopt_distributed import _world

    monkeypatch.setattr(_world, "_world", None)  # as before RPC starts (a session world may run)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert dd.get_world_info().rank == 2 and dd.get_world_info().worker_name == "worker2"
    assert dd.rank_zero_only(lambda: 1)() is None
    assert dd.rank_non_zero_only(lambda: 1)() == 1
    assert dd.on_rank(1, 2)(lambda: "x")() == "x" and dd.not_on_rank(2)(lambda: "x")() is None
    with pytest.raises(ValueError, match="on_rank\\(\\) takes ranks as non-negative ints, got -1"):
        dd.on_rank(-1)
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(ValueError, match=r"RANK must be in \[0, WORLD_SIZE=3\), got 3"):
        dd.get_world_info()
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(ValueError, match="RANK must be an integer"):
        dd.get_world_rank()


NOT_INITIALIZED = """
import torch, difopt_distributed as dd, dist_tasks
checks = [
    lambda: dd.remote_sync_call(dist_tasks.sleep_then, args=(0, 1)),
    lambda: dist_tasks.parallel_default(torch.ones(2, 1)),
    lambda: dd.barrier(),
    lambda: dd.get_worker_id("worker0"),
    lambda: dd.tree_as_rref([torch.ones(1)]),
]
for check in checks:
    try:
        check()
    except dd.RpcNotInitializedError as exc:
        print("OK", str(exc).split(":")[0])
    else:
        print("NO ERROR")
dd.shutdown()  # a no-op without a world
"""


def test_calls_before_auto_init_rpc_fail_clearly() -> None:
    # A fresh interpreter: this test process runs the session world of the other modules.
    env = {"PYTHONPATH": str(HERE), "PATH": "/usr/bin:/bin", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-c", NOT_INITIALIZED],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "OK remote_sync_call() needs the RPC world, which is not initialized in this process",
        "OK remote_sync_call() needs the RPC world, which is not initialized in this process",
        "OK barrier() needs the RPC world, which is not initialized in this process",
        "OK get_worker_id() needs the RPC world, which is not initialized in this process",
        "OK tree_as_rref() needs the RPC world, which is not initialized in this process",
    ]


def test_a_world_of_one_needs_no_launcher() -> None:
    code = (
        "import difopt_distributed as dd, dist_tasks, torch\n"
        "@dd.auto_init_rpc()\n"
        "def main():\n"
        "    return dd.get_world_size(), dist_tasks.parallel_default(torch.ones(3, 2)).tolist()\n"
        "print(main())\n"
    )
    env = {"PYTHONPATH": str(HERE), "PATH": "/usr/bin:/bin", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(1, [3.0, 3.0])"


def test_rpc_transports_default_and_override(monkeypatch) -> None:
    """uv by default (TensorPipe's shm reactor spins a core); DIFOPT_RPC_TRANSPORTS overrides."""
    from difopt_distributed import _world

    monkeypatch.delenv(_world.TRANSPORTS_ENV, raising=False)
    assert _world._default_transports() == ["uv"]
    monkeypatch.setenv(_world.TRANSPORTS_ENV, " shm, uv ")
    assert _world._default_transports() == ["shm", "uv"]
    monkeypatch.setenv(_world.TRANSPORTS_ENV, " , ")
    with pytest.raises(ValueError, match="DIFOPT_RPC_TRANSPORTS"):
        _world._default_transports()
