"""The plugin registry: entry points discovered at import, loaded on first use.

Plugins declare entry points in one group per kind of thing they provide:

``difopt.optimizers``
    alias functions (``lion = "pkg.module:lion"``); each gets functional, classic and meta
    forms (``difopt.lion``, ``difopt.Lion``, ``difopt.MetaLion``). Core registers its own.
``difopt.ops``
    native op providers, one entry per optimizer family (``adam``, ``rmsprop``, ``sgd``;
    e.g. ``adam = "difopt_accel:ops"``): an object with ``is_available(device) -> bool`` and
    factories taking the pure transformation's arguments: ``scale_by_adam`` (``adam``),
    ``scale_by_rms`` and ``scale_by_stddev`` (``rmsprop``), ``trace`` (``sgd``).
``difopt.diff``
    differentiation modes (``implicit``, ``zero_order``, ``unroll``): a module.
``difopt.distributed``, ``difopt.visual``
    the module behind ``difopt.distributed`` / ``difopt.visual``.

Discovery reads installed metadata only; no plugin module is imported by ``import difopt``.
A plugin that fails to load, or declares another major plugin-API version (module attribute
``DIFOPT_PLUGIN_API = "1.0"``), is reported once as a warning naming its package, and using
it raises :class:`PluginLoadError` chained to the cause. Environment:

``DIFOPT_DISABLE_PLUGINS``
    comma-separated distribution or entry-point names to ignore (``*`` ignores all
    third-party plugins; core's own entry points stay).
``DIFOPT_STRICT_PLUGINS=1``
    load every plugin at ``import difopt`` and raise :class:`PluginLoadError` on the first
    that fails (no warning); by default plugins load on first use and a failure is a warning
    plus an error when the plugin is used.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as md
import os
import sys
import warnings
from typing import Any

__all__ = [
    "GROUPS",
    "PLUGIN_API_VERSION",
    "PluginInfo",
    "PluginLoadError",
    "PluginNotInstalledError",
    "PluginWarning",
    "load",
    "load_all",
    "names",
    "op_provider",
    "plugins",
    "require",
    "strict_mode",
    "warn_once",
]

#: The version of the plugin API (:mod:`difopt.plugin`, the entry-point groups): a plugin
#: declares the one it implements as ``DIFOPT_PLUGIN_API``; another major version is refused.
PLUGIN_API_VERSION = "1.0"
#: The entry-point groups difopt reads plugins from.
GROUPS = (
    "difopt.optimizers",
    "difopt.ops",
    "difopt.diff",
    "difopt.distributed",
    "difopt.visual",
)
DISABLE_ENV = "DIFOPT_DISABLE_PLUGINS"
STRICT_ENV = "DIFOPT_STRICT_PLUGINS"
_CORE_DIST = "difopt-core"


class PluginWarning(UserWarning):
    """A plugin could not be loaded, or an accelerated path fell back to pure PyTorch."""


class PluginLoadError(ImportError):
    """A plugin is installed but could not be loaded; ``__cause__`` holds why."""


class PluginNotInstalledError(ImportError):
    """The feature lives in a plugin package that is not installed.

    ``from difopt.linear_solve import solve_cg`` then fails with this error, whose message
    names the package to install.
    """


@dataclasses.dataclass
class PluginInfo:
    """One entry point: where it comes from and whether it loaded."""

    group: str
    name: str
    value: str
    distribution: str
    version: str
    status: str = "not loaded"  # "loaded", "failed", "incompatible", "disabled", "built-in"
    error: str | None = None


@dataclasses.dataclass
class _Entry:
    info: PluginInfo
    entry_point: md.EntryPoint | None
    obj: Any = None
    cause: BaseException | None = None


_registry: dict[str, dict[str, _Entry]] = {}
_warned: set[str] = set()


def _normalize(name: str) -> str:
    return name.lower().replace("_", "-")


def discover() -> None:
    """(Re)read the entry points of installed distributions. Imports no plugin."""
    _registry.clear()
    _registry.update({g: {} for g in GROUPS})
    raw = os.environ.get(DISABLE_ENV, "")
    disabled = {_normalize(x.strip()) for x in raw.split(",") if x.strip()}
    all_eps = md.entry_points()
    for group in GROUPS:
        for ep in all_eps.select(group=group):
            dist = ep.dist
            dist_name = (dist.name if dist is not None else None) or "?"
            version = (dist.version if dist is not None else None) or "?"
            info = PluginInfo(group, ep.name, ep.value, dist_name, version)
            is_core = _normalize(dist_name) == _CORE_DIST
            if is_core:
                info.status = "built-in"
            elif (
                "*" in disabled
                or _normalize(dist_name) in disabled
                or _normalize(ep.name) in disabled
            ):
                info.status = "disabled"
            existing = _registry[group].get(ep.name)
            if existing is not None:
                if existing.info.distribution != dist_name:
                    warn_once(
                        f"duplicate:{group}:{ep.name}",
                        f"difopt plugins '{existing.info.distribution}' and '{dist_name}' both "
                        f"declare {group}:{ep.name}; using '{existing.info.distribution}'. "
                        f"Disable one with {DISABLE_ENV}.",
                    )
                continue
            _registry[group][ep.name] = _Entry(info, ep)


def plugins() -> list[PluginInfo]:
    """List every discovered entry point, its distribution, version and load status."""
    return [e.info for group in GROUPS for e in _registry.get(group, {}).values()]


def names(group: str) -> list[str]:
    """Names of the usable (not disabled) entry points in ``group``."""
    return [n for n, e in _registry.get(group, {}).items() if e.info.status != "disabled"]


def warn_once(key: str, message: str) -> None:
    """Emit ``message`` as a :class:`PluginWarning` the first time ``key`` is seen."""
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(message, PluginWarning, stacklevel=3)


def strict_mode() -> bool:
    """Whether ``DIFOPT_STRICT_PLUGINS`` asks for plugin failures to raise at import."""
    return os.environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


class _IncompatiblePlugin(ImportError):
    """A plugin declares a plugin-API major version this core does not speak."""


def _check_api(obj: Any, entry: _Entry) -> None:
    # Where a plugin declares its API version: on the loaded object (a module), on the module
    # defining it, or on the entry point's module; the first declaration found counts.
    places = (
        obj,
        sys.modules.get(getattr(obj, "__module__", "") or ""),
        sys.modules.get(entry.entry_point.module) if entry.entry_point else None,
    )
    declared = next(
        (v for v in (getattr(m, "DIFOPT_PLUGIN_API", None) for m in places) if v is not None),
        None,
    )
    if declared is not None and str(declared).split(".")[0] != PLUGIN_API_VERSION.split(".")[0]:
        raise _IncompatiblePlugin(
            f"{entry.info.distribution} {entry.info.version} was built for difopt plugin API "
            f"{declared}, but this difopt-core speaks {PLUGIN_API_VERSION}; "
            f"upgrade {entry.info.distribution} or difopt-core so their major versions match"
        )


def load(group: str, name: str) -> Any:
    """Load and return the object behind entry point ``name`` in ``group``.

    Raises:
        KeyError: no such entry point (or it is disabled).
        PluginLoadError: it exists but failed to import or is incompatible.
    """
    entry = _registry.get(group, {}).get(name)
    if entry is None or entry.info.status == "disabled":
        raise KeyError(name)
    if entry.obj is not None:
        return entry.obj
    if entry.cause is None:
        try:
            assert entry.entry_point is not None
            obj = entry.entry_point.load()
            _check_api(obj, entry)
        except Exception as exc:  # noqa: BLE001  (a plugin must never break the host)
            entry.cause = exc
            entry.info.status = "incompatible" if isinstance(exc, _IncompatiblePlugin) else "failed"
            entry.info.error = f"{type(exc).__name__}: {exc}"
            message = (
                f"difopt plugin '{entry.info.distribution}' ({group}: {name} = "
                f"{entry.info.value}) could not be loaded: {entry.info.error}"
            )
            if not strict_mode():
                warn_once(f"load:{group}:{name}", message)
        else:
            entry.obj = obj
            if entry.info.status != "built-in":
                entry.info.status = "loaded"
            return obj
    raise PluginLoadError(
        f"difopt plugin '{entry.info.distribution}' providing {group}:{name} failed to load: "
        f"{entry.info.error}"
    ) from entry.cause


def require(group: str, name: str, package: str, feature: str) -> Any:
    """Load ``group:name`` or raise an error that says which package to install."""
    try:
        return load(group, name)
    except KeyError:
        disabled = name in _registry.get(group, {})
        why = f"disabled by {DISABLE_ENV}" if disabled else "not installed"
        raise PluginNotInstalledError(
            f"{feature} is provided by the plugin package '{package}', which is {why}. "
            f"Install it with: pip install {package}"
        ) from None


def op_provider(op: str) -> Any | None:
    """The provider of fused op ``op`` (``difopt.ops`` group), or None when none loads."""
    if op not in names("difopt.ops"):
        return None
    try:
        return load("difopt.ops", op)
    except PluginLoadError:
        if strict_mode():
            raise
        return None


def load_all() -> None:
    """Load every usable entry point now; raise :class:`PluginLoadError` on the first failure.

    Strict mode (``DIFOPT_STRICT_PLUGINS=1``) calls this at the end of ``import difopt``, so a broken or
    incompatible plugin stops the program at start-up instead of at first use.
    """
    for group in GROUPS:
        for name in names(group):
            load(group, name)


discover()
