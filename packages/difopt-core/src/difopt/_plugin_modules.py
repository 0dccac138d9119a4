"""Modules whose contents come from a plugin, resolved on first attribute access.

``difopt.linear_solve``, ``difopt.diff.implicit``, ``difopt.visual`` ... exist in core so that
TorchOpt's import paths work; their attributes are looked up in the plugin that provides them
(through :mod:`difopt.registry`) the first time they are used. When the plugin is missing the
error names the package to install.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class PluginBackedModule(types.ModuleType):
    _difopt_source: tuple[str, str, str, tuple[str, ...], str | None]

    def _difopt_provider(self, what: str) -> Any:
        from difopt import registry as plugins

        group, name, package, path, _ = self._difopt_source
        obj = plugins.require(group, name, package, what)
        for part in path:
            obj = getattr(obj, part)
        return obj

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        from difopt import registry

        try:
            provider = self._difopt_provider(f"{self.__name__}.{attr}")
        except registry.PluginNotInstalledError:
            # Only the documented names say "install X"; others are plain missing attributes,
            # so hasattr() and introspection keep working without the plugin.
            if attr in self.__dict__.get("__all__", ()):
                raise
            raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r}") from None
        try:
            value = getattr(provider, attr)
        except AttributeError:
            raise AttributeError(
                f"module {self.__name__!r} has no attribute {attr!r} (looked up in "
                f"{getattr(provider, '__name__', provider)!r})"
            ) from None
        return value

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        call = self._difopt_source[4]
        if call is None:
            raise TypeError(f"module {self.__name__!r} is not callable")
        return getattr(self._difopt_provider(f"{self.__name__}()"), call)(*args, **kwargs)

    def __dir__(self) -> list[str]:
        names = set(super().__dir__())
        try:
            names |= set(dir(self._difopt_provider(self.__name__)))
        except ImportError:
            pass
        return sorted(names)


def install(
    module_name: str,
    group: str,
    name: str,
    package: str,
    path: tuple[str, ...] = (),
    call: str | None = None,
) -> None:
    """Turn module ``module_name`` into a view of ``plugin(group, name)`` + ``path``.

    Args:
        call: if given, calling the module calls this attribute of the provider (TorchOpt's
            ``@torchopt.diff.zero_order(...)`` spelling).
    """
    module = sys.modules[module_name]
    module.__class__ = PluginBackedModule
    module._difopt_source = (group, name, package, path, call)  # type: ignore[attr-defined]
