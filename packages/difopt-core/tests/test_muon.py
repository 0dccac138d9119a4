"""Muon in its three forms: torch.optim.Muon as the oracle, the SVD for the orthogonalization,
gradcheck for the meta-gradient, and clear errors."""

from __future__ import annotations

import copy

import pytest
import torch

import difopt
from difopt.transform import newton_schulz

X = torch.randn(32, 6, generator=torch.Generator().manual_seed(1))
Y = torch.randn(32, 3, generator=torch.Generator().manual_seed(2))


def make_net() -> torch.nn.Module:
    """Two bias-free layers: a tall (16 x 6) and a wide (3 x 16) matrix."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 16, bias=False), torch.nn.Tanh(), torch.nn.Linear(16, 3, bias=False)
    )


def loss_of(net: torch.nn.Module) -> torch.Tensor:
    return ((net(X) - Y) ** 2).mean()


def torch_reference(steps: int, kw: dict) -> list[torch.Tensor]:
    net = make_net()
    opt = torch.optim.Muon(net.parameters(), **kw)
    for _ in range(steps):
        opt.zero_grad()
        loss_of(net).backward()
        opt.step()
    return [p.detach() for p in net.parameters()]


def rel_err(ours: list[torch.Tensor], ref: list[torch.Tensor]) -> float:
    pairs = [(a.detach(), b.detach()) for a, b in zip(ours, ref)]
    return max(float((a - b).abs().max() / b.abs().max()) for a, b in pairs)


CASES = [
    dict(lr=0.02),
    dict(lr=0.02, weight_decay=0.0, nesterov=False),
    dict(lr=0.02, momentum=0.9, ns_steps=3, adjust_lr_fn="match_rms_adamw"),
    dict(lr=0.05, weight_decay=0.3, adjust_lr_fn="original", ns_coefficients=(2.0, -1.5, 0.5)),
]
IDS = [str(i) for i in range(len(CASES))]


def test_cases_differ_from_each_other():
    """The option values of CASES change the result far above the tolerances used below."""
    base = torch_reference(5, CASES[0])
    for kw in CASES[1:]:
        assert rel_err(torch_reference(5, kw), base) > 1e-2


def with_muon_state(state, mu):
    """``state`` (a chain's tuple of states) with its ScaleByMuonState's buffers set to mu."""
    swap = difopt.transform.ScaleByMuonState
    return tuple(swap(mu) if isinstance(s, swap) else s for s in state)


@pytest.mark.parametrize("form", ["classic", "inplace", "functional"])
@pytest.mark.parametrize("kw", CASES, ids=IDS)
def test_one_step_from_torch_state_matches_torch_optim(kw, form):
    """From the parameters and momentum buffers torch.optim.Muon reached after 5 steps, one
    step of each form equals torch's sixth step to float32 rounding (same gradient, same
    bfloat16 Newton-Schulz input)."""
    net = make_net()
    opt = torch.optim.Muon(net.parameters(), **kw)
    for _ in range(5):
        opt.zero_grad()
        loss_of(net).backward()
        opt.step()
    params = [p.detach().clone() for p in net.parameters()]
    bufs = [opt.state[p]["momentum_buffer"].clone() for p in net.parameters()]
    opt.zero_grad()
    loss_of(net).backward()
    grads = [p.grad.clone() for p in net.parameters()]
    opt.step()
    expected = [p.detach() for p in net.parameters()]

    if form == "classic":
        ours = make_net()
        with torch.no_grad():
            for q, p in zip(ours.parameters(), params):
                q.copy_(p)
        classic = difopt.Muon(ours.parameters(), **kw)
        classic.state_groups[0] = with_muon_state(classic.state_groups[0], bufs)
        for q, g in zip(ours.parameters(), grads):
            q.grad = g
        classic.step()
        got = [q.detach() for q in ours.parameters()]
    else:
        impl = difopt.muon(**kw)
        state = with_muon_state(impl.init(params), bufs)
        inplace = form == "inplace"
        updates, _ = impl.update(grads, state, params=params, inplace=inplace)
        got = list(difopt.apply_updates(params, updates, inplace=inplace))
    assert rel_err(got, expected) < 1e-6


@pytest.mark.parametrize("kw", CASES, ids=IDS)
def test_twenty_steps_match_torch_optim_to_bfloat16_precision(kw):
    """Over many steps the forms drift from torch by float32 rounding (torch folds the shape
    factor into the learning rate and applies the weight decay as a multiplication; difopt
    scales the update and adds lr (wd p + update)); a last-bit difference that flips a
    bfloat16 rounding in the Newton-Schulz input then shows at bfloat16's precision (2^-8).
    An error in the algorithm shows far above that (test_cases_differ_from_each_other)."""
    net = make_net()
    opt = difopt.Muon(net.parameters(), **kw)
    for _ in range(20):
        opt.zero_grad()
        loss_of(net).backward()
        opt.step()
    assert rel_err([p.detach() for p in net.parameters()], torch_reference(20, kw)) < 4e-3


def test_twenty_steps_without_weight_decay_match_to_float32_rounding():
    """Without weight decay and with square matrices (shape factor 1) the arithmetic is
    torch's, operation for operation: 20 steps agree to float32 rounding."""
    kw = dict(lr=0.02, weight_decay=0.0)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(6, 6, bias=False), torch.nn.Tanh(), torch.nn.Linear(6, 3, bias=False)
    )
    ref = copy.deepcopy(net)
    ours, theirs = difopt.Muon(net.parameters(), **kw), torch.optim.Muon(ref.parameters(), **kw)
    for _ in range(20):
        for model, opt in ((net, ours), (ref, theirs)):
            opt.zero_grad()
            ((model(X) - Y) ** 2).mean().backward()
            opt.step()
    got = [p.detach() for p in net.parameters()]
    assert rel_err(got, [p.detach() for p in ref.parameters()]) < 1e-6


