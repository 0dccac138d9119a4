"""``torch.compile`` of a classic difopt step: same parameters as torch.optim, no warnings.

The step may break the graph where it reads the per-parameter step counters (a data-dependent
scalar); what is checked is that compiling works, changes no value, and that nothing in difopt
makes Dynamo warn (e.g. tracing through a ``functools.lru_cache`` wrapper).
"""

from __future__ import annotations

import warnings

import pytest
import torch

import difopt

CASES = {
    "adam": (difopt.Adam, torch.optim.Adam, dict(lr=1e-2)),
    "sgd-momentum": (difopt.SGD, torch.optim.SGD, dict(lr=1e-2, momentum=0.9)),
}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


@pytest.mark.parametrize(
    "name,backend", [("adam", "inductor"), ("adam", "aot_eager"), ("sgd-momentum", "aot_eager")]
)
def test_compiled_classic_step_matches_torch_optim(name: str, backend: str) -> None:
    ours_cls, torch_cls, kwargs = CASES[name]
    net, ref = _model(), _model()
    opt, opt_ref = ours_cls(net.parameters(), **kwargs), torch_cls(ref.parameters(), **kwargs)
    torch._dynamo.reset()
    step = torch.compile(opt.step, backend=backend)
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(1))
    y = torch.randn(16, 2, generator=torch.Generator().manual_seed(2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(4):
            for model, optimizer, run in ((net, opt, step), (ref, opt_ref, opt_ref.step)):
                optimizer.zero_grad()
                torch.nn.functional.mse_loss(model(x), y).backward()
                run()
    ours = [str(w.message) for w in caught if "difopt" in str(w.message) + str(w.filename)]
    assert not ours, ours
    for p, q in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert not torch.equal(next(net.parameters()), next(_model().parameters()))


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
