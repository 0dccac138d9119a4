"""difopt-distributed: RPC-distributed meta-learning on ``torch.distributed.rpc``.

The module behind :mod:`difopt.distributed` (entry point ``difopt.distributed:
distributed``), with TorchOpt 0.7.3's ``torchopt.distributed`` API, so TorchOpt code runs
unchanged::

    import difopt as torchopt
    import difopt.distributed as todist  # or torchopt.distributed

    @todist.parallelize(partitioner=todist.batch_partitioner, reducer=todist.mean_reducer)
    def task_loss(meta_params, tasks): ...

    @todist.auto_init_rpc()
    def main():
        if todist.get_rank() == 0:
            with todist.autograd.context() as ctx:
                loss = task_loss(meta_params, tasks)   # spread over the workers
                todist.autograd.backward(ctx, loss)    # meta-gradients reach meta_params

Launch with ``torchrun --nproc-per-node N script.py``.

- World: :func:`auto_init_rpc`, :func:`get_world_info`, ranks and sizes, :func:`barrier`,
  rank-gated decorators (:func:`rank_zero_only`, ...).
- Calls: :func:`remote_async_call` / :func:`remote_sync_call`, and the decorators
  :func:`parallelize` / :func:`parallelize_async`; partitioners split the arguments over
  workers, reducers combine the results. ``backward="eager"`` has the workers return a
  loss together with its gradient (one round trip, no distributed autograd needed).
- :mod:`difopt_distributed.autograd`: distributed autograd (``context``, ``backward``,
  ``grad``, ``get_gradients``).
- Faults: an exception on a worker is raised by the caller as :class:`WorkerError` (with the
  worker's rank and traceback); a worker that dies or stalls raises :class:`WorkerLostError`
  within the RPC timeout (default 30 s), and :func:`shutdown` still ends every survivor.
"""

import torch.distributed as _dist
import torch.distributed as dist  # TorchOpt's ``torchopt.distributed.dist`` (not in __all__)
import torch.distributed.rpc as _rpc
import torch.distributed.rpc as rpc  # TorchOpt's ``torchopt.distributed.rpc`` (not in __all__)

from difopt_distributed import autograd
from difopt_distributed._api import (
    TensorDimensionPartitioner,
    batch_partitioner,
    dim_partitioner,
    exclusive_batch_partitioner,
    mean_reducer,
    parallelize,
    parallelize_async,
    parallelize_sync,
    remote_async_call,
    remote_sync_call,
    sum_reducer,
)
from difopt_distributed._errors import (
    RemoteError,
    RpcNotInitializedError,
    WorkerError,
    WorkerLostError,
)
from difopt_distributed._tree import tree_as_rref, tree_local_value, tree_to_here
from difopt_distributed._world import (
    DEFAULT_RPC_TIMEOUT,
    WorldInfo,
    auto_init_rpc,
    barrier,
    cpu_share,
    default_worker_name_format,
    get_local_rank,
    get_local_world_size,
    get_rank,
    get_worker_id,
    get_world_info,
    get_world_rank,
    get_world_size,
    init_world,
    is_initialized,
    not_on_rank,
    on_rank,
    rank_non_zero_only,
    rank_zero_only,
    shutdown,
)

__version__ = "0.1.0"

#: The difopt plugin API this package implements (``difopt.registry.PLUGIN_API_VERSION``).
DIFOPT_PLUGIN_API = "1.0"


def is_available() -> bool:
    """Whether this torch build has ``torch.distributed``, RPC and distributed autograd."""
    return bool(_dist.is_available() and _rpc.is_available() and autograd.is_available())


__all__ = [
    "DEFAULT_RPC_TIMEOUT",
    "DIFOPT_PLUGIN_API",
    "RemoteError",
    "RpcNotInitializedError",
    "TensorDimensionPartitioner",
    "WorkerError",
    "WorkerLostError",
    "WorldInfo",
    "__version__",
    "auto_init_rpc",
    "autograd",
    "barrier",
    "batch_partitioner",
    "cpu_share",
    "default_worker_name_format",
    "dim_partitioner",
    "exclusive_batch_partitioner",
    "get_local_rank",
    "get_local_world_size",
    "get_rank",
    "get_worker_id",
    "get_world_info",
    "get_world_rank",
    "get_world_size",
    "init_world",
    "is_available",
    "is_initialized",
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
    "shutdown",
    "sum_reducer",
    "tree_as_rref",
    "tree_local_value",
    "tree_to_here",
]
