"""Guards of the structure the design promises: what ``import difopt`` loads, and how the
modules of difopt depend on each other (read from the source, not from a running import)."""

from __future__ import annotations

import ast
import pathlib

import pytest

import difopt
from core_testing import run_python

SRC = pathlib.Path(difopt.__file__).resolve().parent  # the installed package

# Heavy modules that ``import difopt`` must not load: the compiler stack (about a second on
# this machine) and every optional dependency of a plugin.
HEAVY_PREFIXES = ("torch._dynamo", "torch._inductor", "graphviz", "difopt_", "numpy.testing")


def test_import_difopt_loads_nothing_heavy() -> None:
    code = (
        "import sys, torch\n"
        "before = set(sys.modules)\n"
        "import difopt\n"
        "print('\\n'.join(sorted(set(sys.modules) - before)))\n"
    )
    added = run_python("-c", code).stdout.split()
    heavy = [m for m in added if m.startswith(HEAVY_PREFIXES)]
    assert heavy == [], f"import difopt loads {heavy}"
    assert "difopt.optim" in added  # the check saw the import happen


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path, name: str) -> set[str]:
    """The difopt modules ``path`` imports anywhere (module level or inside a function),
    except under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        # An import of a module counts as an edge to it; ``from pkg import name`` to ``pkg``
        # and, when ``name`` is a submodule, to it. A package's own ``__init__`` is not an
        # edge of its submodules (importing ``difopt.a.b`` runs ``difopt.a`` first, always).
        targets = {m for m in _imports(path, name) if m in files and m != name}
        graph[name] = {t for t in targets if not name.startswith(t + ".")}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_of_difopt_has_no_cycle() -> None:
    graph = _graph()
    assert len(graph) > 30  # the whole package was read
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_contract_imports_nothing_of_difopt() -> None:
    """``difopt.base`` is the contract: everything builds on it, it builds on nothing."""
    assert _graph()["difopt.base"] == set()


# ---------------------------------------------------------------------------- other packages

REPO = pathlib.Path(__file__).resolve().parents[3]  # tests/ -> difopt-core -> packages -> repo


def _difopt_names_used(path: pathlib.Path) -> set[str]:
    """Every dotted difopt name ``path`` imports or reads (``difopt.optim._forms``, ...)."""
    tree = ast.parse(path.read_text())
    aliases = {"difopt": "difopt"}  # local name -> the difopt path it stands for
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "difopt":
                    used.add(a.name)
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else "difopt"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "difopt":
            for a in node.names:
                used.add(f"{node.module}.{a.name}")
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain, inner = [node.attr], node.value
            while isinstance(inner, ast.Attribute):
                chain.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id in aliases:
                used.add(".".join([aliases[inner.id], *reversed(chain)]))
    return used


def _private(name: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in name.split("."))


def test_no_package_but_core_uses_a_private_difopt_name() -> None:
    """Plugins, their tests, the examples and the benchmarks build on public API only (the
    design's promise to third parties); a private name they need becomes public instead."""
    roots = [p for p in (REPO / "packages").iterdir() if p.is_dir() and p.name != "difopt-core"]
    roots += [REPO / "examples", REPO / "benchmarks"]
    files = [f for root in roots for f in root.rglob("*.py") if ".nox" not in f.parts]
    if not files:
        pytest.skip("the repository's other packages are not beside this test")
    offenders = {
        f"{f.relative_to(REPO)}: {name}"
        for f in files
        for name in _difopt_names_used(f)
        if _private(name)
    }
    assert not offenders, "private difopt names used:\n" + "\n".join(sorted(offenders))


def test_the_private_name_finder_sees_imports_and_attribute_reads(tmp_path) -> None:
    source = tmp_path / "plugin.py"
    source.write_text(
        "import difopt\nfrom difopt import _leafwise as lw\nfrom difopt.optim import Adam\n"
        "import difopt.optim as o\nx = difopt.optim._forms.meta_class\ny = o._plan\n"
    )
    used = _difopt_names_used(source)
    assert {n for n in used if _private(n)} == {
        "difopt._leafwise",
        "difopt.optim._forms",
        "difopt.optim._forms.meta_class",
        "difopt.optim._plan",
    }
