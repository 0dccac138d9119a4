"""Checks of the built documentation, run by ``nox -s docs`` after ``sphinx-build``.

- Every name in the ``__all__`` of every public module of every package has a docstring and
  an entry in the API reference (the ``objects.inv`` the build wrote), under its own path or
  under the path of the object it re-exports.
- Every internal link of the built HTML (``href`` without a scheme) reaches an existing file,
  and its ``#fragment``, if any, an ``id`` in that file.

The HTML folder is ``$DIFOPT_DOCS_HTML`` (set by the nox session), else ``docs/_build/html``.
"""

from __future__ import annotations

import html.parser
import importlib
import inspect
import os
import pathlib
import pkgutil
import re
import types
import urllib.parse
from typing import Any

import pytest

HTML = pathlib.Path(
    os.environ.get("DIFOPT_DOCS_HTML", pathlib.Path(__file__).parent / "_build" / "html")
)

# The import names of the monorepo's packages (noxfile.PACKAGES), whose public API the
# reference must cover.
TOP_LEVEL = (
    "difopt",
    "difopt_accel",
    "difopt_distributed",
    "difopt_implicit",
    "difopt_unroll",
    "difopt_visual",
    "difopt_zeroorder",
)

# Names that need no docstring: a version string is documented by what it is.
EXEMPT = {"__version__"}

# Public names that lack documentation in the packages' sources (packages/ belongs to the
# packages, not to the docs), with the reason. Each entry is a strict expected failure:
# documenting the name makes the test fail until its entry is removed from here. Empty: every
# public name is documented.
_NO_DOC_COMMENT = (
    "data without a doc comment: add a `#:` comment (or a docstring after the assignment) "
    "where it is assigned (docs/conf.py carries it to the public modules that re-export it), "
    "or, for another library's constant, an `autodata` with its description in docs/api.rst"
)
KNOWN_GAPS: dict[str, str] = {}

_NAMEDTUPLE_DOC = re.compile(r"^\w+\(.*\)$", re.S)  # what namedtuple writes when there is none


def _require_html() -> None:
    if not (HTML / "objects.inv").is_file():
        pytest.fail(f"{HTML} has no objects.inv: build the docs first (nox -s docs)")


def _public_modules() -> list[types.ModuleType]:
    """Each package and its submodules whose dotted path has no ``_``-prefixed part."""
    modules = []
    for top in TOP_LEVEL:
        package = importlib.import_module(top)
        modules.append(package)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{top}."):
            parts = info.name.split(".")
            if any(part.startswith("_") for part in parts):
                continue  # private, and __main__ (importing it would run it)
            modules.append(importlib.import_module(info.name))
    return modules


def _public_names() -> list[tuple[str, str]]:
    """(module, name) for every name in the __all__ of every public module."""
    return [
        (module.__name__, name)
        for module in _public_modules()
        for name in getattr(module, "__all__", ())
    ]


def _inventory() -> dict[str, dict[str, Any]]:
    from sphinx.util.inventory import InventoryFile

    with open(HTML / "objects.inv", "rb") as stream:
        inventory = InventoryFile.load(stream, "", lambda base, uri: uri)
    return {role: dict(entries) for role, entries in inventory.items() if role.startswith("py:")}


def _resolve(path: str) -> Any:
    """The object at a dotted path: the longest importable module prefix, then attributes."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for part in parts[cut:]:
                obj = getattr(obj, part)
        except AttributeError:
            return None
        return obj
    return None


def _is_identifiable(obj: Any) -> bool:
    """Whether object identity says which documented entry it is (not an int or a str)."""
    return isinstance(obj, types.ModuleType) or inspect.isclass(obj) or inspect.isroutine(obj)


def _kind(obj: Any) -> str:
    """``module``; ``code``: a class or function of these packages; ``foreign``: another
    library's (``difopt.typing.Tensor`` is ``torch.Tensor``); ``data``: anything else."""
    if isinstance(obj, types.ModuleType):
        return "module"
    if inspect.isclass(obj) or inspect.isroutine(obj):
        top = (getattr(obj, "__module__", None) or "").split(".")[0]
        return "code" if top in TOP_LEVEL else "foreign"
    return "data"


