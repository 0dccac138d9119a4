"""Distributed execution on ``torch.distributed.rpc``, provided by ``difopt-distributed``.

Entry point: group ``difopt.distributed``, name ``distributed``.
"""

import importlib
from typing import TYPE_CHECKING, Any

from difopt._plugin_modules import install

if TYPE_CHECKING:
    # For type checkers: the attributes are the plugin's, looked up at run time.
    def __getattr__(name: str) -> Any: ...


__all__ = [
    "TensorDimensionPartitioner",
    "api",
    "auto_init_rpc",
    "autograd",
    "barrier",
    "batch_partitioner",
    "dim_partitioner",
    "get_local_rank",
    "get_local_world_size",
    "get_rank",
    "get_worker_id",
    "get_world_info",
    "get_world_rank",
    "get_world_size",
    "is_available",
    "mean_reducer",
    "not_on_rank",
    "on_rank",
    "parallelize",
    "parallelize_async",
    "parallelize_sync",
    "rank_non_zero_only",
    "rank_zero_only",
    "remote_async_call",
    "remote_sync_call",
    "sum_reducer",
    "world",
]

install(__name__, "difopt.distributed", "distributed", "difopt-distributed")

# TorchOpt's ``torchopt.distributed`` also holds the torch modules it is built on, outside
# ``__all__``; its examples use them (``todist.rpc.RRef(net)``). ``import torch`` has already
# imported both, so they cost nothing here, and they resolve without the plugin.
try:
    import torch.distributed as dist
    import torch.distributed.rpc as rpc
except ImportError:  # pragma: no cover - a torch build without torch.distributed
    pass

# The lazy submodules (TorchOpt's paths), imported without touching the plugin (``from . import
# autograd`` would first look the name up on this module, which loads the plugin).
for _submodule in ("api", "autograd", "world"):
    importlib.import_module(f"{__name__}.{_submodule}")
