"""Run every difopt benchmark in sequence (each in its own process) and summarise the targets.

    python benchmarks/run_all.py            # full size (takes minutes; run on a quiet machine)
    python benchmarks/run_all.py --quick    # smoke run of every benchmark

Each benchmark prints its own table and writes benchmarks/results/<name>.json; this script
then prints one summary of the ratios against their targets and of the correctness checks.
A target that is missed is reported as FAIL and does not change the exit status (a benchmark
is allowed to lose); the exit status is 1 only when a benchmark script itself crashed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _bench  # noqa: E402

# Benchmarks whose thread count is part of what they measure (one intra-op thread per
# worker process): run_all does not override it.
OWN_THREADS = {"distributed_maml", "fewshot_digits"}

# Benchmark name (its results file) -> (script, arguments) for those that are not a script of
# the same name run with defaults.
VARIANTS = {
    "adam_classic": ("classic_step", []),
    "sgd_classic": ("classic_step", ["--optimizer", "sgd"]),
    "rmsprop_classic": ("classic_step", ["--optimizer", "rmsprop"]),
    "rmsprop_classic_centered": ("classic_step", ["--optimizer", "rmsprop", "--centered"]),
    "amsgrad_classic": ("classic_step", ["--optimizer", "amsgrad"]),
    "adafactor_classic": ("classic_step", ["--optimizer", "adafactor"]),
    "rprop_classic": ("classic_step", ["--optimizer", "rprop"]),
    "muon_classic": ("classic_step", ["--optimizer", "muon"]),
    "adam_classic_compiled": ("classic_step", ["--compile"]),
}

BENCHMARKS = [
    "adam_classic",
    "sgd_classic",
    "rmsprop_classic",
    "rmsprop_classic_centered",
    "amsgrad_classic",
    "adafactor_classic",
    "rprop_classic",
    "muon_classic",
    "adam_classic_compiled",
    "maml_meta",
    "import_time",
    "zero_order_mlp",
    "distributed_maml",
    "implicit_ridge",
    "deq_digits",
    "unroll_memory",
    "fewshot_digits",
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="forwarded: tiny smoke runs")
    p.add_argument("--threads", type=int, default=2, help="forwarded: torch threads")
    p.add_argument(
        "--only", nargs="+", choices=BENCHMARKS, default=None, help="run only these benchmarks"
    )
    args = p.parse_args()

    names = args.only or BENCHMARKS
    crashed: dict[str, int] = {}
    for name in names:
        result = _bench.RESULTS_DIR / f"{name}.json"
        result.unlink(missing_ok=True)  # never summarise a stale result
        script, extra = VARIANTS.get(name, (name, []))
        cmd = [sys.executable, str(HERE / f"{script}.py"), *extra]
        if name not in OWN_THREADS:
            cmd += ["--threads", str(args.threads)]
        if args.quick:
            cmd.append("--quick")
        print(f"\n{'=' * 100}\n$ {' '.join(cmd[1:])}\n{'=' * 100}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        print(f"[{name}: exit {rc}, {time.perf_counter() - t0:.1f} s]", flush=True)
        if rc != 0:
            crashed[name] = rc

    rows = []
    for name in names:
        path = _bench.RESULTS_DIR / f"{name}.json"
        if name in crashed or not path.exists():
            rows.append(
                [name, "(benchmark crashed)", "-", "-", f"ERROR (exit {crashed.get(name, '?')})"]
            )
            continue
        data = json.loads(path.read_text())
        for t in data.get("targets", []):
            if t["status"] == "SKIPPED":
                rows.append(
                    [name, t["name"], "-", f"<= {t['limit']:g}", f"SKIPPED: {t.get('reason', '')}"]
                )
            else:
                rows.append(
                    [name, t["name"], f"{t['value']:.3f}", f"<= {t['limit']:g}", t["status"]]
                )
        for c in data.get("checks", []):
            rows.append(
                [
                    name,
                    "check: " + c["name"],
                    "yes" if c["ok"] else "NO",
                    "yes",
                    "ok" if c["ok"] else "CHECK FAILED",
                ]
            )
        if data.get("quick"):
            rows.append([name, "(--quick smoke run: not a measurement)", "", "", ""])

    print(
        f"\n{'=' * 100}\nSummary (threads={args.threads}"
        f"{', --quick' if args.quick else ''}; ratios are difopt / peer, medians of "
        f"interleaved repetitions)\n"
    )
    print(_bench.table(rows, ["benchmark", "measure", "value", "target", "result"]))
    sys.exit(1 if crashed else 0)


if __name__ == "__main__":
    main()