def test_weight_decay_is_decoupled():
    """With a zero gradient the momentum stays 0, the orthogonalized direction is 0 (the
    norm is clamped to eps), and the step only shrinks: p <- p - lr wd p."""
    p = {"w": torch.randn(4, 3, dtype=torch.float64)}
    impl = difopt.muon(lr=0.1, weight_decay=0.5, ns_dtype=None)
    updates, _ = impl.update({"w": torch.zeros(4, 3, dtype=torch.float64)}, impl.init(p), params=p)
    torch.testing.assert_close(updates["w"], -0.1 * 0.5 * p["w"])


def test_maximize_is_minimizing_the_negated_loss():
    g = torch.randn(5, 4, dtype=torch.float64)
    p = [torch.randn(5, 4, dtype=torch.float64)]
    up = difopt.muon(0.1, maximize=True, ns_dtype=None)
    down = difopt.muon(0.1, ns_dtype=None)
    a, _ = up.update([g], up.init(p), params=p)
    b, _ = down.update([-g], down.init(p), params=p)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("shape", [(7, 4), (4, 7), (6, 6)])
def test_cubic_newton_schulz_converges_to_the_polar_factor(shape):
    """With (a, b, c) = (1.5, -0.5, 0) the iteration is the classical cubic Newton-Schulz,
    which converges to U V^T (x = U S V^T, from the SVD) for a matrix of full rank."""
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    u, _, vh = torch.linalg.svd(x, full_matrices=False)
    got = newton_schulz(x, (1.5, -0.5, 0.0), steps=60, dtype=None)
    torch.testing.assert_close(got, u @ vh, rtol=1e-9, atol=1e-9)


def test_quintic_newton_schulz_keeps_the_singular_vectors():
    """Muon's quintic iteration only maps the singular values (here into (0.5, 1.25) for a
    well-conditioned matrix): the singular vectors are those of the input."""
    gen = torch.Generator().manual_seed(4)
    u, _ = torch.linalg.qr(torch.randn(8, 5, dtype=torch.float64, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64, generator=gen))
    s = torch.linspace(1.0, 3.0, 5, dtype=torch.float64)
    out = newton_schulz(u @ torch.diag(s) @ v.T, dtype=None)
    mapped = u.T @ out @ v  # diagonal when the singular vectors are kept
    torch.testing.assert_close(mapped, torch.diag(torch.diagonal(mapped)), atol=1e-12, rtol=0)
    assert bool(((torch.diagonal(mapped) > 0.5) & (torch.diagonal(mapped) < 1.25)).all())


def test_newton_schulz_runs_in_the_requested_dtype_and_returns_the_input_dtype():
    x = torch.randn(6, 4)
    low = newton_schulz(x)  # bfloat16, as torch.optim.Muon
    high = newton_schulz(x, dtype=torch.float64)
    assert low.dtype == high.dtype == torch.float32
    err = float((low - high).abs().max())
    assert 1e-5 < err < 5e-2  # bfloat16 rounding shows, and nothing worse


