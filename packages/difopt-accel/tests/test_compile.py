"""torch.compile traces the fused op (fake kernels, autograd) without graph breaks."""

from __future__ import annotations

import torch
from torch._dynamo.testing import CompileCounterWithBackend

import difopt_accel
from _problems import SHAPES


def _step(params, grads, mu, nu, count):
    count = count + 1
    params, mu, nu = difopt_accel.adam(grads, mu, nu, count, params=params, factor=-1e-2)
    return params, mu, nu, count


def _step_inplace(params, grads, mu, nu, count):
    count.add_(1)
    difopt_accel.adam_(params, mu, nu, grads, count, factor=-1e-2)
    return params


def _inputs(requires_grad: bool = False):
    params = [torch.randn(s, requires_grad=requires_grad) for s in SHAPES]
    grads = [torch.randn(s) for s in SHAPES]
    mu = [torch.zeros(s) for s in SHAPES]
    nu = [torch.zeros(s) for s in SHAPES]
    return params, grads, mu, nu, torch.zeros((), dtype=torch.int64)


def test_functional_step_has_no_graph_break() -> None:
    explanation = torch._dynamo.explain(_step)(*_inputs())
    assert explanation.graph_break_count == 0
    assert explanation.graph_count == 1


def test_compiled_functional_step_matches_eager() -> None:
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(_step, backend=counter, fullgraph=True)
    args = _inputs()
    eager = _step(*args)
    traced = compiled(*args)
    for a, b in zip(eager[:3], traced[:3]):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=0, atol=0)
    # the step counter is a tensor: a second step reuses the graph (no recompilation)
    params, mu, nu, count = traced
    again = compiled(params, args[1], mu, nu, count)
    assert int(again[3]) == 2
    assert counter.frame_count == 1


def test_compiled_step_differentiates() -> None:
    torch._dynamo.reset()

    def loss(params, grads, mu, nu, count):
        new_params, *_ = _step(params, grads, mu, nu, count)
        return sum((p**2).sum() for p in new_params)

    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    args = _inputs(requires_grad=True)
    expected = torch.autograd.grad(loss(*args), args[0])
    got = torch.autograd.grad(compiled(*args), args[0])
    for x, y in zip(expected, got):
        torch.testing.assert_close(x, y)


def test_compiled_inplace_step_matches_eager() -> None:
    torch._dynamo.reset()
    compiled = torch.compile(_step_inplace, backend="aot_eager", fullgraph=True)
    a = _inputs()
    b = tuple([x.clone() for x in xs] if isinstance(xs, list) else xs.clone() for xs in a)
    _step_inplace(*a)
    compiled(*b)
    for xs, ys in zip(a, b):
        for x, y in zip(xs if isinstance(xs, list) else [xs], ys if isinstance(ys, list) else [ys]):
            torch.testing.assert_close(x, y, rtol=0, atol=0)
