"""Shared helpers of the difopt benchmarks (not a benchmark itself).

Rules every benchmark here follows:

* thread count set explicitly (``--threads``, default 2);
* every contender is warmed up, then the contenders are *interleaved* across repetitions
  (A B C, B C A, C A B, ...: never all of A then all of B), so slow drift of a shared,
  noisy machine hits them alike;
* the reported time is the median over repetitions; a ratio is the median of the
  per-repetition ratios (each pair measured moments apart), with the ratio of the medians
  recorded too;
* a peer that is not installed is reported as skipped, never faked;
* targets are printed with PASS/FAIL, and the process exits 0 either way: a benchmark is
  allowed to lose, it is not a test.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# What to install for each optional peer (the versions the `bench` nox session pins).
INSTALL_HINT = {
    "torchopt": "pip install torchopt==0.7.3",
    "higher": "pip install higher==0.2.1",
    "difopt_accel": "pip install difopt-accel",
}


# ----------------------------------------------------------------------------- arguments


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--threads", type=int, default=2, help="torch.set_num_threads value (default: 2)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and few repetitions: a smoke run, not a measurement",
    )
    p.add_argument(
        "--repeats", type=int, default=None, help="interleaved repetitions; the median is reported"
    )
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls per contender")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON result path (default: benchmarks/results/<name>.json)",
    )
    return p


def set_threads(n: int) -> None:
    import torch

    if n < 1:
        raise SystemExit(f"--threads must be >= 1, got {n}")
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- peers


def failure(exc: BaseException, limit: int = 160) -> str:
    """``failed (Type: first line of the message)``, shortened for a table cell."""
    msg = (str(exc).strip().splitlines() or [""])[0]
    if len(msg) > limit:
        msg = msg[: limit - 3] + "..."
    return f"failed ({type(exc).__name__}: {msg})"


def try_import(module: str) -> tuple[Any | None, str | None]:
    """``(module, None)`` when importable, else ``(None, reason)`` with an install hint."""
    if importlib.util.find_spec(module) is None:
        hint = INSTALL_HINT.get(module, f"pip install {module}")
        return None, f"skipped (not installed: {hint})"
    try:
        return importlib.import_module(module), None
    except Exception as exc:  # an installed peer that cannot load on this torch
        return None, "skipped (import " + failure(exc) + ")"


def dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(threads: int | None) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
    }
    for dist in ("torch", "optree", "difopt-core", "difopt-accel", "torchopt", "higher"):
        env[dist] = dist_version(dist)
    return env


# ----------------------------------------------------------------------------- timing


def interleaved(
    contenders: dict[str, Callable[[], Any]],
    repeats: int,
    number: int = 1,
    warmup: int = 1,
    errors: dict[str, str] | None = None,
) -> dict[str, list[float]]:
    """Time ``number`` calls of each contender per repetition, interleaved; seconds per call.

    Contenders whose warm-up raises are dropped and their error recorded in ``errors``.
    """
    live = dict(contenders)
    for name, fn in list(live.items()):
        try:
            for _ in range(warmup):
                fn()
        except Exception as exc:
            if errors is None:
                raise
            errors[name] = failure(exc)
            del live[name]
    names = list(live)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        k = r % max(len(names), 1)
        for name in names[k:] + names[:k]:  # rotate who goes first
            fn = live[name]
            gc.collect()
            gc.disable()
            try:
                t0 = time.perf_counter()
                for _ in range(number):
                    fn()
                dt = time.perf_counter() - t0
            finally:
                gc.enable()
            times[name].append(dt / number)
    return times


def summary(samples: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(samples, n=4) if len(samples) >= 2 else [samples[0]] * 3
    return {
        "median_s": statistics.median(samples),
        "p25_s": qs[0],
        "p75_s": qs[2],
        "min_s": min(samples),
    }


def ratio(times: dict[str, list[float]], num: str, den: str) -> dict[str, float] | None:
    """Median of per-repetition ratios ``num/den`` (paired), and the ratio of the medians."""
    if num not in times or den not in times:
        return None
    paired = [a / b for a, b in zip(times[num], times[den])]
    return {
        "value": statistics.median(paired),
        "ratio_of_medians": statistics.median(times[num]) / statistics.median(times[den]),
    }


def target(name: str, r: dict[str, float] | None, limit: float, why_missing: str = "") -> dict:
    if r is None:
        if why_missing.startswith("skipped (") and why_missing.endswith(")"):
            why_missing = why_missing[len("skipped (") : -1]
        return {
            "name": name,
            "limit": limit,
            "op": "<=",
            "value": None,
            "status": "SKIPPED",
            "reason": why_missing,
        }
    return {
        "name": name,
        "limit": limit,
        "op": "<=",
        "value": r["value"],
        "status": "PASS" if r["value"] <= limit else "FAIL",
    }


# ----------------------------------------------------------------------------- output


def fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if abs(s) >= 1.0:
        return f"{s:.3f} s"
    if abs(s) >= 1e-3:
        return f"{s * 1e3:.3f} ms"
    return f"{s * 1e6:.1f} us"


def table(rows: list[list[str]], header: list[str]) -> str:
    """A plain-text table; a row of two cells (label, note) is printed unpadded after its label."""
    full = [r for r in rows if len(r) == len(header)]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *full)]
    widths[0] = max([widths[0]] + [len(str(r[0])) for r in rows])
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths)).rstrip(), line]
    for row in rows:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(out)


def contender_rows(
    order: list[str],
    times: dict[str, list[float]],
    status: dict[str, str],
    baseline: str | None,
    labels: dict[str, str] | None = None,
) -> list[dict]:
    """One JSON entry per contender, in ``order``."""
    out = []
    for name in order:
        entry: dict[str, Any] = {"name": name, "label": (labels or {}).get(name, name)}
        if name in times:
            entry.update(status="ok", **summary(times[name]), samples_s=times[name])
            if baseline is not None and baseline in times and name != baseline:
                entry["vs_" + baseline] = ratio(times, name, baseline)
        else:
            entry.update(status=status.get(name, "skipped"))
        out.append(entry)
    return out


def print_contenders(entries: list[dict], baseline: str | None, unit: str) -> None:
    labels = {e["name"]: e["label"] for e in entries}
    header = [
        "contender",
        f"median {unit}",
        "p25..p75",
        f"time / {labels.get(baseline, baseline)}" if baseline else "ratio",
    ]
    rows = []
    for e in entries:
        if e["status"] != "ok":
            rows.append([e["label"], e["status"]])
            continue
        r = e.get("vs_" + baseline) if baseline else None
        rr = "1.00 (baseline)" if e["name"] == baseline else (f"{r['value']:.2f}" if r else "-")
        rows.append(
            [
                e["label"],
                fmt_time(e["median_s"]),
                f"{fmt_time(e['p25_s'])} .. {fmt_time(e['p75_s'])}",
                rr,
            ]
        )
    print(table(rows, header))


def print_targets(targets: list[dict]) -> None:
    print()
    print("Targets (ratio = median of per-repetition ratios):")
    for t in targets:
        if t["status"] == "SKIPPED":
            print(f"  {t['name']} <= {t['limit']:g}: SKIPPED ({t['reason']})")
        else:
            print(f"  {t['name']} = {t['value']:.3f}  (target <= {t['limit']:g}): {t['status']}")


def write_json(name: str, payload: dict, out: Path | None) -> Path:
    path = out or RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "name": name,
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv[1:],
        **payload,
    }
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"\nwrote {path}")
    return path


def quick_note(quick: bool) -> None:
    if quick:
        print("NOTE: --quick smoke run (tiny sizes): the numbers below are not a measurement.\n")
