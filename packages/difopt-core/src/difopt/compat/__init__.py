"""Run unmodified TorchOpt programs on difopt: every ``torchopt`` module path resolves to difopt's.

``import difopt as torchopt`` covers attribute access (``torchopt.diff.implicit.custom_root``),
but a statement that names a module path (``from torchopt.diff.implicit import custom_root``,
``import torchopt.distributed as todist``) needs a module called ``torchopt``. This module
provides one, opt-in, in two spellings:

- ``python -m difopt.compat script.py [args...]`` (or ``python -m difopt.compat -m package.module
  [args...]``) runs a program as ``python script.py`` would, with the alias installed first;
- :func:`alias_torchopt` installs it from Python, e.g. at the top of a program's entry point or
  in a ``conftest.py``.

With the alias, ``import torchopt.X.Y`` imports ``difopt.X.Y`` and binds the same module object
under both names, so ``torchopt.X.Y is difopt.X.Y``. Its limits:

- Only the public module paths that TorchOpt 0.7.3 documents and difopt provides resolve; a
  private TorchOpt module (``torchopt._src``, ``torchopt.alias.utils``) raises
  ``ModuleNotFoundError`` naming the difopt module that was looked for.
- Plugins are still needed for their paths (``torchopt.diff.implicit`` needs difopt-implicit,
  ``torchopt.visual`` difopt-visual, ...); without one, the error names the package to install.
- It changes the import system of the whole process, and cannot coexist with the real TorchOpt:
  if ``torchopt`` is already imported, :func:`alias_torchopt` refuses; if TorchOpt is installed
  it refuses too, unless ``shadow_installed=True`` says that difopt should take its place.
- Objects pickled while aliased record difopt's module paths (``difopt.base``), not TorchOpt's.
- The numbers a program prints are difopt's: where difopt's result differs from TorchOpt's on
  purpose, the user guide's "Differences from TorchOpt" lists it, with the option that gives
  TorchOpt's behaviour where there is one.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from typing import Any, Sequence

from difopt import _validate as check

__all__ = ["TorchOptAliasError", "alias_torchopt", "is_aliased", "remove_torchopt_alias"]

_PREFIX = "torchopt"


class TorchOptAliasError(ImportError):
    """The ``torchopt`` alias cannot be installed (the real TorchOpt is imported or installed)."""


class _TorchOptFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``torchopt`` and ``torchopt.*`` and loads them as the matching difopt modules."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _PREFIX and not fullname.startswith(_PREFIX + "."):
            return None
        target_name = _difopt_name(fullname)
        try:
            found = importlib.util.find_spec(target_name)
        except (ImportError, ValueError):  # a parent is not a package; no __spec__
            found = None
        if found is None and target_name not in sys.modules:
            raise ModuleNotFoundError(
                f"No module named {fullname!r}: the torchopt alias (difopt.compat) maps it to "
                f"{target_name!r}, which does not exist; difopt provides TorchOpt's public "
                "module paths only",
                name=fullname,
            )
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        # The difopt module itself: the import system then binds it under the torchopt name,
        # keeping its own __name__ and __spec__.
        return importlib.import_module(_difopt_name(spec.name))

    def exec_module(self, module: types.ModuleType) -> None:
        pass  # executed when difopt's module was imported


def _difopt_name(torchopt_name: str) -> str:
    return "difopt" + torchopt_name[len(_PREFIX) :]


def _installed_finder() -> _TorchOptFinder | None:
    for finder in sys.meta_path:
        if isinstance(finder, _TorchOptFinder):
            return finder
    return None


def is_aliased() -> bool:
    """Whether :func:`alias_torchopt` is in effect in this process."""
    return _installed_finder() is not None


def alias_torchopt(*, shadow_installed: bool = False) -> None:
    """Make ``torchopt`` and every ``torchopt.X`` module path import difopt's modules.

    Idempotent: a second call does nothing. Undo it with :func:`remove_torchopt_alias`.

    Args:
        shadow_installed: take TorchOpt's place even though a ``torchopt`` package is
            installed (it is then not importable in this process). Without it, an installed
            TorchOpt is left alone and this raises :class:`TorchOptAliasError`.

    Raises:
        TorchOptAliasError: ``torchopt`` (the real one) is already imported in this process,
            or it is installed and ``shadow_installed`` is False.
    """
    if not isinstance(shadow_installed, bool):
        raise TypeError(f"'shadow_installed' must be a bool, got {type(shadow_installed).__name__}")
    if is_aliased():
        return
    loaded = sys.modules.get(_PREFIX)
    if loaded is not None and not getattr(loaded, "__name__", "").startswith("difopt"):
        raise TorchOptAliasError(
            "the real TorchOpt is already imported in this process "
            f"({getattr(loaded, '__file__', loaded)!r}); the torchopt alias must be installed "
            "before anything imports torchopt, and cannot replace a loaded TorchOpt"
        )
    if not shadow_installed and loaded is None:
        try:
            installed = importlib.util.find_spec(_PREFIX)
        except (ImportError, ValueError):
            installed = None
        if installed is not None:
            where = installed.origin or list(installed.submodule_search_locations or ())
            raise TorchOptAliasError(
                f"TorchOpt is installed ({where!r}); the torchopt alias would hide it. Uninstall "
                "it, or pass shadow_installed=True (python -m difopt.compat "
                "--shadow-installed ...) to let difopt take its place in this process"
            )
    sys.meta_path.insert(0, _TorchOptFinder())


def remove_torchopt_alias() -> None:
    """Undo :func:`alias_torchopt`: forget the ``torchopt`` names it bound.

    Modules that already hold a reference (``import torchopt`` ran) keep it.
    """
    finder = _installed_finder()
    if finder is None:
        return
    sys.meta_path.remove(finder)
    for name in [n for n in sys.modules if n == _PREFIX or n.startswith(_PREFIX + ".")]:
        if getattr(sys.modules[name], "__name__", "").startswith("difopt"):
            del sys.modules[name]
