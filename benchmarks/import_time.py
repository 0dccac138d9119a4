"""Import cost of difopt: ``python -c 'import difopt'`` minus ``python -c 'import torch'``.

Each import runs in a fresh interpreter (this one's ``sys.executable``), the commands
interleaved across repetitions; the added time is the difference of the medians. Also checks,
in a subprocess, that ``import difopt`` loads no plugin module (``difopt_*``) and no
``graphviz`` (plugins are discovered from metadata and loaded on first use), and, with
``python -X importtime``, lists the modules that ``import difopt`` spends the most time in
after torch is loaded. ``import torchopt`` is measured too when installed (information).

Target: import difopt adds <= 100 ms to import torch.

    python benchmarks/import_time.py            # 10 repetitions
    python benchmarks/import_time.py --quick    # 3 repetitions
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench  # noqa: E402

NAME = "import_time"
TARGET_MS = 100.0

MODULE_CHECK = """
import json, sys
import difopt
bad = sorted(m for m in sys.modules
             if m.startswith("difopt_") or m.split(".")[0] == "graphviz")
print(json.dumps(bad))
"""


def run_once(code: str, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"`python -c {code!r}` failed:\n{proc.stderr.strip()}")
    return dt


def plugin_entry_points() -> list[tuple[str, str, str]]:
    """(group, name, distribution) of difopt.* entry points outside difopt-core."""
    out = []
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] or "?"
        if name.replace("_", "-").lower() == "difopt-core":
            continue
        out += [
            (ep.group, ep.name, name) for ep in dist.entry_points if ep.group.startswith("difopt.")
        ]
    return sorted(set(out))


def importtime_rows(env: dict[str, str]) -> list[dict]:
    """Modules imported by ``import difopt`` after torch, by self time (``-X importtime``)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import torch; import difopt"],
        env=env,
        capture_output=True,
        text=True,
    )
    rows, after_torch = [], False
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cum_us, name = line[len("import time:") :].split("|")
        if not after_torch:  # lines come in post-order: torch's own line closes its block
            after_torch = name == " torch"
            continue
        rows.append(
            {
                "module": name.strip(),
                "self_ms": int(self_us) / 1e3,
                "cumulative_ms": int(cum_us) / 1e3,
            }
        )
    if not after_torch:
        raise RuntimeError("no -X importtime line for torch: " + proc.stderr[-300:])
    rows.sort(key=lambda r: -r["self_ms"])
    return rows


