"""Rendering with the system Graphviz `dot` program (skipped, with the reason, without it)."""

from __future__ import annotations

from pathlib import Path

import pytest

import difopt_visual
from helpers import requires_dot, unroll


@requires_dot
@pytest.mark.parametrize("collapse", [False, True], ids=["full", "collapsed"])
def test_renders_png_and_svg(tmp_path: Path, collapse: bool) -> None:
    u = unroll(steps=2)
    dot = difopt_visual.make_dot(u.loss, u.params, collapse_steps=collapse)
    svg = Path(dot.render(tmp_path / "graph", format="svg"))
    png = Path(dot.render(tmp_path / "graph", format="png"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    for name in ("meta_param", "step0.fc.weight", "step2.fc.bias"):
        assert name in text


@requires_dot
def test_pipe_to_svg_in_memory() -> None:
    u = unroll(steps=1)
    svg = difopt_visual.make_dot(u.loss, u.params, show_attrs=True, show_saved=True).pipe(
        format="svg"
    )
    assert b"<svg" in svg
