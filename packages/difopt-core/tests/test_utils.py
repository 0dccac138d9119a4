"""extract/recover state, stop_gradient, module_clone, MetaGradientModule, reparametrize."""

from __future__ import annotations

import pytest
import torch

import difopt


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1)
    ).double()


def test_extract_policies():
    net = _net()
    ref = difopt.extract_state_dict(net, by="reference")
    copy = difopt.extract_state_dict(net, by="copy")
    deep = difopt.extract_state_dict(net, by="deepcopy")
    w = net[0].weight
    assert ref.params[0]["weight"] is w
    assert copy.params[0]["weight"] is not w and copy.params[0]["weight"].grad_fn is not None
    assert deep.params[0]["weight"].grad_fn is None and deep.params[0]["weight"].requires_grad
    assert len(ref.buffers) == 1 and "running_mean" in ref.buffers[0]
    assert difopt.extract_state_dict(net, with_buffers=False).buffers == ()
    for alias, policy in (("ref", ref), ("clone", copy), ("deepclone", deep)):
        again = difopt.extract_state_dict(net, by=alias)
        assert (again.params[0]["weight"] is w) == (policy is ref)
    vis = difopt.extract_state_dict(net, enable_visual=True, visual_prefix="step0.")
    assert set(vis.visual_contents) == {f"step0.{n}" for n, _ in net.named_parameters()}


def test_maml_style_extract_recover_restores_and_gradients_flow():
    net = _net()
    x = torch.randn(8, 3, dtype=torch.float64)
    inner = difopt.MetaSGD(net, lr=0.1)
    w0 = net[0].weight
    net_state = difopt.extract_state_dict(net, by="reference", detach_buffers=True)
    opt_state = difopt.extract_state_dict(inner, by="reference")
    for _ in range(2):
        inner.step(net(x).pow(2).mean())
    assert net[0].weight is not w0
    net(x).sum().backward()
    assert w0.grad is not None and w0.grad.abs().sum() > 0
    difopt.recover_state_dict(net, net_state)
    difopt.recover_state_dict(inner, opt_state)
    assert net[0].weight is w0


def test_recover_rejects_foreign_state():
    net = _net()
    with pytest.raises(ValueError, match="containers"):
        difopt.recover_state_dict(torch.nn.Linear(2, 2), difopt.extract_state_dict(net))
    with pytest.raises(TypeError, match="'state'"):
        difopt.recover_state_dict(net, {"weight": torch.zeros(1)})


def test_stop_gradient_cuts_history_in_place():
    net = _net()
    inner = difopt.MetaAdam(net, lr=0.1)
    inner.step(net(torch.randn(8, 3, dtype=torch.float64)).pow(2).mean())
    w = net[0].weight
    assert w.grad_fn is not None
    difopt.stop_gradient(net)
    difopt.stop_gradient(inner)
    assert net[0].weight is w and w.grad_fn is None and w.requires_grad
    assert all(t.grad_fn is None for t in difopt.pytree.tree_leaves(inner.state_groups))
    tree = {"a": torch.ones(2, requires_grad=True) * 2}
    difopt.module_detach_(tree)
    assert tree["a"].grad_fn is None


def test_module_clone_policies():
    net = _net()
    clone = difopt.module_clone(net, by="copy")
    assert clone is not net and clone[0].weight is not net[0].weight
    clone[0].weight.sum().backward()
    assert torch.equal(net[0].weight.grad, torch.ones_like(net[0].weight))
    deep = difopt.module_clone(net, by="deepcopy")
    assert deep[0].weight.grad_fn is None
    torch.testing.assert_close(
        deep(torch.ones(2, 3, dtype=torch.float64)), net(torch.ones(2, 3, dtype=torch.float64))
    )
    shared = difopt.module_clone(net, by="reference")
    assert shared[0].weight is net[0].weight
    tree = difopt.module_clone({"a": net[0].weight}, by="deepcopy")
    assert tree["a"] is not net[0].weight


class _Inner(difopt.nn.MetaGradientModule):
    def __init__(self, prior: torch.Tensor, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.prior = prior
        self.encoder = encoder
        self.head = torch.nn.Linear(2, 1).double()
        self.w = torch.nn.Parameter(prior.detach().clone())

    def forward(self, x):
        return self.head(self.encoder(x)) + (self.w - self.prior).pow(2).sum()


def test_meta_gradient_module_separates_meta_parameters():
    prior = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    encoder = torch.nn.Linear(3, 2).double()
    m = _Inner(prior, encoder)
    names = [n for n, _ in m.named_parameters()]
    meta_names = [n for n, _ in m.named_meta_parameters()]
    assert names == ["w", "head.weight", "head.bias"]
    assert meta_names == ["prior", "encoder.weight", "encoder.bias"]
    assert list(m.meta_children()) == [encoder]
    assert m.prior is prior
    # An inner optimizer only touches the inner parameters; meta-gradients reach the prior.
    inner = difopt.MetaSGD(m, lr=0.1)
    x = torch.randn(4, 3, dtype=torch.float64)
    inner.step(m(x).pow(2).mean() + (m.w - 1).pow(2).sum())
    (m.w.sum()).backward()
    assert prior.grad is not None
    assert encoder.weight.grad is not None


def test_reparametrize_and_swap_state():
    net = torch.nn.Linear(2, 1).double()
    x = torch.ones(1, 2, dtype=torch.float64)
    zeros = {
        "weight": torch.zeros(1, 2, dtype=torch.float64),
        "bias": torch.zeros(1, dtype=torch.float64),
    }
    before = net(x)
    with difopt.nn.reparametrize(net, zeros):
        assert net(x).item() == 0.0
    torch.testing.assert_close(net(x), before)
    assert difopt.nn.reparameterize is difopt.nn.reparametrize
    with pytest.raises(KeyError, match="misses"):
        difopt.nn.swap_state(net, {"weight": zeros["weight"]})
    old = difopt.nn.swap_state(net, {"bias": zeros["bias"]}, allow_missing=True)
    assert net.bias is zeros["bias"] and "bias" in old
    with pytest.raises(KeyError, match="not"):
        difopt.nn.swap_state(net, {"nope": zeros["bias"]}, allow_missing=True)


def test_swap_state_reaches_meta_parameters_and_meta_modules():
    prior = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    encoder = torch.nn.Linear(3, 2).double()
    m = _Inner(prior, encoder)
    new_prior = torch.ones(3, dtype=torch.float64)
    new_w = torch.zeros(2, 3, dtype=torch.float64)
    with difopt.nn.reparametrize(
        m, {"prior": new_prior, "encoder.weight": new_w}, allow_missing=True
    ):
        assert m.prior is new_prior and m.encoder.weight is new_w
        assert torch.equal(
            m.encoder(torch.ones(1, 3, dtype=torch.float64)), encoder.bias.detach()[None]
        )
    assert m.prior is prior and isinstance(m.encoder.weight, torch.nn.Parameter)
    with pytest.raises(KeyError, match="encoder.nope"):
        difopt.nn.swap_state(m, {"encoder.nope": new_w}, allow_missing=True)
    with pytest.raises(KeyError, match="missing.weight"):
        difopt.nn.swap_state(m, {"missing.weight": new_w}, allow_missing=True)
