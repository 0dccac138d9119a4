"""difopt-template: the skeleton of a difopt plugin package.

A plugin declares entry points (see ``pyproject.toml``) and states the plugin API it was
written for in ``DIFOPT_PLUGIN_API``; difopt-core refuses a plugin whose major version differs
from its own and reports it as a warning, without breaking ``import difopt``.
"""

__version__ = "0.1.0"

#: The difopt plugin API this package implements (``difopt.registry.PLUGIN_API_VERSION``).
DIFOPT_PLUGIN_API = "1.0"

__all__ = ["DIFOPT_PLUGIN_API", "__version__"]
