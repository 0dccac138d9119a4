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
exclude_patterns = ["_build"]

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
