"""The example runs under torchrun: two processes, a few iterations, speed-up printed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import HERE, free_port, reap

EXAMPLE = HERE.parents[2] / "examples" / "distributed_maml.py"


@pytest.mark.skipif(not EXAMPLE.exists(), reason="examples/ is not next to this checkout")
@pytest.mark.parametrize("backward", ["eager", "distributed"])
def test_distributed_maml_example_under_torchrun(backward: str) -> None:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc-per-node=2",
        "--master-addr=127.0.0.1",
        f"--master-port={free_port()}",
        str(EXAMPLE),
        *("--meta-iters", "2", "--timing-iters", "1", "--hidden", "8", "--k-shot", "4"),
        *("--backward", backward),
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    [(rc, out, killed)] = reap([proc], timeout=120)
    assert not killed and rc == 0, out
    assert "8 tasks per meta-batch over 2 worker(s)" in out
    assert f"backward={backward!r}" in out
    assert "iter    2  query loss" in out
    assert "2 worker(s)" in out and "-> speed-up" in out
