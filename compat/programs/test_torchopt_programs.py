"""A TorchOpt program of several files runs unchanged through ``python -m difopt.compat``.

Run by nox's ``torchopt_tests`` session, where every plugin is installed: the program imports
``torchopt.diff.implicit``, ``torchopt.distributed`` and ``torchopt.visual`` by module path.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

PROJECT = pathlib.Path(__file__).resolve().parent / "torchopt_project"


def test_a_multi_file_torchopt_program_runs_unchanged():
    done = subprocess.run(
        [sys.executable, "-m", "difopt.compat", "main.py", "0.5"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "implicit True",
        "world 1 0",
        "dot True",
        "alias difopt type",
    ]
