"""Lion and Adan against their papers' update rules, written out here independently."""

from __future__ import annotations

import math

import pytest
import torch

import difopt
from core_testing import make_data, make_mlp, max_rel_err, mse

STEPS = 20


def lion_reference(params, grads_fn, lr, b1, b2, wd, steps):
    """Chen et al. 2023, Algorithm 2 (Lion with decoupled weight decay)."""
    params = [p.detach().clone() for p in params]
    m = [torch.zeros_like(p) for p in params]
    for _ in range(steps):
        grads = grads_fn(params)
        for i, (p, g) in enumerate(zip(params, grads)):
            c = b1 * m[i] + (1 - b1) * g
            params[i] = p - lr * (torch.sign(c) + wd * p)
            m[i] = b2 * m[i] + (1 - b2) * g
    return params


def adan_reference(params, grads_fn, lr, betas, eps, wd, no_prox, steps):
    """Xie et al. 2022, Algorithm 1 with bias correction, as in the authors' release.

    m_k = b1 m + (1-b1) g_k; v_k = b2 v + (1-b2)(g_k - g_{k-1}); n_k = b3 n + (1-b3)[g_k +
    b2 (g_k - g_{k-1})]^2 (difference 0 at the first step); eta = lr / (sqrt(n_hat) + eps);
    theta = (theta - eta (m_hat + b2 v_hat)) / (1 + lr wd).
    """
    b1, b2, b3 = betas
    params = [p.detach().clone() for p in params]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    n = [torch.zeros_like(p) for p in params]
    prev = None
    for k in range(1, steps + 1):
        grads = grads_fn(params)
        for i, (p, g) in enumerate(zip(params, grads)):
            d = torch.zeros_like(g) if prev is None else g - prev[i]
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * d
            n[i] = b3 * n[i] + (1 - b3) * (g + b2 * d) ** 2
            m_hat = m[i] / (1 - b1**k)
            v_hat = v[i] / (1 - b2**k)
            n_hat = n[i] / (1 - b3**k)
            step = (m_hat + b2 * v_hat) / (n_hat.sqrt() + eps)
            if no_prox:
                params[i] = p * (1 - lr * wd) - lr * step
            else:
                params[i] = (p - lr * step) / (1 + lr * wd)
        prev = [g.clone() for g in grads]
    return params


def _grads_fn(model, data):
    names = [n for n, _ in model.named_parameters()]

    def grads(params):
        ps = [p.detach().requires_grad_() for p in params]
        out = torch.func.functional_call(model, dict(zip(names, ps)), (data[0],))
        loss = ((out - data[1]) ** 2).mean()
        return torch.autograd.grad(loss, ps)

    return grads


def _run_classic(cls, kw):
    model, data = make_mlp(), make_data()
    opt = cls(model.parameters(), **kw)
    for _ in range(STEPS):
        opt.zero_grad()
        mse(model, data).backward()
        opt.step()
    return list(model.parameters())


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_lion_matches_paper(wd):
    model, data = make_mlp(), make_data()
    expected = lion_reference(
        list(model.parameters()), _grads_fn(model, data), 1e-3, 0.9, 0.99, wd, STEPS
    )
    got = _run_classic(difopt.Lion, dict(lr=1e-3, weight_decay=wd))
    assert max_rel_err(got, expected) < 1e-6


@pytest.mark.parametrize("no_prox", [False, True])
@pytest.mark.parametrize("wd", [0.0, 0.02])
def test_adan_matches_paper(wd, no_prox):
    model, data = make_mlp(), make_data()
    expected = adan_reference(
        list(model.parameters()),
        _grads_fn(model, data),
        1e-2,
        (0.98, 0.92, 0.99),
        1e-8,
        wd,
        no_prox,
        STEPS,
    )
    got = _run_classic(difopt.Adan, dict(lr=1e-2, weight_decay=wd, no_prox=no_prox))
    assert max_rel_err(got, expected) < 1e-6


def test_lion_and_adan_functional_equal_classic():
    for fn, cls, kw in (
        (difopt.lion, difopt.Lion, dict(lr=1e-3, weight_decay=0.1)),
        (difopt.adan, difopt.Adan, dict(lr=1e-2, weight_decay=0.02)),
    ):
        model, data = make_mlp(), make_data()
        expected = _run_classic(cls, kw)
        grads_fn = _grads_fn(model, data)
        params = [p.detach().clone() for p in model.parameters()]
        impl = fn(**kw)
        state = impl.init(params)
        for _ in range(STEPS):
            updates, state = impl.update(
                list(grads_fn(params)), state, params=params, inplace=False
            )
            params = difopt.apply_updates(params, updates, inplace=False)
        assert max_rel_err(params, expected) < 1e-6


def test_lion_update_is_a_sign():
    impl = difopt.lion(lr=0.5)
    p = [torch.randn(10, dtype=torch.float64)]
    state = impl.init(p)
    updates, _ = impl.update([torch.randn(10, dtype=torch.float64)], state, params=p)
    assert torch.all(updates[0].abs() == 0.5)
    assert not math.isnan(updates[0].sum().item())
