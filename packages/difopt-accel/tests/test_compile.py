"""torch.compile traces the fused ops (fake kernels, autograd) without graph breaks."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

import difopt
import difopt_accel
from _problems import SHAPES

# A functional step: (params, grads, mu, nu, count) -> the same, updated.


def _adam_step(params, grads, mu, nu, count):
    count = count + 1
    params, mu, nu = difopt_accel.adam(grads, mu, nu, count, params=params, factor=-1e-2)
    return params, mu, nu, count


def _rms_step(params, grads, mu, nu, count):
    params, mu, nu = difopt_accel.rms(grads, [], nu, params=params, factor=-1e-2)
    return params, mu, nu, count


def _rms_centered_step(params, grads, mu, nu, count):
    params, mu, nu = difopt_accel.rms(grads, mu, nu, params=params, factor=-1e-2, centered=True)
    return params, mu, nu, count


def _trace_step(params, grads, mu, nu, count):
    count = count + 1  # the first call is the first step: the buffer becomes the update
    params, mu = difopt_accel.trace_op(grads, mu, count, params=params, factor=-1e-2)
    return params, mu, nu, count


def _trace_nesterov_step(params, grads, mu, nu, count):
    count = count + 1
    params, mu = difopt_accel.trace_op(
        grads, mu, count, params=params, dampening=0.0, nesterov=True, factor=-1e-2
    )
    return params, mu, nu, count


STEPS = {
    "adam": _adam_step,
    "rms": _rms_step,
    "rms-centered": _rms_centered_step,
    "trace": _trace_step,
    "trace-nesterov": _trace_nesterov_step,
}


# An in-place step: (params, grads, mu, nu, count) -> params, updated in place.


def _adam_inplace_step(params, grads, mu, nu, count):
    count.add_(1)
    difopt_accel.adam_(params, mu, nu, grads, count, factor=-1e-2)
    return params


def _rms_inplace_step(params, grads, mu, nu, count):
    difopt_accel.rms_(params, mu, nu, grads, factor=-1e-2, centered=True)
    return params


def _trace_inplace_step(params, grads, mu, nu, count):
    count.add_(1)
    difopt_accel.trace_(params, mu, grads, count, nesterov=True, factor=-1e-2)
    return params


INPLACE_STEPS = {
    "adam_": _adam_inplace_step,
    "rms_": _rms_inplace_step,
    "trace_": _trace_inplace_step,
}


def _inputs(requires_grad: bool = False):
    params = [torch.randn(s, requires_grad=requires_grad) for s in SHAPES]
    grads = [torch.randn(s) for s in SHAPES]
    mu = [torch.zeros(s) for s in SHAPES]
    nu = [torch.zeros(s) for s in SHAPES]
    return params, grads, mu, nu, torch.zeros((), dtype=torch.int64)


def _two_steps(step, params, grads, mu, nu, count):
    params, mu, nu, count = step(params, grads, mu, nu, count)
    return step(params, grads, mu, nu, count)


def _flat(xs) -> list[torch.Tensor]:
    return [x for item in xs for x in (item if isinstance(item, list) else [item])]


@pytest.mark.parametrize("name", STEPS)
def test_functional_step_has_no_graph_break(name: str) -> None:
    explanation = torch._dynamo.explain(STEPS[name])(*_inputs())
    assert explanation.graph_break_count == 0
    assert explanation.graph_count == 1


@pytest.mark.parametrize("name", STEPS)
def test_compiled_functional_step_matches_eager(name: str) -> None:
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(STEPS[name], backend=counter, fullgraph=True)
    args = _inputs()
    eager = _two_steps(STEPS[name], *args)
    traced = _two_steps(compiled, *args)
    for x, y in zip(_flat(eager), _flat(traced)):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    # the step counter is a tensor: the second step (a later one for trace) reuses the graph
    assert int(traced[3]) == int(eager[3])
    assert counter.frame_count == 1


@pytest.mark.parametrize("name", STEPS)
def test_compiled_step_differentiates(name: str) -> None:
    torch._dynamo.reset()

    def loss(params, grads, mu, nu, count):
        new_params, *_ = _two_steps(STEPS[name], params, grads, mu, nu, count)
        return sum((p**2).sum() for p in new_params)

    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    args = _inputs(requires_grad=True)
    expected = torch.autograd.grad(loss(*args), args[0])
    got = torch.autograd.grad(compiled(*args), args[0])
    for x, y in zip(expected, got):
        torch.testing.assert_close(x, y)


@pytest.mark.parametrize("name", INPLACE_STEPS)
def test_compiled_inplace_step_matches_eager(name: str) -> None:
    step = INPLACE_STEPS[name]
    torch._dynamo.reset()
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    a = _inputs()
    b = tuple([x.clone() for x in xs] if isinstance(xs, list) else xs.clone() for xs in a)
    step(*a)
    compiled(*b)
    for x, y in zip(_flat(a), _flat(b)):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


# A classic step with use_accelerated_op=True, compiled whole: the fused op is in the graph
# (the fusability checks trace, the step counters are not read), against torch.optim.

CLASSIC = {
    "adam": (difopt.Adam, torch.optim.Adam, dict(lr=1e-2, weight_decay=0.1)),
    "sgd-momentum": (difopt.SGD, torch.optim.SGD, dict(lr=1e-2, momentum=0.9)),
    "rmsprop": (difopt.RMSProp, torch.optim.RMSprop, dict(lr=1e-2, centered=True)),
}


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)
    ).double()


def _classic_steps(opt, model, run, skip=()) -> None:
    x = torch.randn(9, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for k in range(6):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        if k in skip:
            model[0].weight.grad = None
        run()


@pytest.mark.parametrize("name", CLASSIC)
def test_compiled_classic_accelerated_step_is_one_graph_with_the_fused_op(name: str) -> None:
    ours_cls, torch_cls, kw = CLASSIC[name]
    net, ref = _mlp(), _mlp()
    opt = ours_cls(net.parameters(), use_accelerated_op=True, **kw)
    targets: list[str] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        targets.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    torch._dynamo.reset()
    counter = CompileCounterWithBackend(backend)
    _classic_steps(opt, net, torch.compile(opt.step, backend=counter))
    ropt = torch_cls(ref.parameters(), **kw)
    _classic_steps(ropt, ref, ropt.step)
    assert counter.frame_count == 1  # one graph: no break, no recompilation
    assert any(t.startswith("difopt_accel.") for t in targets), sorted(set(targets))
    for p, q in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_classic_accelerated_step_after_missed_steps(backend: str) -> None:
    """The first weight has no gradient at steps 1 and 2, so the counters differ; the
    compiled step runs eagerly from then on and stays equal to torch.optim."""
    net, ref = _mlp(), _mlp()
    opt = difopt.Adam(net.parameters(), lr=1e-2, use_accelerated_op=True)
    ropt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    torch._dynamo.reset()
    _classic_steps(opt, net, torch.compile(opt.step, backend=backend), skip=(1, 2))
    _classic_steps(ropt, ref, ropt.step, skip=(1, 2))
    for p, q in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)
