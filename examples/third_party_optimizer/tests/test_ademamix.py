"""difopt-ademamix against an independent implementation (pytorch-optimizer's AdEMAMix), and
its three forms as difopt generates them from the one entry point.

difopt-core's conformance suite (packages/difopt-core/tests/test_conformance.py) runs over
this optimizer in the same session (``nox -s third_party``), as over every registered one:
the forms agree, a zero learning rate moves nothing, a resumed run is bit-identical, missing
gradients are left alone, wrong shapes are refused, and the meta-gradient through two steps
passes gradcheck.
"""

from __future__ import annotations

import difopt_ademamix
import pytest
import torch
from pytorch_optimizer import AdEMAMix

import difopt

CASES = {
    "defaults": {},
    "weight decay": {"weight_decay": 0.05},
    "warm-up": {"t_alpha_beta3": 10.0},
    "maximize": {"maximize": True, "alpha": 2.0},
}


def _problem() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    x, y = torch.randn(16, 5), torch.randn(16, 2)
    return net.double(), x.double(), y.double()


def _train(make_opt, steps: int = 30) -> list[torch.Tensor]:
    net, x, y = _problem()
    opt = make_opt(net.parameters())
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()
    return [p.detach() for p in net.parameters()]


def _reference_kwargs(kw: dict) -> dict:
    out = dict(kw)
    if "weight_decay" in out:
        out["weight_decouple"] = True  # decoupled, as AdamW (and this package)
    return out


@pytest.mark.parametrize("case", CASES)
def test_classic_form_matches_pytorch_optimizer(case: str) -> None:
    kw = CASES[case]
    ours = _train(lambda ps: difopt.Ademamix(ps, lr=1e-2, **kw))
    theirs = _train(lambda ps: AdEMAMix(ps, lr=1e-2, foreach=False, **_reference_kwargs(kw)))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_functional_form_matches_pytorch_optimizer(case: str) -> None:
    kw = CASES[case]
    net, x, y = _problem()
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    tx = difopt.ademamix(lr=1e-2, **kw)
    state = tx.init(params)
    for _ in range(30):
        leaves = {k: v.requires_grad_() for k, v in params.items()}
        loss = torch.nn.functional.mse_loss(torch.func.functional_call(net, leaves, (x,)), y)
        grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))
        updates, state = tx.update(grads, state, params=params, inplace=False)
        params = {
            k: v.detach() for k, v in difopt.apply_updates(params, updates, inplace=False).items()
        }
    theirs = _train(lambda ps: AdEMAMix(ps, lr=1e-2, foreach=False, **_reference_kwargs(kw)))
    for a, b in zip(params.values(), theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_the_entry_point_gives_three_forms() -> None:
    assert difopt.ademamix is difopt_ademamix.ademamix
    assert difopt.Ademamix.alias is difopt_ademamix.ademamix
    assert difopt.MetaAdemamix.alias is difopt_ademamix.ademamix
    assert isinstance(difopt.Ademamix([torch.zeros(2, requires_grad=True)]), torch.optim.Optimizer)
    info = [p for p in difopt.plugins() if p.name == "ademamix"]
    assert info and info[0].distribution == "difopt-ademamix"


@pytest.mark.parametrize("inplace", [True, False])
def test_the_fused_apply_equals_update_then_add(inplace: bool) -> None:
    t = difopt_ademamix.scale_by_ademamix(t_alpha_beta3=5.0)
    fused = t.properties.apply_scaled
    assert fused is not None
    gen = torch.Generator().manual_seed(3)
    p1 = [
        torch.randn(3, 2, dtype=torch.float64, generator=gen),
        torch.randn(4, dtype=torch.float64, generator=gen),
    ]
    p2 = [p.clone() for p in p1]
    s1, s2 = t.init(p1), t.init(p2)
    for _ in range(4):
        g = [torch.randn_like(p) for p in p1]
        u, s1 = t.update([x.clone() for x in g], s1, params=p1, inplace=inplace)
        p1 = [p + -0.1 * x for p, x in zip(p1, u)]
        p2, s2 = fused(g, s2, params=p2, factor=-0.1, inplace=inplace)
    for a, b in zip(p1, p2):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14)
    assert int(s2.count[0]) == 4


def test_bad_hyper_parameters_name_the_argument() -> None:
    with pytest.raises(ValueError, match="'betas'"):
        difopt.ademamix(betas=(0.9, 0.999))
    with pytest.raises(ValueError, match="'b3'"):
        difopt.ademamix(betas=(0.9, 0.999, 1.5))
    with pytest.raises(ValueError, match="'alpha'"):
        difopt.ademamix(alpha=-1.0)
    with pytest.raises(ValueError, match="'t_alpha_beta3'"):
        difopt.ademamix(t_alpha_beta3=0.0)