def main() -> None:
    p = _bench.parser(__doc__.splitlines()[0])
    p.add_argument(
        "--top", type=int, default=12, help="modules listed from -X importtime (0 to skip)"
    )
    args = p.parse_args()
    repeats = args.repeats or (3 if args.quick else 10)
    warmup = args.warmup if args.warmup is not None else 1

    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(args.threads))
    _bench.quick_note(args.quick)
    print(
        f"Fresh-interpreter imports ({sys.executable}), {repeats} interleaved repetitions, "
        f"warm-up {warmup}\n"
    )

    labels = {
        "torch": "python -c 'import torch'",
        "difopt": "python -c 'import difopt'",
        "torchopt": "python -c 'import torchopt'",
    }
    status: dict[str, str] = {}
    cmds = {"torch": "import torch", "difopt": "import difopt"}
    if importlib.util.find_spec("torchopt") is None:
        status["torchopt"] = f"skipped (not installed: {_bench.INSTALL_HINT['torchopt']})"
    else:
        cmds["torchopt"] = "import torchopt"
    runs = {name: (lambda code=code: run_once(code, env)) for name, code in cmds.items()}

    # Wall time of each subprocess (start-up of the interpreter included in all of them).
    errors: dict[str, str] = {}
    times = _bench.interleaved(runs, repeats=repeats, number=1, warmup=warmup, errors=errors)
    status.update(errors)
    entries = _bench.contender_rows(list(labels), times, status, "torch", labels)
    added = {}
    for e in entries:
        if e["status"] == "ok" and e["name"] != "torch" and "torch" in times:
            paired = [a - b for a, b in zip(times[e["name"]], times["torch"])]
            e["added_s"] = e["median_s"] - statistics.median(times["torch"])
            e["added_paired_s"] = statistics.median(paired)
            added[e["name"]] = e["added_s"]

    rows = []
    for e in entries:
        if e["status"] != "ok":
            rows.append([e["label"], e["status"]])
            continue
        extra = "(baseline)" if e["name"] == "torch" else _bench.fmt_time(e.get("added_s"))
        rows.append(
            [
                e["label"],
                _bench.fmt_time(e["median_s"]),
                f"{_bench.fmt_time(e['p25_s'])} .. {_bench.fmt_time(e['p75_s'])}",
                extra,
            ]
        )
    print(_bench.table(rows, ["command", "median wall time", "p25..p75", "added to import torch"]))

    # What `import difopt` must not load.
    checks = []
    proc = subprocess.run(
        [sys.executable, "-c", MODULE_CHECK], env=env, capture_output=True, text=True
    )
    plugins = plugin_entry_points()
    dists = sorted({d for _, _, d in plugins})
    if proc.returncode != 0:
        checks.append(
            {
                "name": "import difopt loads no plugin module and no graphviz",
                "ok": False,
                "detail": proc.stderr.strip().splitlines()[-1:],
            }
        )
    else:
        bad = json.loads(proc.stdout.strip().splitlines()[-1])
        checks.append(
            {
                "name": "import difopt loads no plugin module and no graphviz",
                "ok": not bad,
                "detail": (f"loaded: {', '.join(bad)}" if bad else "none loaded")
                + f"; {len(plugins)} plugin entry points installed"
                + (
                    f" ({', '.join(dists)})"
                    if dists
                    else " (no plugin installed: the check only covers core's own imports)"
                ),
            }
        )
    print("\nChecks:")
    for c in checks:
        print(f"  {c['name']}: {'yes' if c['ok'] else 'NO'} ({c['detail']})")

    top, total_ms = [], None
    if args.top > 0:
        try:
            rows_it = importtime_rows(env)
            top, total_ms = rows_it[: args.top], sum(r["self_ms"] for r in rows_it)
        except Exception as exc:  # diagnostics only
            print(f"\n-X importtime listing unavailable: {_bench.failure(exc)}")
        if top:
            print(
                f"\nWhere `import difopt` spends its time after torch (-X importtime, one run: "
                f"{len(rows_it)} modules, {total_ms:.1f} ms in all; top {len(top)} by self "
                f"time):"
            )
            print(
                _bench.table(
                    [
                        [r["module"], f"{r['self_ms']:.1f} ms", f"{r['cumulative_ms']:.1f} ms"]
                        for r in top
                    ],
                    ["module", "self", "cumulative"],
                )
            )

    value = added.get("difopt")
    if value is None:
        targets = [
            {
                "name": "import difopt - import torch (ms)",
                "limit": TARGET_MS,
                "op": "<=",
                "value": None,
                "status": "SKIPPED",
                "reason": status.get("difopt") or status.get("torch") or "",
            }
        ]
    else:
        targets = [
            {
                "name": "import difopt - import torch (ms)",
                "limit": TARGET_MS,
                "op": "<=",
                "value": value * 1e3,
                "status": "PASS" if value * 1e3 <= TARGET_MS else "FAIL",
            }
        ]
    print("\nTargets (difference of the medians):")
    for t in targets:
        if t["status"] == "SKIPPED":
            print(f"  {t['name']} <= {t['limit']:.0f}: SKIPPED ({t['reason']})")
        else:
            print(
                f"  {t['name']} = {t['value']:.1f} ms  (target <= {t['limit']:.0f} ms): "
                f"{t['status']}"
            )
    if "torchopt" in added:
        print(f"  (information) import torchopt - import torch = {added['torchopt'] * 1e3:.1f} ms")

    _bench.write_json(
        NAME,
        {
            "quick": args.quick,
            "config": {"repeats": repeats, "warmup": warmup, "python": sys.executable},
            "env": _bench.environment(args.threads),
            "unit": "seconds of wall time per fresh-interpreter import",
            "contenders": entries,
            "checks": checks,
            "importtime_top": top,
            "importtime_total_ms": total_ms,
            "targets": targets,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
