"""Sphinx configuration: built by ``nox -s docs`` against the installed difopt."""

import inspect
import sys
from typing import Any

import difopt

project = "difopt"
author = "the difopt contributors"
copyright = "the difopt contributors"
release = difopt.__version__
version = release

extensions = [
    # MyST-NB includes myst-parser: plain .md pages are parsed as MyST Markdown, and a .md file
    # with a ``kernelspec`` in its front matter (docs/tutorials/, docs/migration/) is a
    # notebook, executed.
    "myst_nb",
    "sphinx.ext.autodoc",
    # Diagrams (docs/architecture.md) rendered by Graphviz's `dot` at build time, no network.
    "sphinx.ext.graphviz",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
graphviz_output_format = "svg"
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb"}
exclude_patterns = ["_build", "_generated", "jupyter_execute", "**.ipynb_checkpoints"]

# Google-style docstrings (Args / Returns / Examples).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# "Attributes:" sections as fields, so NamedTuple fields are not described twice.
napoleon_use_ivar = True
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}
myst_heading_anchors = 3

# Tutorials: executed at every build. "force" rather than "cache": jupyter-cache keys a
# notebook on its code cells only, so a change of the installed difopt would leave a cached
# tutorial showing stale numbers and its asserts unchecked; the tutorials are small (seconds
# each on a 2-core CPU), and re-running them is what makes them tests of the library.
nb_execution_mode = "force"
nb_execution_raise_on_error = True  # a cell that raises (a failed assert) fails the build
nb_execution_show_tb = True  # and the traceback is printed in the build log
nb_execution_timeout = 300  # seconds per cell
nb_merge_streams = True  # one output block per cell for prints interleaved with warnings


# Sphinx 9.0.4's source parser (sphinx.pycode, used by viewcode and for ``#:`` comments) fails
# on a dict display with ``**`` unpacking, ``{**_META, "lr": 2e-3}`` (difopt/alias), with
# "zip() argument 2 is longer than argument 1": the module's source page is then missing and
# the viewcode index links to nothing. Unparse ``**`` items instead of dropping their keys.
def _patch_sphinx_dict_unparse() -> None:
    import ast

    from sphinx.pycode import ast as sphinx_ast

    def visit_dict(self: sphinx_ast._UnparseVisitor, node: ast.Dict) -> str:
        items = (
            f"**{self.visit(v)}" if k is None else f"{self.visit(k)}: {self.visit(v)}"
            for k, v in zip(node.keys, node.values, strict=True)
        )
        return "{" + ", ".join(items) + "}"

    sphinx_ast._UnparseVisitor.visit_Dict = visit_dict  # type: ignore[method-assign]


_patch_sphinx_dict_unparse()

html_theme = "furo"
html_title = f"difopt {release}"


# Pages generated from the table of built-in optimizers (difopt.alias.OPTIMIZERS), so the
# docs list exactly what the package has: the user guide's list of optimizers, and the API
# reference of the classic form (difopt.optim re-exports the meta classes as TorchOpt does;
# they are documented once, under difopt.optim.meta).
def _generate_optimizer_pages() -> None:
    import pathlib

    out = pathlib.Path(__file__).resolve().parent / "_generated"
    out.mkdir(exist_ok=True)
    rows = ["| functional | classic | meta | |", "| --- | --- | --- | --- |"]
    for fn in difopt.alias.OPTIMIZERS:
        classic, meta = difopt.optim.classic_class(fn), difopt.optim.meta_class(fn)
        summary = inspect.cleandoc(fn.__doc__ or "").split("\n\n")[0].replace("\n", " ")
        rows.append(
            f"| `difopt.{fn.__name__}` | `difopt.{classic.__name__}` "
            f"| `difopt.{meta.__name__}` | {summary} |"
        )
    (out / "optimizers.md").write_text("\n".join(rows) + "\n")
    meta_names = sorted(n for n in difopt.optim.__all__ if n.startswith("Meta"))
    (out / "classic_api.rst").write_text(
        ".. automodule:: difopt.optim\n"
        f"   :exclude-members: FuncOptimizer, {', '.join(meta_names)}\n"
    )


_generate_optimizer_pages()


# sphinx.ext.viewcode lists in its index (_modules/index.html) every module it looked at, also
# those whose source it could not read (torch's compiled modules, whose functions
# difopt_distributed.autograd re-exports), which then link to pages that do not exist. Forget
# those modules before viewcode writes its pages.
def _forget_unreadable_modules(app: Any) -> list:
    modules = getattr(app.env, "_viewcode_modules", {})
    for name in [name for name, entry in modules.items() if entry is False]:
        del modules[name]
    return []


