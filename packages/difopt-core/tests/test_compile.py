"""``torch.compile`` of a classic difopt step: one graph, no graph break, the values of
torch.optim; and what happens when the step counters differ between parameters.

The step counters are tensors; an eager step reads them (Python scalars are cheaper there),
a compiled one computes the bias corrections from them as tensors of the parameters'
precision.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from torch._dynamo.utils import counters

import difopt
from core_testing import make_data, make_mlp, max_rel_err, mse
from test_torch_optim_parity import CASES, CLASSIC, RTOL, STEPS, _case_id, _torch_reference


class _Graphs:
    """A backend that counts the graphs Dynamo hands it and runs them as traced."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list) -> object:
        self.count += 1
        return gm.forward


def _compiled_run(name, kw, backend, skip=()):
    """STEPS compiled classic steps; parameter 0's gradient is dropped at the steps in ``skip``."""
    model, data = make_mlp(), make_data()
    opt = CLASSIC[name](model.parameters(), **kw)
    torch._dynamo.reset()
    counters.clear()
    step = torch.compile(opt.step, backend=backend)
    for k in range(STEPS):
        opt.zero_grad()
        mse(model, data).backward()
        if k in skip:
            next(model.parameters()).grad = None
        step()
    return list(model.parameters()), sum(counters["graph_break"].values())


def _reference(torch_cls, kw, skip=()):
    model, data = make_mlp(), make_data()
    opt = torch_cls(model.parameters(), **kw)
    for k in range(STEPS):
        opt.zero_grad()
        mse(model, data).backward()
        if k in skip:
            next(model.parameters()).grad = None
        opt.step()
    return list(model.parameters())


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_compiled_classic_step_is_one_graph_with_torch_optims_values(case) -> None:
    name, torch_cls, kw = case
    graphs = _Graphs()
    got, breaks = _compiled_run(name, kw, graphs)
    assert breaks == 0
    assert graphs.count == 1  # traced once: no recompilation as the counters advance
    assert max_rel_err(got, _torch_reference(torch_cls, kw)) < RTOL


@pytest.mark.parametrize("name", ["adam", "sgd-momentum"])
def test_inductor_compiled_classic_step_matches_torch_optim(name: str) -> None:
    opt_name, torch_cls, kw = {
        "adam": ("adam", torch.optim.Adam, dict(lr=1e-2, weight_decay=0.1)),
        "sgd-momentum": ("sgd", torch.optim.SGD, dict(lr=1e-2, momentum=0.9, nesterov=True)),
    }[name]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got, breaks = _compiled_run(opt_name, kw, "inductor")
    # Warnings raised in difopt's own files, or about difopt (not by path alone: a nox
    # environment's path holds the package name, and so torch's own warnings would match).
    package = os.path.dirname(difopt.__file__)
    ours = [
        str(w.message)
        for w in caught
        if str(w.filename).startswith(package) or "difopt" in str(w.message)
    ]
    assert not ours, ours
    assert breaks == 0
    assert max_rel_err(got, _torch_reference(torch_cls, kw)) < RTOL


