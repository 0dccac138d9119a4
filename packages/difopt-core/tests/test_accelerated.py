"""``use_accelerated_op=True``: which path each optimizer family takes, and that it is exact.

The fused-op provider here is the test fixture ``difopt-fixture-ops`` (tests/fixtures): the
pure transformations behind the ``sgd`` and ``rmsprop`` entry points, counting their calls, and
no ``scale_by_stddev``. difopt-accel's own tests check its native ops against the pure path.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import difopt
from difopt import registry

FIXTURES = {p.distribution for p in registry.plugins()}
needs_ops_fixture = pytest.mark.skipif(
    "difopt-fixture-ops" not in FIXTURES or "difopt-accel" in FIXTURES,
    reason="needs the difopt-fixture-ops provider (the nox session installs it) and no "
    "difopt-accel",
)


def _provider():
    return registry.op_provider("sgd")


def _grads(step: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(step)
    return [
        torch.randn(4, 3, generator=gen, dtype=torch.float64),
        torch.zeros(5, dtype=torch.float64),
    ]


def _run_classic(cls, steps: int = 5, **kwargs) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    params = [
        torch.nn.Parameter(torch.randn(4, 3, generator=gen, dtype=torch.float64)),
        torch.nn.Parameter(torch.randn(5, generator=gen, dtype=torch.float64)),
    ]
    opt = cls(params, **kwargs)
    for step in range(steps):
        for p, g in zip(params, _grads(step)):
            p.grad = g
        opt.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize(
    ("cls", "kwargs", "op"),
    [
        (difopt.SGD, dict(lr=0.1, momentum=0.9), "trace"),
        (difopt.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1), "trace"),
        (difopt.RMSProp, dict(lr=0.01), "scale_by_rms"),
        (difopt.RMSProp, dict(lr=0.01, momentum=0.5), "scale_by_rms"),
    ],
)
@needs_ops_fixture
def test_classic_step_uses_the_provider_and_matches_pure(cls, kwargs, op):
    before = _provider().calls[op]
    fused = _run_classic(cls, use_accelerated_op=True, **kwargs)
    assert _provider().calls[op] == before + 5
    pure = _run_classic(cls, **kwargs)
    torch.testing.assert_close(fused, pure)  # same values; operation order may differ


@needs_ops_fixture
def test_momentum_of_rmsprop_goes_through_the_sgd_provider_too():
    before = _provider().calls["trace"]
    _run_classic(difopt.RMSProp, lr=0.01, momentum=0.5, use_accelerated_op=True)
    assert _provider().calls["trace"] == before + 5


@needs_ops_fixture
def test_meta_step_uses_the_provider_and_matches_pure():
    def meta_grad(use_accelerated_op: bool) -> torch.Tensor:
        torch.manual_seed(0)
        net = torch.nn.Linear(3, 1).double()
        x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
        opt = difopt.MetaSGD(net, lr=0.1, momentum=0.9, use_accelerated_op=use_accelerated_op)
        init = [p for p in net.parameters()]
        for _ in range(3):
            opt.step(torch.nn.functional.mse_loss(net(x), y))
        loss = torch.nn.functional.mse_loss(net(x), y)
        return torch.autograd.grad(loss, init)[0]

    before = _provider().calls["trace"]
    fused = meta_grad(True)
    assert _provider().calls["trace"] == before + 3
    torch.testing.assert_close(fused, meta_grad(False), rtol=0, atol=0)


@needs_ops_fixture
def test_a_provider_without_the_method_warns_once_and_runs_pure():
    registry._warned.discard("accelerated-op-missing-rmsprop.scale_by_stddev")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        tx = difopt.rmsprop(0.01, centered=True, use_accelerated_op=True)
        difopt.rmsprop(0.01, centered=True, use_accelerated_op=True)
    messages = [str(x.message) for x in w if "scale_by_stddev" in str(x.message)]
    assert len(messages) == 1 and "difopt_fixture_ops.ops" in messages[0], messages
    fused = _run_classic(difopt.RMSProp, lr=0.01, centered=True, use_accelerated_op=True)
    pure = _run_classic(difopt.RMSProp, lr=0.01, centered=True)
    torch.testing.assert_close(fused, pure)  # same values; operation order may differ
    assert "scale_by_accelerated_stddev" in repr(tx)


@needs_ops_fixture
def test_an_unsupported_device_warns_once_and_runs_pure():
    registry._warned.discard("the fused 'sgd' op: not available for device meta")
    tx = difopt.sgd(0.1, momentum=0.9, use_accelerated_op=True)
    params = [torch.empty(3, device="meta")]
    before = _provider().calls["trace"]
    with pytest.warns(registry.PluginWarning, match="not available for device meta"):
        updates, _ = tx.update([torch.empty(3, device="meta")], tx.init(params), params=params)
    assert updates[0].device.type == "meta"
    assert _provider().calls["trace"] == before


@needs_ops_fixture
def test_accelerated_op_available_per_family():
    assert difopt.accelerated_op_available("cpu", op="sgd") is True
    assert difopt.accelerated_op_available("cpu", op="rmsprop") is True
    assert difopt.accelerated_op_available("cpu") is False  # adam: not provided here
    assert difopt.accelerated_op_available("meta", op="sgd") is False


def test_accelerated_op_available_rejects_an_unknown_family():
    with pytest.raises(ValueError, match="'op' must be one of 'adam', 'rmsprop', 'sgd'"):
        difopt.accelerated_op_available(op="lion")


def test_without_any_provider_every_family_warns_and_matches_pure():
    if any(registry.op_provider(op) is not None for op in ("sgd", "rmsprop")):
        pytest.skip("a fused sgd/rmsprop provider is installed here")
    registry._warned.discard("accelerated-op-missing")
    with pytest.warns(registry.PluginWarning, match="difopt-accel"):
        difopt.sgd(0.1, momentum=0.9, use_accelerated_op=True)
    for cls, kwargs in [
        (difopt.SGD, dict(lr=0.1, momentum=0.9)),
        (difopt.RMSProp, dict(lr=0.01, centered=True, momentum=0.5)),
    ]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", registry.PluginWarning)
            fused = _run_classic(cls, use_accelerated_op=True, **kwargs)
        torch.testing.assert_close(fused, _run_classic(cls, **kwargs), rtol=0, atol=0)


def test_the_forms_take_use_accelerated_op():
    import inspect

    for fn in (difopt.sgd, difopt.SGD, difopt.MetaSGD, difopt.rmsprop, difopt.RMSProp):
        assert "use_accelerated_op" in inspect.signature(fn).parameters, fn