# viewcode links each function on a source page back to its entry in the docs as
# "<module>.<name>", with one <module> per source file: the first module documented from that
# file. A file whose names are documented under two modules (difopt_implicit.nn._module:
# ImplicitMetaGradientModule under difopt_implicit, enable_implicit_gradients under
# difopt_implicit.nn.module) gets back-links to anchors that do not exist. Record where each
# name was documented, and correct the links when the source page is written.
def _record_documented_modules(app: Any, doctree: Any) -> None:
    from sphinx import addnodes
    from sphinx.ext.viewcode import _get_full_modname

    where = app.env.__dict__.setdefault("_difopt_documented_in", {})
    for desc in doctree.findall(addnodes.desc):
        if desc.get("domain") != "py":
            continue
        for sig in desc.findall(addnodes.desc_signature):
            module, fullname = sig.get("module"), sig.get("fullname")
            source = module and fullname and _get_full_modname(module, fullname)
            if source:
                where.setdefault((source, fullname), module)


def _fix_source_backlinks(
    app: Any, pagename: str, templatename: str, context: dict, doctree: Any
) -> None:
    if not pagename.startswith("_modules/") or "body" not in context:
        return
    source = pagename.removeprefix("_modules/").replace("/", ".")
    entry = getattr(app.env, "_viewcode_modules", {}).get(source)
    if not entry:
        return
    refname = entry[3]
    for (module, fullname), documented in app.env.__dict__.get("_difopt_documented_in", {}).items():
        if module == source and documented != refname:
            context["body"] = context["body"].replace(
                f'#{refname}.{fullname}"', f'#{documented}.{fullname}"'
            )


# autodoc reads the doc comment of module-level data (``#: ...`` before the assignment, or a
# docstring after it) from the source of the module it documents. A constant assigned in one
# module and re-exported by another (``difopt.transform.MUON_NS_COEFFICIENTS`` from
# ``difopt/transform/_muon.py``, ``difopt_unroll.MODES`` from ``engine.py``) has no comment
# in the re-exporting module: automodule leaves it out, and an ``autodata`` of its public path
# (docs/api.rst lists them) would show the docstring of its type (``tuple``'s). This hook gives
# such an ``autodata`` the comment of the module of the same package that assigns it, so that
# each constant is documented once, where it is defined. Data that no module of these packages
# documents (optree's constants, re-exported by difopt.pytree) loses its type's docstring; its
# description is the content of its ``autodata`` in docs/api.rst.
def _attr_doc(module_name: str, name: str) -> list[str] | None:
    from sphinx.errors import PycodeError
    from sphinx.pycode import ModuleAnalyzer

    try:
        analyzer = ModuleAnalyzer.for_module(module_name)
        analyzer.analyze()
    except PycodeError:
        return None
    doc = analyzer.attr_docs.get(("", name))
    return list(doc) if doc else None


def _defining_doc(name: str, obj: Any, package: str) -> list[str] | None:
    """The doc comment of ``name`` in the module of ``package`` that holds ``obj`` under that
    name and has a comment for it: the module that assigns it."""
    for module_name, module in sorted(sys.modules.items()):
        if module_name.split(".")[0] != package or module is None:
            continue
        # vars(), not getattr: a plugin-backed module (difopt.visual) would load its plugin.
        if vars(module).get(name, _defining_doc) is obj:
            doc = _attr_doc(module_name, name)
            if doc:
                return doc
    return None


def _docstring_of_reexported_data(
    app: Any, what: str, fullname: str, obj: Any, options: Any, lines: list[str]
) -> None:
    if what != "data" or "." not in fullname:
        return
    module_name, name = fullname.rsplit(".", 1)
    if _attr_doc(module_name, name):
        return  # the documented module assigns it, with its comment: autodoc has found it
    doc = _defining_doc(name, obj, module_name.split(".")[0])
    if doc:
        lines[:] = [*doc, ""]
    elif type(obj).__doc__ and "\n".join(lines).strip() == inspect.cleandoc(type(obj).__doc__):
        lines[:] = []  # the type's docstring (tuple's, int's) says nothing about the constant


def setup(app: Any) -> None:
    app.connect("autodoc-process-docstring", _docstring_of_reexported_data)
    app.connect("html-collect-pages", _forget_unreadable_modules, priority=400)
    app.connect("doctree-read", _record_documented_modules)
    app.connect("html-page-context", _fix_source_backlinks)
