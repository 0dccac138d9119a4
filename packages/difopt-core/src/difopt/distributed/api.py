"""TorchOpt's ``distributed.api`` path: partitioners, reducers, remote calls, ``parallelize``.

Provided by ``difopt-distributed``."""

from typing import TYPE_CHECKING, Any

from difopt._plugin_modules import install

if TYPE_CHECKING:
    # For type checkers: the attributes are the plugin's, looked up at run time.
    def __getattr__(name: str) -> Any: ...


__all__ = [
    "TensorDimensionPartitioner",
    "batch_partitioner",
    "dim_partitioner",
    "mean_reducer",
    "parallelize",
    "parallelize_async",
    "parallelize_sync",
    "remote_async_call",
    "remote_sync_call",
    "sum_reducer",
]

install(__name__, "difopt.distributed", "distributed", "difopt-distributed")
