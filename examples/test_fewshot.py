"""Tests of the few-shot digits benchmark (benchmarks/fewshot_data.py, fewshot_digits.py):
the task sampler, and each method's meta-gradient on a tiny task against an independent
oracle (central finite differences of the method's objective written out by hand, in
float64). Run by ``nox -s examples`` (its ``--quick`` run is in test_examples.py).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import fewshot_digits as fd  # noqa: E402
from fewshot_data import FewShotDigits, Task  # noqa: E402


@pytest.fixture(scope="module")
def data() -> FewShotDigits:
    return FewShotDigits()


# --- the sampler ----------------------------------------------------------------------------


def test_splits_are_class_disjoint_and_cover_the_40_classes(data: FewShotDigits) -> None:
    train, val, test = (set(data.splits[s]) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (24, 8, 8)
    assert not train & val and not train & test and not val & test
    assert train | val | test == set(range(40))
    assert FewShotDigits(split_seed=0).splits == data.splits
    assert FewShotDigits(split_seed=1).splits != data.splits


def test_rotated_classes_are_rotations(data: FewShotDigits) -> None:
    for k in (1, 2, 3):
        for digit in (0, 7):
            base = data.images[digit].reshape(-1, 8, 8)
            rotated = data.images[10 * k + digit].reshape(-1, 8, 8)
            assert torch.equal(rotated, torch.rot90(base, k, dims=(1, 2)))


@pytest.mark.parametrize("split", ["train", "val", "test"])
@pytest.mark.parametrize("n_way, k_shot, n_query", [(5, 1, 15), (5, 5, 15), (3, 2, 4)])
def test_tasks_have_the_ways_and_shots_asked(
    data: FewShotDigits, split: str, n_way: int, k_shot: int, n_query: int
) -> None:
    sampler = data.sampler(split, n_way, k_shot, n_query, seed=3)
    for task in sampler.tasks(20):
        assert task.xs.shape == (n_way * k_shot, 64) and task.xq.shape == (n_way * n_query, 64)
        assert torch.equal(task.ys, torch.arange(n_way).repeat_interleave(k_shot))
        assert torch.equal(task.yq, torch.arange(n_way).repeat_interleave(n_query))
        assert len(set(task.classes)) == n_way and set(task.classes) <= set(data.splits[split])
        for label, c in enumerate(task.classes):  # each image comes from its class
            pool = data.images[c]
            for x in (*task.xs[task.ys == label], *task.xq[task.yq == label]):
                assert bool((pool == x).all(dim=1).any())
        # support and query images of a class are distinct draws
        rows = torch.cat([task.xs, task.xq])
        assert torch.unique(rows, dim=0).shape[0] >= n_way * (k_shot + n_query) - 2


def test_sampler_is_deterministic_for_a_seed(data: FewShotDigits) -> None:
    a = data.sampler("train", 5, 1, 15, seed=7).tasks(5)
    b = data.sampler("train", 5, 1, 15, seed=7).tasks(5)
    c = data.sampler("train", 5, 1, 15, seed=8).tasks(5)
    for x, y in zip(a, b):
        assert x.classes == y.classes and torch.equal(x.xs, y.xs) and torch.equal(x.xq, y.xq)
    assert any(x.classes != z.classes or not torch.equal(x.xs, z.xs) for x, z in zip(a, c))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "dev"}, "'split'"),
        ({"n_way": 9}, "'n_way'"),
        ({"k_shot": 0}, "'k_shot'"),
        ({"n_query": 200}, "'k_shot' \\+ 'n_query'"),
    ],
)
def test_sampler_errors(data: FewShotDigits, kwargs: dict, match: str) -> None:
    args = {"split": "val", "n_way": 5, "k_shot": 1, "n_query": 15, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        data.sampler(**args)


# --- the meta-gradients ---------------------------------------------------------------------


@pytest.fixture()
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _cfg(**kw: Any) -> argparse.Namespace:
    base = dict(
        hidden=6,
        inner_lr=0.5,
        fo_inner_lr=0.2,
        inner_steps=2,
        outer_lr=1e-3,
        imaml_reg=1.0,
        imaml_steps=60,
        imaml_lr=0.5,
        imaml_cg=60,
        es_samples=4000,
        es_sigma=1e-3,
        seed=0,
    )
    base.update(kw)
    return argparse.Namespace(**base)


def _tiny(data: FewShotDigits) -> tuple[dict, Task]:
    torch.manual_seed(0)
    init = copy.deepcopy(fd.make_net(6).state_dict())
    t = data.sampler("train", 5, 1, 3, seed=11).sample()
    task = Task(t.xs.double(), t.ys, t.xq.double(), t.yq, t.classes)
    return init, task


def _directional_fd(f: Callable[[list], torch.Tensor], point: list, seed: int = 0) -> tuple:
    """Random direction ``v`` and the central difference of ``f`` along it."""
    g = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=g) for p in point]
    eps = 1e-6
    with torch.no_grad():
        plus = f([p + eps * d for p, d in zip(point, v)])
        minus = f([p - eps * d for p, d in zip(point, v)])
    return v, float((plus - minus) / (2 * eps))


def _dot(a: list, b: list) -> float:
    return float(sum((x * y).sum() for x, y in zip(a, b)))


def _sgd_adapt(params: list, task: Task, steps: int, lrs: list, which: list | None = None) -> list:
    """Inner SGD written out (gradients by autograd, values only: no graph kept)."""
    params = [p.detach() for p in params]
    which = list(range(len(params))) if which is None else which
    for _ in range(steps):
        leaves = [params[i].requires_grad_() for i in which]
        with torch.enable_grad():
            grads = torch.autograd.grad(F.cross_entropy(fd.mlp(params, task.xs), task.ys), leaves)
        for i, gi in zip(which, grads):
            params[i] = (params[i] - lrs[i] * gi).detach()
    return params


def _maml_objective(cfg: argparse.Namespace, task: Task, which: list | None = None) -> Callable:
    def f(phi: list) -> torch.Tensor:
        lrs = [cfg.inner_lr] * len(phi)
        adapted = _sgd_adapt(phi, task, cfg.inner_steps, lrs, which)
        return F.cross_entropy(fd.mlp(adapted, task.xq), task.yq)

    return f


def _weights(learner: fd.Learner) -> list:
    return [p.detach().clone() for p in learner.net.parameters()]


@pytest.mark.usefixtures("float64")
def test_maml_meta_gradient_matches_finite_differences(data: FewShotDigits) -> None:
    init, task = _tiny(data)
    cfg = _cfg()
    learners = fd.build_learners(init, cfg, {})
    maml, fo = learners["difopt:maml"], learners["difopt:fo-maml"]
    grad = maml.meta_grad(task)
    for seed in range(3):
        v, want = _directional_fd(_maml_objective(cfg, task), _weights(maml), seed)
        assert _dot(grad, v) == pytest.approx(want, rel=1e-5, abs=1e-9)
    # first order: the query gradient at the adapted weights, written out by hand
    fo_lrs = [cfg.fo_inner_lr] * 6  # FO-MAML's own inner rate
    adapted = [p.requires_grad_() for p in _sgd_adapt(_weights(fo), task, cfg.inner_steps, fo_lrs)]
    want_fo = torch.autograd.grad(F.cross_entropy(fd.mlp(adapted, task.xq), task.yq), adapted)
    got_fo = fo.meta_grad(task)
    for a, b in zip(got_fo, want_fo):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # and the two differ (second-order terms)
    assert fd.rel_err(got_fo, grad) > 1e-2
    # the hand-written torch MAML (the benchmark's time floor) computes the same meta-gradient
    floor = learners["torch:maml"].meta_grad(task)
    for a, b in zip(floor, grad):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.usefixtures("float64")
def test_anil_meta_gradient_matches_finite_differences(data: FewShotDigits) -> None:
    init, task = _tiny(data)
    cfg = _cfg()
    anil = fd.build_learners(init, cfg, {})["difopt:anil"]
    grad = anil.meta_grad(task)
    f = _maml_objective(cfg, task, which=[4, 5])  # the head adapts, the body is meta-learned
    for seed in range(3):
        v, want = _directional_fd(f, _weights(anil), seed)
        assert _dot(grad, v) == pytest.approx(want, rel=1e-5, abs=1e-9)
    assert all(g.abs().sum() > 0 for g in grad[:4])  # the body gets a meta-gradient


@pytest.mark.usefixtures("float64")
def test_meta_sgd_lr_gradients_match_finite_differences(data: FewShotDigits) -> None:
    init, task = _tiny(data)
    cfg = _cfg()
    learner = fd.build_learners(init, cfg, {})["difopt:meta-sgd"]
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # rates that differ per element, so that each one matters
        for log_lr in learner.log_lrs:
            log_lr.add_(0.3 * torch.randn(log_lr.shape, generator=g))
    for p in learner.log_lrs:
        p.grad = None
    learner.task_backward(task, 1.0)
    lr_grads = [p.grad.detach().clone() for p in learner.log_lrs]
    w_grads = [p.grad.detach().clone() for p in learner.net.parameters()]
    assert all(x.abs().sum() > 0 for x in lr_grads)
    phi = _weights(learner)
    log_lrs = [p.detach().clone() for p in learner.log_lrs]

    def f_of_lrs(logs: list) -> torch.Tensor:
        adapted = _sgd_adapt(phi, task, cfg.inner_steps, [x.exp() for x in logs])
        return F.cross_entropy(fd.mlp(adapted, task.xq), task.yq)

    def f_of_weights(weights: list) -> torch.Tensor:
        adapted = _sgd_adapt(weights, task, cfg.inner_steps, [x.exp() for x in log_lrs])
        return F.cross_entropy(fd.mlp(adapted, task.xq), task.yq)

    for seed in range(3):
        v, want = _directional_fd(f_of_lrs, log_lrs, seed)
        assert _dot(lr_grads, v) == pytest.approx(want, rel=1e-5, abs=1e-9)
        v, want = _directional_fd(f_of_weights, phi, seed)
        assert _dot(w_grads, v) == pytest.approx(want, rel=1e-5, abs=1e-9)


@pytest.mark.usefixtures("float64")
def test_imaml_meta_gradient_matches_finite_differences(
    data: FewShotDigits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the inner problem solved to convergence and CG run to convergence, the implicit
    meta-gradient is the derivative of the query loss at the proximal solution. The model
    uses tanh here: with ReLU the proximal objective has kinks where gradient descent
    chatters instead of converging, and the implicit function theorem does not apply."""
    monkeypatch.setattr(fd, "ACTIVATION", "tanh")
    init, task = _tiny(data)
    cfg = _cfg(imaml_lr=0.5, imaml_steps=80, imaml_cg=40)
    learner = fd.build_learners(init, cfg, {})["difopt:imaml"]
    grad = learner.meta_grad(task)

    def f(phi: list) -> torch.Tensor:
        theta = [p.detach() for p in phi]
        for _ in range(cfg.imaml_steps):
            leaves = [p.requires_grad_() for p in theta]
            with torch.enable_grad():
                loss = F.cross_entropy(
                    fd.mlp(leaves, task.xs), task.ys
                ) + 0.5 * cfg.imaml_reg * sum(((t - p) ** 2).sum() for t, p in zip(leaves, phi))
                grads = torch.autograd.grad(loss, leaves)
            theta = [(t - cfg.imaml_lr * gi).detach() for t, gi in zip(theta, grads)]
        return F.cross_entropy(fd.mlp(theta, task.xq), task.yq)

    for seed in range(3):
        v, want = _directional_fd(f, _weights(learner), seed)
        assert _dot(grad, v) == pytest.approx(want, rel=1e-4, abs=1e-8)


