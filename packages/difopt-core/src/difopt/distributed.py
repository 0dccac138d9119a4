"""Distributed execution on ``torch.distributed.rpc``, provided by ``difopt-distributed``.

Entry point: group ``difopt.distributed``, name ``distributed``.
"""

from typing import TYPE_CHECKING, Any

from difopt._lazy import install

if TYPE_CHECKING:
    # For type checkers: the attributes are the plugin's, looked up at run time.
    def __getattr__(name: str) -> Any: ...


install(__name__, "difopt.distributed", "distributed", "difopt-distributed")
