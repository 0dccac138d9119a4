"""``python -m difopt.compat [--shadow-installed] (script.py | -m module) [args...]``.

Runs a TorchOpt program unchanged on difopt: installs the ``torchopt`` alias
(:func:`difopt.compat.alias_torchopt`), then runs the script or module as ``python`` would, with
``sys.argv`` set to the program's own arguments and ``__name__ == "__main__"``.
"""

from __future__ import annotations

import os
import runpy
import sys

from difopt.compat import TorchOptAliasError, alias_torchopt

_USAGE = """usage: python -m difopt.compat [--shadow-installed] (script.py | -m module) [args...]

Run an unmodified TorchOpt program with every torchopt module path resolving to difopt's.
Everything after the script or module is the program's own arguments.

options:
  --shadow-installed  run on difopt even though the real TorchOpt is installed
  -h, --help          show this message and exit"""


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    shadow = False
    while args and args[0] in ("--shadow-installed", "-h", "--help"):
        if args.pop(0) == "--shadow-installed":
            shadow = True
        else:
            print(_USAGE)
            return 0
    runnable = bool(args) and (args[0] == "-m" and len(args) > 1 or not args[0].startswith("-"))
    if not runnable:
        print(_USAGE, file=sys.stderr)
        return 2
    try:
        alias_torchopt(shadow_installed=shadow)
    except TorchOptAliasError as err:
        print(f"python -m difopt.compat: {err}", file=sys.stderr)
        return 2
    if args[0] == "-m":
        module, rest = args[1], args[2:]
        sys.argv = [module, *rest]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return 0
    script, rest = args[0], args[1:]
    if not os.path.isfile(script):
        print(f"python -m difopt.compat: can't open file {script!r}", file=sys.stderr)
        return 2
    sys.argv = [script, *rest]
    # As `python script.py`: the script's folder first on sys.path, for its sibling modules.
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