@pytest.mark.usefixtures("float64")
def test_es_maml_estimate_is_the_antithetic_formula(data: FewShotDigits) -> None:
    """The ES-MAML meta-gradient is the antithetic evolution-strategies estimate
    ``sum_k (f(phi + s e_k) - f(phi - s e_k)) e_k / (2 N s)`` of the adapted query loss ``f``,
    recomputed here by hand from the same noise draws (recorded by the sampler given to it)."""
    init, task = _tiny(data)
    drawn: list[torch.Tensor] = []
    g = torch.Generator().manual_seed(9)

    def sample(shape: torch.Size) -> torch.Tensor:
        e = torch.randn(shape, generator=g)
        drawn.append(e)
        return e

    cfg = _cfg(es_samples=3, es_sigma=1e-2, es_distribution=sample)
    learner = fd.build_learners(init, cfg, {})["difopt:es-maml"]
    est = learner.meta_grad(task)
    phi = _weights(learner)
    f = _maml_objective(cfg, task)
    want = [torch.zeros_like(p) for p in phi]
    for k in range(cfg.es_samples):
        e = [d[k] for d in drawn]
        up = f([p + cfg.es_sigma * x for p, x in zip(phi, e)])
        down = f([p - cfg.es_sigma * x for p, x in zip(phi, e)])
        for w, x in zip(want, e):
            w += (up - down) / (2 * cfg.es_samples * cfg.es_sigma) * x
    for a, b in zip(est, want):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)
    # and with small noise the differences follow the gradient: f's directional derivative
    # along e_k, from MAML's exact meta-gradient (finite-difference-checked above)
    exact = fd.build_learners(init, cfg, {})["difopt:maml"].meta_grad(task)
    for k in range(cfg.es_samples):
        e = [d[k] for d in drawn]
        slope = (
            f([p + 1e-6 * x for p, x in zip(phi, e)]) - f([p - 1e-6 * x for p, x in zip(phi, e)])
        ) / 2e-6
        assert float(slope) == pytest.approx(_dot(exact, e), rel=1e-4, abs=1e-8)
