"""Sphinx configuration: built by ``nox -s docs`` against the installed difopt."""

import difopt

project = "difopt"
author = "the difopt contributors"
copyright = "the difopt contributors"
release = difopt.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_generated"]

# Google-style docstrings (Args / Returns / Examples).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# "Attributes:" sections as fields, so NamedTuple fields are not described twice.
napoleon_use_ivar = True
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"difopt {release}"


# Pages generated from the table of built-in optimizers (difopt.alias.OPTIMIZERS), so the
# docs list exactly what the package has: the user guide's list of optimizers, and the API
# reference of the classic form (difopt.optim re-exports the meta classes as TorchOpt does;
# they are documented once, under difopt.optim.meta).
def _generate_optimizer_pages() -> None:
    import inspect
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
