"""Behaviours TorchOpt code relies on beyond names: identity chains, in-place hooks, futures,
MetaGradientModule's attribute rules and TorchOpt's low-level ``AdamOp``."""

from __future__ import annotations

import math
import re

import pytest
import torch

import difopt
from difopt.accelerated_op.adam_op import AdamOp


def test_an_empty_chain_is_the_identity():
    identity = difopt.base.identity()
    assert difopt.chain() == identity
    assert identity == difopt.chain(identity, difopt.chain(identity))
    assert hash(difopt.chain()) == hash(identity)
    assert isinstance(identity, difopt.base.IdentityGradientTransformation)
    assert difopt.chain(difopt.transform.scale(2.0)) != identity


def test_nan_to_num_in_place_returns_the_same_tensors():
    tx = difopt.transform.nan_to_num(nan=0.0, posinf=1.0, neginf=-1.0)
    x = torch.tensor([math.nan, math.inf, -math.inf, 2.0])
    out, _ = tx.update(x, tx.init(x), inplace=True)
    assert out is x
    torch.testing.assert_close(x, torch.tensor([0.0, 1.0, -1.0, 2.0]))
    y = torch.tensor([math.nan])
    out, _ = tx.update(y, tx.init(y), inplace=False)
    assert out is not y and math.isnan(float(y))
    leaf = torch.tensor([math.nan], requires_grad=True)  # never written in place
    out, _ = tx.update(leaf, tx.init(leaf), inplace=True)
    assert out is not leaf and float(out.detach()) == 0.0


def test_tree_wait_resolves_chained_futures():
    tree = {"a": torch.tensor(2.0), "b": (torch.tensor(3.0),)}
    futures = difopt.pytree.tree_map(lambda _: torch.futures.Future(), tree)
    chained = difopt.pytree.tree_map(lambda f: f.then(lambda g: g.wait() ** 2), futures)
    difopt.pytree.tree_map(lambda f, x: f.set_result(x), futures, tree)
    assert difopt.pytree.tree_wait(chained) == {"a": 4.0, "b": (9.0,)}


class _Holder(difopt.nn.MetaGradientModule):
    def __init__(self, meta: torch.Tensor) -> None:
        super().__init__()
        self.meta = meta


def test_tensors_that_require_grad_become_parameters_or_meta_parameters():
    meta = torch.ones(2, requires_grad=True)
    m = _Holder(meta)
    inner = meta * 2.0  # a non-leaf tensor computed from the meta-parameter
    m.inner = inner
    m.plain = torch.zeros(2)  # requires no grad: a plain attribute
    assert dict(m.named_meta_parameters()) == {"meta": meta}
    assert [n for n, _ in m.named_parameters()] == ["inner"] and m.inner is inner
    assert "plain" not in m._parameters and "plain" not in m._buffers and m.plain is not None
    m.inner = None
    assert m._parameters["inner"] is None
    del m.inner
    assert "inner" not in m._parameters
    with pytest.raises(TypeError, match="cannot assign 'torch.FloatTensor' as meta-parameter"):
        m.meta = torch.zeros(2)


def test_register_parameter_accepts_tensors_and_checks_names():
    meta = torch.ones(1, requires_grad=True)
    m = _Holder(meta)
    t = torch.zeros(1, requires_grad=True)
    m.register_parameter("t", t)
    assert m.t is t
    with pytest.raises(KeyError, match=re.escape("parameter name can't contain '.'")):
        m.register_parameter("a.b", t)
    with pytest.raises(KeyError, match=re.escape("parameter name can't be empty string ''")):
        m.register_parameter("", t)
    with pytest.raises(TypeError, match=re.escape("parameter name should be a string. Got")):
        m.register_meta_parameter(b"x", t)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="requires_grad=False"):
        m.register_parameter("u", torch.zeros(1))
    with pytest.raises(ValueError, match="is a meta-parameter"):
        m.register_parameter("again", meta)


def test_assigning_before_module_init_is_a_clear_error():
    class NoInit(difopt.nn.MetaGradientModule):
        def __init__(self, x: torch.Tensor) -> None:
            self.x = x

    with pytest.raises(AttributeError, match=re.escape("before Module.__init__() call")):
        NoInit(torch.ones(1, requires_grad=True))


def _adam_direction(gs: list[torch.Tensor], b1=0.9, b2=0.999, eps=1e-8) -> torch.Tensor:
    """Closed form of Adam's direction after len(gs) steps (float64)."""
    t = len(gs)
    mu = sum((1 - b1) * b1 ** (t - 1 - i) * g for i, g in enumerate(gs))
    nu = sum((1 - b2) * b2 ** (t - 1 - i) * g * g for i, g in enumerate(gs))
    return (mu / (1 - b1**t)) / ((nu / (1 - b2**t)).sqrt() + eps)


@pytest.mark.filterwarnings("ignore::difopt.registry.PluginWarning")
@pytest.mark.parametrize("inplace", [True, False])
def test_adam_op_matches_the_closed_form(inplace):
    g1 = torch.tensor([1.0, -2.0, 0.0], dtype=torch.float64)
    g2 = torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64)
    op = AdamOp(inplace=inplace)
    mu, nu = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    mu, nu, d1 = op(mu, nu, g1.clone(), count=1)
    mu, nu, d2 = op(mu, nu, g2.clone(), count=2)
    torch.testing.assert_close(d1, _adam_direction([g1]))
    torch.testing.assert_close(d2, _adam_direction([g1, g2]))
    assert op(mu, nu, None, count=3) == (mu, nu, None)
    with pytest.raises(ValueError, match="'count'"):
        op(mu, nu, g1, count=0)
