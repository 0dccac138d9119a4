"""Run every single-process example end to end, as a user would, and check its verdict.

Each example checks its own result and exits with status 1 when it did not learn (MAML and
iMAML adapt better than an unadapted and a random initialisation, the zero-order policy
reaches the required accuracy, the visualisation writes its files). These tests run them in
a subprocess with the documented command line (a shorter training budget where the default
takes minutes and a shorter one still passes), so an example that stops running or stops
learning fails CI. ``nox -s examples`` installs what they need (a missing plugin fails the
example, on purpose: it is not skipped); the distributed example is tested by
difopt-distributed's own suite (it needs torchrun).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TIMEOUT_S = 600


def run_example(script: str, *args: str, tmp_path: Path) -> str:
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, str(HERE / script), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{script} exited with {proc.returncode}:\n{out[-4000:]}"
    return out


def test_maml_sinusoid(tmp_path: Path) -> None:
    out = run_example(
        "maml_sinusoid.py", "--meta-iters", "1000", "--out", str(tmp_path), tmp_path=tmp_path
    )
    assert "OK: the meta-learned initialisation adapts" in out
    assert (tmp_path / "maml_sinusoid.png").stat().st_size > 0


def test_maml_sinusoid_with_meta_adam(tmp_path: Path) -> None:
    out = run_example(
        "maml_sinusoid.py",
        *("--inner-opt", "adam", "--meta-iters", "1500", "--out", str(tmp_path)),
        tmp_path=tmp_path,
    )
    assert "OK: the meta-learned initialisation adapts" in out


def test_imaml_sinusoid(tmp_path: Path) -> None:
    out = run_example("imaml_sinusoid.py", tmp_path=tmp_path)
    assert "OK: the meta-learned initialisation adapts" in out


def test_zero_order_step_reward(tmp_path: Path) -> None:
    out = run_example("zero_order_step_reward.py", "--out", str(tmp_path), tmp_path=tmp_path)
    assert "OK: learned through a step-function reward" in out
    assert (tmp_path / "zero_order_step_reward.png").stat().st_size > 0


def test_visualize(tmp_path: Path) -> None:
    out = run_example("visualize.py", "--out", str(tmp_path), tmp_path=tmp_path)
    for name in (
        "maml_step.svg",
        "maml_step.png",
        "maml_step_collapsed.svg",
        "maml_step_collapsed.png",
    ):
        assert f"wrote {tmp_path / name}" in out
        assert (tmp_path / name).stat().st_size > 0


def test_unroll_lr_schedule_digits(tmp_path: Path) -> None:
    out = run_example(
        "unroll_lr_schedule_digits.py",
        *("--steps", "100", "--meta-iters", "5", "--out", str(tmp_path)),
        tmp_path=tmp_path,
    )
    assert "OK: the learned schedule lowers the validation loss" in out
    assert "peak memory of one meta-gradient (K=100): binomial, budget 12:" in out
    assert (tmp_path / "unroll_lr_schedule_digits.png").stat().st_size > 0


def test_deq_digits(tmp_path: Path) -> None:
    out = run_example("deq_digits.py", "--epochs", "4", "--out", str(tmp_path), tmp_path=tmp_path)
    assert "OK: the DEQ learned the digits" in out
    assert "forward iterations" in out
    assert (tmp_path / "deq_digits.png").stat().st_size > 0


def test_fewshot_digits_quick(tmp_path: Path) -> None:
    """The few-shot benchmark's smoke run (benchmarks/fewshot_digits.py, also an example):
    every method must beat the un-adapted baseline, and its meta-gradient checks pass."""
    out = run_example(
        "../benchmarks/fewshot_digits.py",
        *("--quick", "--no-progress", "--out", str(tmp_path / "fewshot_digits.json")),
        tmp_path=tmp_path,
    )
    assert "OK: every method beats the un-adapted baseline by a clear margin" in out
    assert (tmp_path / "fewshot_digits.png").stat().st_size > 0
