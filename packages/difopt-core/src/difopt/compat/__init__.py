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

- TorchOpt's public module paths resolve. Where TorchOpt splits a package into one file per
  optimizer (``torchopt.alias.adam``, ``torchopt.optim.meta.sgd``,
  ``torchopt.transform.scale_by_adam``, ``torchopt.schedule.polynomial``, ...) and difopt has
  one module, the file's path is a view of that module: ``from torchopt.alias.adam import
  adam`` works; a name TorchOpt keeps private to such a file (``torchopt.transform.utils``'s
  helpers) raises ``ImportError``. A private TorchOpt module (``torchopt._src``) or a path
  TorchOpt never had raises ``ModuleNotFoundError`` naming the difopt module looked for.
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

# TorchOpt 0.7.3's modules that are files inside a package which difopt provides as a single
# module (the package's names are the file's): parent package -> files.
_TORCHOPT_FILES = {
    "alias": ("adadelta", "adagrad", "adam", "adamax", "adamw", "radam", "rmsprop", "sgd", "utils"),
    "diff.implicit": ("decorator",),
    "diff.zero_order": ("decorator",),
    "linalg": ("cg", "ns", "utils"),
    "linear_solve": ("cg", "inv", "normal_cg", "utils"),
    "optim": ("adadelta", "adagrad", "adam", "adamax", "adamw", "radam", "rmsprop", "sgd"),
    "optim.meta": ("adadelta", "adagrad", "adam", "adamax", "adamw", "radam", "rmsprop", "sgd"),
    "schedule": ("exponential_decay", "polynomial"),
    "transform": (
        "add_decayed_weights",
        "nan_to_num",
        "scale",
        "scale_by_adadelta",
        "scale_by_adam",
        "scale_by_adamax",
        "scale_by_radam",
        "scale_by_rms",
        "scale_by_rss",
        "scale_by_schedule",
        "scale_by_stddev",
        "trace",
        "utils",
    ),
}
_FILE_VIEWS = {
    f"{_PREFIX}.{package}.{file}": f"difopt.{package}"
    for package, files in _TORCHOPT_FILES.items()
    for file in files
}


class _FileView(types.ModuleType):
    """TorchOpt's module file ``torchopt.X.f``, served by difopt's module ``difopt.X``."""

    def __init__(self, name: str, source: str) -> None:
        super().__init__(name, f"TorchOpt's module {name}; its names come from {source}.")
        self.__difopt_source__ = source

    def __getattr__(self, attr: str) -> Any:
        source = importlib.import_module(self.__difopt_source__)
        if attr == "__all__":
            return list(getattr(source, "__all__", ()))
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        try:
            return getattr(source, attr)
        except AttributeError:
            raise AttributeError(
                f"module {self.__name__!r} has no attribute {attr!r}: difopt serves TorchOpt's "
                f"file {self.__name__} from {self.__difopt_source__!r}, which has no such name"
            ) from None


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
        if not _exists(target_name) and fullname not in _FILE_VIEWS:
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
        target_name = _difopt_name(spec.name)
        source = _FILE_VIEWS.get(spec.name)
        if source is not None and not _exists(target_name):
            _keep_names(importlib.import_module(source))
            return _FileView(spec.name, source)
        return importlib.import_module(target_name)

    def exec_module(self, module: types.ModuleType) -> None:
        pass  # executed when difopt's module was imported


def _difopt_name(torchopt_name: str) -> str:
    return "difopt" + torchopt_name[len(_PREFIX) :]


class _KeepsItsNames(types.ModuleType):
    """A difopt module serving TorchOpt's files: importing ``torchopt.alias.adam`` must not
    replace the function ``difopt.alias.adam`` by the file's view, which the import system
    binds on its parent; that binding is skipped. So ``torchopt.alias.adam`` stays the
    function, as it is in TorchOpt, whose package re-imports the name over its file."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, _FileView) and name in self.__dict__:
            return
        super().__setattr__(name, value)


def _keep_names(module: types.ModuleType) -> None:
    if type(module) is types.ModuleType:
        module.__class__ = _KeepsItsNames


def _exists(module_name: str) -> bool:
    if module_name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(module_name) is not None
    except (ImportError, ValueError):  # a parent is not a package; no __spec__
        return False


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