@pytest.mark.parametrize("name", ["Adam", "NAdam", "RAdam", "Adamax", "Adan"])
def test_compiled_float32_step_feeds_no_float64_into_element_ops(name: str) -> None:
    """The bias corrections of a float32 step are float32 tensors: float64 scalars there made
    the compiled element loop do double arithmetic (1.8x slower at 8M parameters). Checked on
    the traced graph: no op producing a float32 tensor of parameter size takes a float64 one
    (NAdam's running product itself stays a float64 0-d state)."""
    mixed: list[str] = []
    seen: list[torch.dtype] = []

    def value(x: object) -> object:
        return x.meta.get("example_value") if isinstance(x, torch.fx.Node) else None

    def backend(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        for node in gm.graph.nodes:
            out = value(node)
            if not isinstance(out, torch.Tensor) or out.dim() == 0:
                continue
            seen.append(out.dtype)
            for arg in node.args:
                for a in arg if isinstance(arg, (list, tuple)) else [arg]:
                    v = value(a)
                    if isinstance(v, torch.Tensor) and v.dtype == torch.float64:
                        mixed.append(f"{node.target} takes float64 {a}")
        return gm.forward

    model = make_mlp(dtype=torch.float32)
    data = make_data(dtype=torch.float32)
    opt = getattr(difopt, name)(model.parameters(), lr=1e-3)
    torch._dynamo.reset()
    step = torch.compile(opt.step, backend=backend)
    for _ in range(2):
        opt.zero_grad()
        mse(model, data).backward()
        step()
    assert torch.float32 in seen
    assert not mixed, mixed


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize(
    "case",
    [
        ("adam", torch.optim.Adam, dict(lr=1e-2)),
        ("sgd", torch.optim.SGD, dict(lr=1e-2, momentum=0.9)),
        ("nadam", torch.optim.NAdam, dict(lr=1e-2)),
    ],
    ids=["adam", "sgd-momentum", "nadam"],
)
def test_compiled_step_after_parameters_missed_steps_matches_torch_optim(case, backend) -> None:
    """Parameter 0 has no gradient at steps 2 and 3, so its counter lags the others'; the
    compiled step then runs eagerly (where the counters are read) and stays correct."""
    name, torch_cls, kw = case
    if backend == "inductor" and name != "adam":
        pytest.skip("one inductor case is enough")
    got, breaks = _compiled_run(name, kw, backend, skip=(2, 3))
    assert breaks > 0  # the eager step after the counters diverged
    assert max_rel_err(got, _reference(torch_cls, kw, skip=(2, 3))) < RTOL


def test_loading_a_state_with_uneven_counters_makes_the_compiled_step_eager() -> None:
    model, data = make_mlp(), make_data()
    opt = difopt.Adam(model.parameters(), lr=1e-2)
    for k in range(3):
        opt.zero_grad()
        mse(model, data).backward()
        if k == 1:
            next(model.parameters()).grad = None
        opt.step()
    saved = opt.state_dict()
    fresh_model = make_mlp()
    fresh_model.load_state_dict(model.state_dict())
    fresh = difopt.Adam(fresh_model.parameters(), lr=1e-2)
    fresh.load_state_dict(saved)
    assert fresh._uneven_counts[0]
    torch._dynamo.reset()
    step = torch.compile(fresh.step, backend="aot_eager")
    for m, run in ((model, opt.step), (fresh_model, step)):
        m.zero_grad()
        mse(m, data).backward()
        run()
    assert max_rel_err(fresh_model.parameters(), list(model.parameters())) < 1e-12


def test_compiled_functional_update_refuses_counters_that_differ() -> None:
    """A functional update cannot know, without reading them, that its state's counters
    differ; compiled, it fails at run time with a clear error instead of using the first."""
    tx = difopt.adam(0.1)
    p = (torch.zeros(3), torch.zeros(2))
    _, lagging = tx.update((torch.ones(3), None), tx.init(p), params=p, inplace=False)
    torch._dynamo.reset()
    update = torch.compile(
        lambda g, s: tx.update(g, s, params=p, inplace=False), backend="aot_eager"
    )
    with pytest.raises(RuntimeError, match="step counters of this state differ"):
        update((torch.ones(3), torch.ones(2)), lagging)
    out, _ = update((torch.ones(3), torch.ones(2)), tx.init(p))  # counters that agree
    assert all(torch.isfinite(o).all() for o in out)


def test_compiling_leaves_eager_flattening_as_optree_has_it() -> None:
    """Dynamo traces optree through its own Python version; none of its specs may reach the
    cache of difopt's flatten shortcut (a spec printed or compared differently broke masks)."""
    import optree

    from difopt import _leafwise as lw
    from difopt.pytree import NAMESPACE

    torch._dynamo.reset()
    xs = tuple(torch.ones(2) for _ in range(5))  # a length no other test uses

    @torch.compile(backend="eager")
    def traced(t: tuple) -> torch.Tensor:
        leaves, _ = lw.flatten(t)
        return sum(leaves) + len(lw.flatten_with_none(list(t))[0])

    traced(xs)
    for tree, with_none in ((xs, False), (list(xs), True)):
        ours = lw.flatten_with_none(tree)[1] if with_none else lw.flatten(tree)[1]
        want = optree.tree_flatten(tree, none_is_leaf=with_none, namespace=NAMESPACE)[1]
        assert ours == want and repr(ours) == repr(want)


def test_compiled_step_with_a_tensor_lr_and_a_scheduler_compiles_once() -> None:
    """As torch.optim recommends for compiled steps under a scheduler: a 0-d tensor lr is
    filled in place by the scheduler and read by the graph, so no value recompiles it."""

    def run(cls, compiled: bool) -> list[torch.Tensor]:
        model, data = make_mlp(), make_data()
        opt = cls(model.parameters(), lr=torch.tensor(1e-2, dtype=torch.float64))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5)
        graphs = _Graphs()
        torch._dynamo.reset()
        step = torch.compile(opt.step, backend=graphs) if compiled else opt.step
        for _ in range(8):
            opt.zero_grad()
            mse(model, data).backward()
            step()
            sched.step()
        if compiled:
            assert graphs.count == 1
        return list(model.parameters())

    assert max_rel_err(run(difopt.Adam, True), run(torch.optim.Adam, False)) < RTOL


def test_compiled_step_keeps_float64_leaves_exact_beside_float32_ones() -> None:
    """Step-dependent scalars take the widest precision of the group: a float64 parameter
    after a float32 one is stepped in double precision (checked against torch.optim)."""

    def run(cls, compiled: bool) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(0)
        w32 = torch.nn.Parameter(torch.randn(5, generator=gen))
        w64 = torch.nn.Parameter(torch.randn(5, generator=gen, dtype=torch.float64))
        opt = cls([w32, w64], lr=1e-2)
        torch._dynamo.reset()
        step = torch.compile(opt.step, backend="aot_eager") if compiled else opt.step
        for _ in range(6):
            opt.zero_grad()
            ((w32.double() - 1.0) ** 2).sum().add(((w64 + 2.0) ** 2).sum()).backward()
            step()
        return [w32, w64]

    got, want = run(difopt.Adam, True), run(torch.optim.Adam, False)
    torch.testing.assert_close(got[1], want[1], rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
