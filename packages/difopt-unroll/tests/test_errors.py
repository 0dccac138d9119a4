"""Bad input: a clear error naming the argument. Errors raised before the unroll returns leave
the random state (and the module and optimizer) as they were; errors found in the backward
(documented) leave the random state where the forward left it."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import difopt
import difopt_unroll


def _problem() -> tuple[Any, ...]:
    w0 = {"w": torch.randn(3, requires_grad=True)}
    tx = difopt.sgd(lr=0.1)
    step = difopt_unroll.transformation_step(lambda p, b: (p["w"] ** 2).sum(), tx)
    return step, w0, tx.init(w0)


@pytest.mark.parametrize("num_steps", [0, -1, 2.5, True, "3"])
def test_num_steps(num_steps: Any) -> None:
    step, p, s = _problem()
    with pytest.raises(ValueError, match="'num_steps' must be an int >= 1"):
        difopt_unroll.unroll(step, p, s, num_steps)


@pytest.mark.parametrize("budget", [0, -3, 1.5])
def test_budget(budget: Any) -> None:
    step, p, s = _problem()
    with pytest.raises(ValueError, match="'budget' must be an int >= 1"):
        difopt_unroll.unroll(step, p, s, 5, budget=budget)
    with pytest.raises(ValueError, match="'budget' must be an int >= 1"):
        difopt_unroll.Binomial(budget)


@pytest.mark.parametrize("policy", ["revolve", "Sqrt", "", 3])
def test_unknown_policy(policy: Any) -> None:
    step, p, s = _problem()
    with pytest.raises(ValueError, match="'policy' must be one of 'binomial', 'none', 'sqrt'"):
        difopt_unroll.unroll(step, p, s, 5, policy=policy)


def test_policy_arguments() -> None:
    step, p, s = _problem()
    with pytest.raises(ValueError, match="policy='binomial' needs 'budget'"):
        difopt_unroll.unroll(step, p, s, 5, policy="binomial")
    with pytest.raises(ValueError, match="'budget' applies to the binomial policy only"):
        difopt_unroll.unroll(step, p, s, 5, policy="sqrt", budget=2)
    with pytest.raises(ValueError, match="'k' must be an int >= 1"):
        difopt_unroll.Every(0)


def test_mode_and_truncate() -> None:
    step, p, s = _problem()
    with pytest.raises(
        ValueError, match="'mode' must be one of 'exact', 'first_order', 'truncated'"
    ):
        difopt_unroll.unroll(step, p, s, 5, mode="second_order")
    with pytest.raises(ValueError, match="mode='truncated' needs 'truncate'"):
        difopt_unroll.unroll(step, p, s, 5, mode="truncated")
    for bad in (0, 6):
        with pytest.raises(ValueError, match=r"'truncate' must be in \[1, num_steps=5\]"):
            difopt_unroll.unroll(step, p, s, 5, mode="truncated", truncate=bad)
    with pytest.raises(ValueError, match="'truncate' applies to mode='truncated' only"):
        difopt_unroll.unroll(step, p, s, 5, truncate=2)


def test_batches_of_the_wrong_length() -> None:
    step, p, s = _problem()
    with pytest.raises(ValueError, match="'batches' must hold one batch per step"):
        difopt_unroll.unroll(step, p, s, 5, batches=[None] * 4)


@pytest.mark.parametrize("policy", ["none", "sqrt", "binomial"])
def test_step_changing_structure_or_shape(policy: str) -> None:
    budget = 2 if policy == "binomial" else None

    def adds_a_leaf(p: Any, s: Any, k: int) -> Any:
        return {**p, "extra": p["w"] * 2} if k == 3 else p, s

    def reshapes(p: Any, s: Any, k: int) -> Any:
        return ({"w": p["w"][:2]} if k == 3 else p), s

    def changes_state(p: Any, s: Any, k: int) -> Any:
        return p, ((s, s) if k == 3 else s)

    def changes_dtype(p: Any, s: Any, k: int) -> Any:
        torch.rand(2)  # consumes random numbers
        return ({"w": p["w"].double()} if k == 3 else p), s

    p = {"w": torch.randn(3, requires_grad=True)}
    for step, match in [
        (adds_a_leaf, "'step' changed the params' tree structure at step 3"),
        (reshapes, r"'step' changed leaf 0 of the params at step 3: got \(2,\)"),
        (changes_state, "'step' changed the state' tree structure at step 3"),
        (
            changes_dtype,
            r"'step' changed leaf 0 of the params at step 3: got \(3,\) torch.float64, "
            r"expected \(3,\) torch.float32",
        ),
    ]:
        before = torch.random.get_rng_state()
        with pytest.raises(ValueError, match=match):
            difopt_unroll.unroll(step, p, (), 6, policy=policy, budget=budget)
        assert torch.equal(torch.random.get_rng_state(), before)


@pytest.mark.parametrize("policy", ["none", "sqrt", "binomial"])
def test_module_form_shape_change(policy: str) -> None:
    """A loss_fn that swaps a module parameter for one of another shape: a clear error
    naming 'loss_fn' (not a broadcasting error inside the optimizer), module and optimizer
    left as they were."""
    net = torch.nn.Linear(3, 1)
    opt = difopt.MetaAdam(net, lr=0.1)
    params, state = list(net.parameters()), opt.state_groups
    x = torch.randn(4, 3)

    def loss_fn(k: int) -> torch.Tensor:
        if k == 3:
            net._parameters["weight"] = net.weight[:, :2].detach().requires_grad_()
        return (net.weight.sum() + net.bias.sum()) ** 2 if k == 3 else net(x).pow(2).sum()

    budget = 2 if policy == "binomial" else None
    with pytest.raises(
        ValueError, match=r"'loss_fn' changed leaf 0 of the params at step 3: got \(1, 2\)"
    ):
        difopt_unroll.unroll_module(opt, loss_fn, 6, policy=policy, budget=budget)
    assert list(net.parameters()) == params and all(p.grad_fn is None for p in params)
    assert opt.state_groups is state


def test_step_returning_something_else() -> None:
    p = {"w": torch.randn(3, requires_grad=True)}
    with pytest.raises(TypeError, match="'step' must return"):
        difopt_unroll.unroll(lambda p, s, k: p, p, (), 3)
    with pytest.raises(TypeError, match="'params' must be a pytree of floating-point tensors"):
        difopt_unroll.unroll(lambda p, s, k: (p, s), {"w": torch.arange(3)}, (), 3)
    with pytest.raises(TypeError, match="'meta_params' must be a tensor or a pytree of tensors"):
        difopt_unroll.unroll(lambda p, s, k: (p, s), p, (), 3, meta_params=(0.1,))


@pytest.mark.parametrize("policy", ["none", "sqrt", "binomial"])
def test_undeclared_meta_parameter(policy: str) -> None:
    lr = torch.tensor(0.1, requires_grad=True)
    step = difopt_unroll.transformation_step(lambda p, b: (p["w"] ** 2).sum(), difopt.sgd(lr=lr))
    p = {"w": torch.randn(3, requires_grad=True)}
    budget = 2 if policy == "binomial" else None
    with pytest.raises(ValueError, match="pass them in 'meta_params'"):
        difopt_unroll.unroll(step, p, difopt.sgd(lr=lr).init(p), 4, policy=policy, budget=budget)


def test_error_mid_unroll_leaves_random_state_alone() -> None:
    def step(p: Any, s: Any, k: int) -> Any:
        torch.rand(5)  # consumes random numbers
        if k == 7:
            raise RuntimeError("boom")
        return p, s

    p = {"w": torch.randn(3, requires_grad=True)}
    before = torch.random.get_rng_state()
    with pytest.raises(RuntimeError, match="boom"):
        difopt_unroll.unroll(step, p, (), 10, budget=2)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_module_form_errors_leave_module_and_optimizer_alone() -> None:
    net = torch.nn.Linear(3, 1)
    opt = difopt.MetaAdam(net, lr=0.1)
    params, state = list(net.parameters()), opt.state_groups
    x = torch.randn(4, 3)
    lr = torch.tensor(0.1, requires_grad=True)
    with pytest.raises(TypeError, match="'optimizer' must be a difopt.MetaOptimizer"):
        difopt_unroll.unroll_module(net, lambda b: net(x).sum(), 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'num_steps' must be an int >= 1"):
        difopt_unroll.unroll_module(opt, lambda b: net(x).sum(), 0)

    def reads_lr(b: Any) -> torch.Tensor:  # an undeclared tensor requiring grad
        return (net(x) * lr).pow(2).sum()

    with pytest.raises(ValueError, match="pass them in 'meta_params'"):
        difopt_unroll.unroll_module(opt, reads_lr, 5, budget=2)

    def fails_late(k: int) -> torch.Tensor:
        if k == 4:
            raise RuntimeError("boom")
        return net(x).pow(2).sum()

    with pytest.raises(RuntimeError, match="boom"):
        difopt_unroll.unroll_module(opt, fails_late, 6, policy="sqrt")
    with pytest.raises(ValueError, match="'loss_fn' must give a scalar tensor loss"):
        difopt_unroll.unroll_module(opt, lambda b: net(x), 3)
    assert list(net.parameters()) == params and all(p.grad_fn is None for p in params)
    assert opt.state_groups is state


@pytest.mark.parametrize("policy", ["none", "sqrt", "binomial"])
def test_undeclared_read_at_a_later_step_is_caught(policy: str) -> None:
    """A tensor read only at step 5 is not in the first step's graph: the plain unroll checks
    every step as it runs; a checkpointed one when it records that step, in the backward
    (documented: the error can surface there). The step draws random numbers: after the
    declared run, torch's random state and the meta-gradients are the hand-written loop's."""
    scale = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    w0 = torch.randn(3, dtype=torch.float64, requires_grad=True)

    def noisy(w: torch.Tensor, k: int, grad: Any) -> torch.Tensor:
        g = grad((w**2).sum(), w) * (1.0 + 0.1 * torch.rand((), dtype=torch.float64))
        return w - 0.1 * (g * scale if k == 5 else g)

    def step(w: torch.Tensor, state: Any, k: int) -> tuple[torch.Tensor, Any]:
        return noisy(w, k, lambda loss, w: difopt_unroll.inner_grad(loss, (w,))[0]), state

    torch.manual_seed(3)
    w = w0
    for k in range(8):  # the hand-written loop
        w = noisy(w, k, lambda loss, w: torch.autograd.grad(loss, w, create_graph=True)[0])
    want = list(torch.autograd.grad(w.sum(), [w0, scale]))
    want_random = torch.random.get_rng_state()

    budget = 2 if policy == "binomial" else None
    torch.manual_seed(3)
    seeded = torch.random.get_rng_state()
    with pytest.raises(ValueError, match=r"pass them in 'meta_params'"):
        out = difopt_unroll.unroll(step, w0, (), 8, policy=policy, budget=budget)
        torch.autograd.grad(out.params.sum(), w0)
    # An error in the forward (policy="none") leaves the random state as before the unroll;
    # one in the backward leaves it where the forward left it (the plain loop's).
    after_error = torch.random.get_rng_state()
    assert torch.equal(after_error, seeded if policy == "none" else want_random)
    torch.manual_seed(3)
    out = difopt_unroll.unroll(step, w0, (), 8, policy=policy, budget=budget, meta_params=scale)
    got = list(torch.autograd.grad(out.params.sum(), [w0, scale]))
    assert torch.equal(torch.random.get_rng_state(), want_random)
    for g, w_ in zip(got, want):
        torch.testing.assert_close(g, w_, rtol=1e-12, atol=0)
    assert want[1] != 0


class _BadPolicy(difopt_unroll.Policy):
    """A user policy returning ``value`` from split (and ``slots`` from slots); it raises
    after 200 calls so that an unvalidated result cannot hang the test."""

    def __init__(self, value: Any, slots: Any = 3) -> None:
        self.value, self._slots, self.calls = value, slots, 0

    def slots(self, num_steps: int) -> Any:
        return self._slots

    def split(self, length: int, slots: int) -> Any:
        self.calls += 1
        if self.calls > 200:
            raise RuntimeError("the engine looped on the policy's split")
        return length if self.value == "length" else self.value


@pytest.mark.parametrize(
    ("value", "slots"),
    [(0, 3), (-2, 3), ("length", 3), (2.5, 3), (True, 3), ("3", 3), (1, 0), (1, 1.5)],
)
def test_bad_user_policy(value: Any, slots: Any) -> None:
    step, p, s = _problem()
    before = torch.random.get_rng_state()
    with pytest.raises(ValueError, match="'policy'"):
        difopt_unroll.unroll(step, p, s, 6, policy=_BadPolicy(value, slots))
    assert torch.equal(torch.random.get_rng_state(), before)


@pytest.mark.parametrize(
    ("what", "policy"),
    [("params", "none"), ("params", "sqrt"), ("params", "binomial")]
    + [("state", "sqrt"), ("state", "binomial")],
)
def test_initial_tensors_modified_in_place_before_backward(what: str, policy: str) -> None:
    """The snapshots of the initial state are the caller's tensors: changing them in place
    between the forward and the backward is refused (the plain unroll, "none", is the
    oracle: its autograd refuses it for the parameters), rather than silently giving the
    meta-gradient of other values. (The plain unroll reads an initial momentum buffer only
    linearly, saving nothing of it, so it has no oracle for the state.)"""
    w0 = {"w": torch.randn(3, dtype=torch.float64, requires_grad=True)}
    tx = difopt.sgd(lr=0.1, momentum=0.9)
    state = tx.init(w0)
    moment = difopt.pytree.tree_leaves(state, namespace="difopt")[0]
    moment.requires_grad_()  # the momentum buffer is an input of the unroll too
    step = difopt_unroll.transformation_step(lambda p, b: (torch.sin(p["w"]) ** 2).sum(), tx)
    budget = 2 if policy == "binomial" else None
    out = difopt_unroll.unroll(step, w0, state, 8, policy=policy, budget=budget)
    with torch.no_grad():
        (w0["w"] if what == "params" else moment).add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.grad(out.params["w"].sum(), [w0["w"], moment], allow_unused=True)
