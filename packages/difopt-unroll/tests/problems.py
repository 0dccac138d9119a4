"""Inner problems shared by the tests: each builds a fresh problem and runs it either through
``difopt_unroll`` or as the plain, hand-written unrolled loop (the oracle), in float64.

A problem returns the meta-gradients of one meta-loss (a validation loss of the final
parameters plus a weighted sum of the inner losses) with respect to its meta-parameters: the
initial parameters and, depending on the problem, a tensor learning rate and a regulariser.
Tensor learning rates are used with several parameter tensors (an MLP).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
import torch.nn.functional as F

import difopt
import difopt_unroll
from difopt.transform import scale, scale_by_adam, scale_by_schedule, trace

K = 50
DIM, HIDDEN, BATCH = 5, 6, 8


def data(seed: int, num_steps: int = K) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_steps, BATCH, DIM, generator=g, dtype=torch.float64)
    y = torch.randn(num_steps, BATCH, 1, generator=g, dtype=torch.float64)
    return x, y


def mlp_params(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "w1": (torch.randn(DIM, HIDDEN, generator=g, dtype=torch.float64) / 2).requires_grad_(),
        "b1": torch.zeros(HIDDEN, dtype=torch.float64, requires_grad=True),
        "w2": (torch.randn(HIDDEN, 1, generator=g, dtype=torch.float64) / 2).requires_grad_(),
    }


def mlp(p: dict[str, torch.Tensor], x: torch.Tensor, dropout: float = 0.0) -> torch.Tensor:
    h = torch.tanh(x @ p["w1"] + p["b1"])
    if dropout:
        h = F.dropout(h, dropout, training=True)
    return h @ p["w2"]


@dataclasses.dataclass
class Functional:
    """A functional problem: a transformation over a pytree of parameters."""

    name: str
    make_transform: Callable[[Any], difopt.GradientTransformation]  # (lr) -> transform
    tensor_lr: bool
    one_tensor: bool  # parameters as one vector (for a tensor learning rate)
    dropout: float = 0.0

    def setup(self) -> tuple[Any, ...]:
        torch.manual_seed(0)
        x, y = data(1)
        vx, vy = data(2, 1)
        p0 = mlp_params(3)
        if self.one_tensor:
            p0 = {"w": torch.randn(DIM, 1, dtype=torch.float64).requires_grad_()}
        lr = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
        wd = torch.tensor(0.01, dtype=torch.float64, requires_grad=True)
        tx = self.make_transform(lr if self.tensor_lr else 0.05)
        return x, y, vx[0], vy[0], p0, lr, wd, tx

    def predict(self, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        if self.one_tensor:
            out = x @ p["w"]
            return F.dropout(out, self.dropout, training=True) if self.dropout else out
        return mlp(p, x, self.dropout)

    def inner_loss(self, p: dict[str, torch.Tensor], batch: Any, wd: torch.Tensor) -> torch.Tensor:
        x, y = batch
        reg = sum((v**2).sum() for v in p.values())
        return F.mse_loss(self.predict(p, x), y) + wd * reg

    def meta_inputs(self, p0: Any, lr: torch.Tensor, wd: torch.Tensor) -> list[torch.Tensor]:
        return [*p0.values(), wd, *([lr] if self.tensor_lr else [])]

    def meta_loss(self, p: Any, losses: torch.Tensor, vx: torch.Tensor, vy: torch.Tensor) -> Any:
        return F.mse_loss(self.predict(p, vx), vy) + 0.1 * losses.sum()

    def reference(self, first_order: bool = False, truncate: int | None = None) -> list[Any]:
        """The plain hand-written unrolled loop."""
        x, y, vx, vy, p0, lr, wd, tx = self.setup()
        torch.manual_seed(7)
        p, s, losses = p0, tx.init(p0), []
        for k in range(K):
            if truncate is not None and k == K - truncate:  # cut the graph here
                p = {n: v.detach().requires_grad_() for n, v in p.items()}
                s = difopt.pytree.tree_map(
                    lambda t: t.detach() if torch.is_tensor(t) else t, s, namespace="difopt"
                )
                losses = [v.detach() for v in losses]
            loss = self.inner_loss(p, (x[k], y[k]), wd)
            grads = torch.autograd.grad(
                loss,
                list(p.values()),
                create_graph=not first_order,
                retain_graph=True,
                allow_unused=True,
            )
            updates, s = tx.update(dict(zip(p, grads)), s, params=p, inplace=False)
            p = difopt.apply_updates(p, updates, inplace=False)
            losses.append(loss)
        meta = self.meta_loss(p, torch.stack(losses), vx, vy)
        return grads_of(meta, self.meta_inputs(p0, lr, wd))

    def run(self, **kwargs: Any) -> tuple[list[Any], difopt_unroll.UnrollStats]:
        x, y, vx, vy, p0, lr, wd, tx = self.setup()
        step = difopt_unroll.transformation_step(lambda p, b: self.inner_loss(p, b, wd), tx)
        torch.manual_seed(7)
        meta_params = (lr, wd) if self.tensor_lr else (wd,)
        out = difopt_unroll.unroll(
            step, p0, tx.init(p0), K, batches=list(zip(x, y)), meta_params=meta_params, **kwargs
        )
        meta = self.meta_loss(out.params, out.losses, vx, vy)
        return grads_of(meta, self.meta_inputs(p0, lr, wd)), out.stats


class Net(torch.nn.Module):
    def __init__(self, one_tensor: bool, dropout: float) -> None:
        super().__init__()
        self.one_tensor = one_tensor
        self.dropout = dropout
        if one_tensor:
            self.lin = torch.nn.Linear(DIM, 1, bias=False)
        else:
            self.lin1 = torch.nn.Linear(DIM, HIDDEN)
            self.lin2 = torch.nn.Linear(HIDDEN, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.one_tensor:
            out = self.lin(x)
        else:
            out = self.lin2(torch.tanh(self.lin1(x)))
        return F.dropout(out, self.dropout, training=True) if self.dropout else out


@dataclasses.dataclass
class ObjectOriented:
    """A MetaOptimizer stepping an nn.Module."""

    name: str
    make_optimizer: Callable[[torch.nn.Module, Any], difopt.MetaOptimizer]  # (net, lr)
    tensor_lr: bool
    one_tensor: bool
    dropout: float = 0.0

    def setup(self) -> tuple[Any, ...]:
        torch.manual_seed(0)
        x, y = data(1)
        vx, vy = data(2, 1)
        net = Net(self.one_tensor, self.dropout).double()
        lr = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
        wd = torch.tensor(0.01, dtype=torch.float64, requires_grad=True)
        opt = self.make_optimizer(net, lr if self.tensor_lr else 0.05)
        return x, y, vx[0], vy[0], net, lr, wd, opt

    @staticmethod
    def inner_loss(net: Net, batch: Any, wd: torch.Tensor) -> torch.Tensor:
        x, y = batch
        reg = sum((v**2).sum() for v in net.parameters())
        return F.mse_loss(net(x), y) + wd * reg

    def meta_inputs(self, p0: list[torch.Tensor], lr: Any, wd: Any) -> list[torch.Tensor]:
        return [*p0, wd, *([lr] if self.tensor_lr else [])]

    def reference(self) -> list[Any]:
        x, y, vx, vy, net, lr, wd, opt = self.setup()
        p0 = list(net.parameters())
        torch.manual_seed(7)
        losses = []
        for k in range(K):
            loss = self.inner_loss(net, (x[k], y[k]), wd)
            opt.step(loss)
            losses.append(loss)
        meta = F.mse_loss(net(vx), vy) + 0.1 * torch.stack(losses).sum()
        return grads_of(meta, self.meta_inputs(p0, lr, wd))

    def run(self, **kwargs: Any) -> tuple[list[Any], difopt_unroll.UnrollStats]:
        x, y, vx, vy, net, lr, wd, opt = self.setup()
        p0 = list(net.parameters())
        torch.manual_seed(7)
        meta_params = (lr, wd) if self.tensor_lr else (wd,)
        out = difopt_unroll.unroll_module(
            opt,
            lambda b: self.inner_loss(net, b, wd),
            K,
            batches=list(zip(x, y)),
            meta_params=meta_params,
            **kwargs,
        )
        assert out.losses is not None
        meta = F.mse_loss(net(vx), vy) + 0.1 * out.losses.sum()
        return grads_of(meta, self.meta_inputs(p0, lr, wd)), out.stats


def grads_of(loss: torch.Tensor, inputs: list[torch.Tensor]) -> list[Any]:
    return list(torch.autograd.grad(loss, inputs, allow_unused=True))


def assert_close(got: list[Any], want: list[Any], rtol: float = 1e-10) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert (g is None) == (w is None), f"meta-gradient {i}: {g} vs {w}"
        if w is None:
            continue
        scale = max(w.abs().max().item(), 1e-30)
        err = (g - w).abs().max().item() / scale
        assert err <= rtol, f"meta-gradient {i}: relative error {err:.3g} > {rtol}"
        assert w.abs().max().item() > 0, f"meta-gradient {i} is zero: the test is vacuous"


FUNCTIONAL = [
    Functional("adam-mlp-init-and-regulariser", lambda lr: difopt.adam(lr=lr), False, False),
    Functional("sgd-momentum-tensor-lr", lambda lr: difopt.sgd(lr=lr, momentum=0.9), True, False),
    Functional("adam-tensor-lr", lambda lr: difopt.adam(lr=lr), True, False),
    Functional("sgd-one-tensor-tensor-lr", lambda lr: difopt.sgd(lr=lr), True, True),
]

INT_STATE_FUNCTIONAL = [
    # Integer state leaves (step counters) come before floating-point ones (the moments).
    Functional(
        "chain-schedule-trace-scale-tensor-lr",
        lambda lr: difopt.chain(
            scale_by_schedule(lambda count: lr / (1.0 + 0.1 * count)), trace(0.9), scale(-1.0)
        ),
        True,
        False,
    ),
    Functional(
        "chain-adam-trace-scale",
        lambda lr: difopt.chain(scale_by_adam(), trace(0.9), scale(-0.1)),
        False,
        False,
    ),
]


def _two_param_groups(net: torch.nn.Module, lr: Any) -> difopt.MetaOptimizer:
    opt = difopt.MetaAdam(net.lin1, lr=lr)
    opt.add_param_group(net.lin2)  # the state: [moments, counters] of group 1, then of group 2
    return opt


OBJECT_ORIENTED = [
    ObjectOriented(
        "MetaAdam-mlp-init-and-regulariser", lambda n, lr: difopt.MetaAdam(n, lr=lr), False, False
    ),
    ObjectOriented(
        "MetaSGD-momentum-tensor-lr",
        lambda n, lr: difopt.MetaSGD(n, lr=lr, momentum=0.9),
        True,
        False,
    ),
    ObjectOriented("MetaAdam-tensor-lr", lambda n, lr: difopt.MetaAdam(n, lr=lr), True, False),
]
INT_STATE_OBJECT_ORIENTED = [
    ObjectOriented("MetaAdam-two-param-groups", _two_param_groups, True, False)
]
POLICIES: list[tuple[str, dict[str, Any]]] = [
    ("none", {"policy": "none"}),
    ("sqrt", {"policy": "sqrt"}),
    ("every-7", {"policy": difopt_unroll.Every(7)}),
    ("every-50", {"policy": difopt_unroll.Every(50)}),
    ("binomial-1", {"policy": "binomial", "budget": 1}),
    ("binomial-4", {"policy": difopt_unroll.Binomial(4)}),
    ("budget-10", {"budget": 10}),
]