def test_meta_gradient_gradcheck():
    """MetaMuon steps are differentiable: gradcheck (float64, ns_dtype=None) of an outer loss
    after 3 inner steps with respect to the initial weights and a meta-parameter."""

    def outer(w1, w2, scale):
        net = torch.nn.Sequential(
            torch.nn.Linear(3, 4, bias=False), torch.nn.Tanh(), torch.nn.Linear(4, 2, bias=False)
        ).double()
        net[0]._parameters["weight"] = w1 * 1.0
        net[2]._parameters["weight"] = w2 * 1.0
        opt = difopt.MetaMuon(net, lr=0.1, weight_decay=0.1, ns_dtype=None)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(5, 3, dtype=torch.float64, generator=gen)
        y = torch.randn(5, 2, dtype=torch.float64, generator=gen)
        for _ in range(3):
            opt.step(((net(x) - y) ** 2).mean() + scale * (net[0].weight ** 2).sum())
        return ((net(x) - y) ** 2).mean()

    gen = torch.Generator().manual_seed(1)
    w1 = torch.randn(4, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    w2 = torch.randn(2, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    scale = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(outer, (w1, w2, scale), eps=1e-6, atol=1e-5)


def test_non_matrix_parameters_are_refused_at_construction():
    net = torch.nn.Linear(3, 2)  # the bias is 1-D
    with pytest.raises(ValueError, match=r"params\[1\] has shape \(2,\).*2-D matrices only"):
        difopt.Muon(net.parameters())
    tx = difopt.muon()
    with pytest.raises(ValueError, match=r"params\['bias'\] has shape \(2,\)"):
        tx.init(dict(net.named_parameters()))
    with pytest.raises(ValueError, match="2-D matrices only"):
        difopt.MetaMuon(net)


def test_a_gradient_of_the_wrong_shape_is_refused_before_any_state_changes():
    tx = difopt.muon(ns_dtype=None)
    params = {"a": torch.zeros(3, 2), "b": torch.zeros(4, 3)}
    state = tx.init(params)
    _, state = tx.update({"a": torch.ones(3, 2), "b": torch.ones(4, 3)}, state, params=params)
    before = [x.clone() for x in difopt.pytree.tree_leaves(state)]
    bad = {"a": torch.ones(3, 2), "b": torch.ones(3, 4)}
    with pytest.raises(ValueError, match=r"updates\['b'\] has shape \(3, 4\).*\(4, 3\)"):
        tx.update(bad, state, params=params)
    assert all(torch.equal(x, y) for x, y in zip(before, difopt.pytree.tree_leaves(state)))


@pytest.mark.parametrize(
    "kw,name",
    [
        (dict(adjust_lr_fn="rms"), "'adjust_lr_fn'"),
        (dict(eps=0.0), "'eps'"),
        (dict(ns_steps=-1), "'ns_steps'"),
        (dict(ns_steps=2.5), "'ns_steps'"),
        (dict(ns_coefficients=(1.0, 2.0)), "'ns_coefficients'"),
        (dict(momentum=-0.1), "'momentum'"),
        (dict(weight_decay=-1.0), "'weight_decay'"),
        (dict(nesterov="yes"), "'nesterov'"),
        (dict(ns_dtype=torch.int32), "'ns_dtype'"),
        (dict(lr=-1.0), "'lr'"),
    ],
)
def test_bad_arguments_name_the_argument(kw, name):
    with pytest.raises((ValueError, TypeError), match=name):
        difopt.muon(**kw)


@pytest.mark.parametrize("late", [False, True], ids=["all-steps", "late-layer"])
def test_muon_for_matrices_and_adamw_for_the_rest_match_two_torch_optimizers(late):
    """The usual split (Muon on 2-D weights, AdamW on biases) as one transformation with
    ``masked``, against torch.optim.Muon and torch.optim.AdamW on the two parameter sets;
    with ``late`` the second layer gets no gradient on the first 3 steps (its parameters are
    hidden from the callable masks then)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
    ref = copy.deepcopy(net)
    matrices = lambda tree: difopt.pytree.tree_map(lambda p: p.ndim == 2, tree)  # noqa: E731
    others = lambda tree: difopt.pytree.tree_map(lambda p: p.ndim != 2, tree)  # noqa: E731
    muon_kw, adamw_kw = dict(lr=0.02, weight_decay=0.0), dict(lr=1e-2, weight_decay=0.1)
    ours = difopt.Optimizer(
        net.parameters(),
        difopt.chain(
            difopt.transform.masked(difopt.muon(**muon_kw), matrices),
            difopt.transform.masked(difopt.adamw(**adamw_kw), others),
        ),
    )
    theirs = [
        torch.optim.Muon([p for p in ref.parameters() if p.ndim == 2], **muon_kw),
        torch.optim.AdamW([p for p in ref.parameters() if p.ndim != 2], **adamw_kw),
    ]

    def loss(model, step):
        if late and step < 3:
            return ((torch.tanh(model[0](X)) - 1.0) ** 2).mean()
        return ((model(X) - Y) ** 2).mean()

    for step in range(20):
        ours.zero_grad()
        loss(net, step).backward()
        ours.step()
        for opt in theirs:
            opt.zero_grad()
        loss(ref, step).backward()
        for opt in theirs:
            opt.step()
    got = [p.detach() for p in net.parameters()]
    assert rel_err(got, [p.detach() for p in ref.parameters()]) < 1e-6
