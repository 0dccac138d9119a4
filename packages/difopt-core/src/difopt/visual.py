"""Gradient-graph drawing (``make_dot``, ``resize_graph``), provided by ``difopt-visual``.

Entry point: group ``difopt.visual``, name ``visual``.
"""

from difopt._lazy import install

__all__ = ["make_dot", "resize_graph"]

install(__name__, "difopt.visual", "visual", "difopt-visual")
