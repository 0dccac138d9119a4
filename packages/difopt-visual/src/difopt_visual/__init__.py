"""difopt-visual: draw the autograd graphs of differentiable optimization.

The module behind :mod:`difopt.visual` (entry point ``difopt.visual: visual``), so TorchOpt
code runs unchanged::

    import difopt as torchopt

    dot = torchopt.visual.make_dot(loss, params=[state_0, state_1, {"meta_param": meta_param}])
    dot.render("graph", format="svg")

- :func:`make_dot` draws the graph with parameter names; meta-parameters (leaves) and inner
  parameters (tensors produced by unrolled steps) look different; ``collapse_steps=True``
  draws each unrolled step of a meta optimizer as one cluster.
- :func:`resize_graph` sizes a drawing from its content.
- :func:`summary` reports node count, named dependencies and unroll depth as text.
- :func:`record_steps` tags the steps of a :class:`difopt.MetaOptimizer` for the two above.

Rendering to an image needs the Graphviz ``dot`` program on ``PATH`` (Debian/Ubuntu:
``apt-get install graphviz``); building a graph and its DOT source does not.
"""

from difopt_visual._dot import make_dot, resize_graph
from difopt_visual._steps import STEP_METADATA_KEY, record_steps
from difopt_visual._summary import GraphSummary, summary

__version__ = "0.1.0"

#: The difopt plugin API this package implements (``difopt.registry.PLUGIN_API_VERSION``).
DIFOPT_PLUGIN_API = "1.0"

__all__ = [
    "DIFOPT_PLUGIN_API",
    "STEP_METADATA_KEY",
    "GraphSummary",
    "__version__",
    "make_dot",
    "record_steps",
    "resize_graph",
    "summary",
]
