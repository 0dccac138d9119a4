"""Helpers of the difopt-distributed tests: real worker processes on 127.0.0.1.

Every process started here is reaped: :func:`reap` waits with a deadline, then kills. The
worker script also exits by itself when its parent dies (:mod:`rpc_worker`), so an aborted
test run leaves no orphan.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
WORKER = HERE / "rpc_worker.py"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def world_env(rank: int, world_size: int, port: int, **extra: str | None) -> dict[str, str]:
    """The environment torchrun would give ``rank`` (one node), plus ``extra`` (a None value
    removes the variable)."""
    env = dict(os.environ)
    env.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH", "")])),
        PYTHONWARNINGS="ignore",
    )
    for name, value in extra.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def spawn(
    script: Path, rank: int, world_size: int, port: int, *args: str, **extra: str | None
) -> subprocess.Popen[str]:
    """Start ``python script args...`` as ``rank`` of a world, capturing its output."""
    return subprocess.Popen(
        [PYTHON, str(script), *args],
        env=world_env(rank, world_size, port, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def reap(procs: list[subprocess.Popen[str]], timeout: float) -> list[tuple[int, str, bool]]:
    """Wait for every process until ``timeout`` seconds in all, then kill the rest.

    Returns:
        ``(returncode, output, killed)`` per process.
    """
    deadline = time.monotonic() + timeout
    out: list[tuple[int, str, bool]] = []
    for p in procs:
        killed = False
        try:
            text, _ = p.communicate(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            killed = True
            try:  # a launcher (torchrun) started in its own session takes its children along
                if os.getpgid(p.pid) == p.pid:
                    os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.kill()
            text, _ = p.communicate()
        out.append((p.returncode, text or "", killed))
    return out


def alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
