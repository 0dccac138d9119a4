"""``python -m difopt info``: what is installed and whether it loads."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m difopt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="list plugins, their versions and load status")
    info.add_argument("--load", action="store_true", help="try to load every plugin")
    args = parser.parse_args(argv)

    import torch

    import difopt
    from difopt import registry as plugins

    print(f"difopt-core {difopt.__version__} (plugin API {plugins.PLUGIN_API_VERSION})")
    print(f"torch {torch.__version__}, python {sys.version.split()[0]}")
    if args.load:
        for p in plugins.plugins():
            if p.status == "not loaded":
                try:
                    plugins.load(p.group, p.name)
                except ImportError:
                    pass
    rows = plugins.plugins()
    if not rows:
        print("no plugin entry points found (is difopt-core installed, not just on sys.path?)")
        return 0
    width = max(len(f"{p.group}:{p.name}") for p in rows)
    for p in rows:
        print(f"  {p.group + ':' + p.name:<{width}}  {p.distribution} {p.version}  [{p.status}]")
        if p.error:
            print(f"  {'':<{width}}    {p.error}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
