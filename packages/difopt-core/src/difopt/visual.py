"""Gradient-graph drawing (``make_dot``, ``resize_graph``), provided by ``difopt-visual``.

Entry point: group ``difopt.visual``, name ``visual``.
"""

from typing import TYPE_CHECKING, Any

from difopt._plugin_modules import install

if TYPE_CHECKING:
    # For type checkers: the attributes are the plugin's, looked up at run time.
    def __getattr__(name: str) -> Any: ...


__all__ = ["make_dot", "record_steps", "resize_graph", "summary"]

install(__name__, "difopt.visual", "visual", "difopt-visual")
