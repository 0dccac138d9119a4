"""The distributed helpers a TorchOpt example reaches through its module path."""

import torch
import torchopt.distributed as todist


def describe():
    assert todist.dist is torch.distributed and todist.rpc is torch.distributed.rpc
    return todist.get_world_size(), todist.get_rank()
