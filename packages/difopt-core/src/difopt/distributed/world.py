"""TorchOpt's ``distributed.world`` path: RPC initialisation and world information.

Provided by ``difopt-distributed``."""

from typing import TYPE_CHECKING, Any

from difopt._plugin_modules import install

if TYPE_CHECKING:
    # For type checkers: the attributes are the plugin's, looked up at run time.
    def __getattr__(name: str) -> Any: ...


__all__ = [
    "auto_init_rpc",
    "barrier",
    "get_local_rank",
    "get_local_world_size",
    "get_rank",
    "get_worker_id",
    "get_world_info",
    "get_world_rank",
    "get_world_size",
    "not_on_rank",
    "on_rank",
    "rank_non_zero_only",
    "rank_zero_only",
]

install(__name__, "difopt.distributed", "distributed", "difopt-distributed")