_DOCUMENTED: dict[str, Any] = {}


def _documented() -> dict[str, Any]:
    """Documented paths, and (id, name) of the objects they resolve to."""
    if not _DOCUMENTED:
        paths = {path for entries in _inventory().values() for path in entries}
        objects, ids = set(), set()
        for path in paths:
            obj = _resolve(path)
            if obj is not None:
                objects.add((id(obj), path.rsplit(".", 1)[-1]))
                if _is_identifiable(obj):
                    ids.add(id(obj))
        _DOCUMENTED.update(paths=paths, objects=objects, ids=ids)
    return _DOCUMENTED


def _own_docstring(obj: Any) -> str:
    doc = (obj.__doc__ or "").strip()  # not inspect.getdoc: a class must not inherit its parent's
    return "" if _NAMEDTUPLE_DOC.match(doc) else doc


@pytest.mark.parametrize(
    ("module", "name"), [pytest.param(m, n, id=f"{m}.{n}") for m, n in _public_names()]
)
def test_public_name_is_documented(module: str, name: str, request: pytest.FixtureRequest) -> None:
    """A module or a class or function of these packages needs its own docstring; a class or
    function, an object of another library or data (documented by a ``#:`` comment, which is
    what makes autodoc list it) needs an entry in the reference: under this path, or under
    the path of the same object with the same name (``difopt.adam`` is ``difopt.alias.adam``).
    A module needs no entry of its own: its public names are checked one by one."""
    path = f"{module}.{name}"
    if name in EXEMPT:
        pytest.skip(f"{name} needs no docstring")
    if path in KNOWN_GAPS:
        request.applymarker(pytest.mark.xfail(reason=KNOWN_GAPS[path], strict=True))
    _require_html()
    obj = getattr(importlib.import_module(module), name)
    kind = _kind(obj)
    if kind in ("module", "code"):
        assert _own_docstring(obj), f"{path} has no docstring"
    if kind == "module":
        return
    documented = _documented()
    if path in documented["paths"]:
        return
    if kind in ("code", "foreign") and id(obj) in documented["ids"]:
        return  # a re-export of a documented class or function, under any name
    if (id(obj), name) in documented["objects"]:
        return  # a re-export of documented data, under its name
    hint = _NO_DOC_COMMENT if kind == "data" else "an entry in docs/api.rst"
    pytest.fail(f"{path} ({kind}) is not in the API reference: {hint}")


def test_known_gaps_are_public_names() -> None:
    names = {f"{module}.{name}" for module, name in _public_names()}
    assert not set(KNOWN_GAPS) - names, "KNOWN_GAPS lists names that are not public"


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key in ("id", "name") and value:
                self.ids.add(value)
            if key == "href" and value and tag in ("a", "link"):
                self.hrefs.append(value)


def _parse(page: pathlib.Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def test_internal_links_resolve() -> None:
    _require_html()
    pages = {p.resolve(): _parse(p) for p in HTML.rglob("*.html")}
    broken = []
    for page, links in pages.items():
        for href in links.hrefs:
            url = urllib.parse.urlsplit(href)
            if url.scheme or url.netloc:
                continue  # external: not checked (no network in CI)
            target = (page.parent / urllib.parse.unquote(url.path)).resolve() if url.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page.relative_to(HTML.resolve())}: {href} (no such file)")
            elif url.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if urllib.parse.unquote(url.fragment) not in ids:
                    broken.append(f"{page.relative_to(HTML.resolve())}: {href} (no such anchor)")
    assert not broken, "broken internal links:\n" + "\n".join(sorted(set(broken)))
