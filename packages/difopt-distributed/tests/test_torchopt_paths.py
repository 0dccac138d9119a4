"""TorchOpt's ``torchopt.distributed`` module attributes outside ``__all__`` (``rpc``, ``dist``),
used as TorchOpt's distributed few-shot MAML example uses them."""

from __future__ import annotations

import pytest
import torch

import difopt
import difopt.distributed as todist
import dist_tasks as tasks


def test_rpc_and_dist_are_torchs_modules() -> None:
    # torchopt/distributed/__init__.py: `import torch.distributed as dist`,
    # `import torch.distributed.rpc as rpc`.
    assert todist.rpc is torch.distributed.rpc
    assert todist.dist is torch.distributed
    assert todist.api.parallelize is todist.parallelize
    assert todist.world.get_world_info is todist.get_world_info


@pytest.mark.usefixtures("world")
def test_example_rref_module_meta_gradient() -> None:
    """The example's step: ``todist.rpc.RRef(module_clone(net, by='copy'))`` sent to the
    workers, each adapts a copy with MetaSGD, ``todist.autograd.backward`` fills ``.grad``.
    Oracle: the same MAML step written with torch.autograd in this process."""
    g = torch.Generator().manual_seed(0)
    n_tasks = 6
    x_s, x_q = (torch.randn(n_tasks, 5, 3, generator=g, dtype=torch.float64) for _ in range(2))
    y_s, y_q = (torch.randn(n_tasks, 5, 1, generator=g, dtype=torch.float64) for _ in range(2))
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1).double()

    loss_fn = todist.parallelize(
        partitioner=tasks.rref_task_partitioner, reducer=todist.mean_reducer
    )(tasks.rref_inner_loop)
    net_rref = todist.rpc.RRef(difopt.module_clone(net, by="copy"))
    with todist.autograd.context() as context_id:
        loss = loss_fn(net_rref, x_s, y_s, x_q, y_q)
        todist.autograd.backward(context_id, loss)

    w, b = (p.detach().clone().requires_grad_() for p in net.parameters())
    losses = []
    for i in range(n_tasks):
        inner = torch.nn.functional.mse_loss(x_s[i] @ w.T + b, y_s[i])
        gw, gb = torch.autograd.grad(inner, (w, b), create_graph=True)
        w1, b1 = w - 0.1 * gw, b - 0.1 * gb
        losses.append(torch.nn.functional.mse_loss(x_q[i] @ w1.T + b1, y_q[i]))
    want = torch.stack(losses).mean()
    torch.testing.assert_close(loss.detach(), want.detach(), rtol=1e-12, atol=0)
    for got, ref in zip((net.weight.grad, net.bias.grad), torch.autograd.grad(want, (w, b))):
        assert got is not None
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
