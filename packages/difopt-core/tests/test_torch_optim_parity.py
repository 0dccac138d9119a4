"""Classic and functional forms match torch.optim (the independent oracle) in float64."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

import difopt
from core_testing import make_data, make_mlp, max_rel_err, mse

STEPS = 20
RTOL = 1e-6

# (difopt name, torch.optim class, hyper-parameters); each row runs in both forms.
CASES = [
    ("adam", torch.optim.Adam, dict(lr=1e-2)),
    ("adam", torch.optim.Adam, dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("adam", torch.optim.Adam, dict(lr=1e-2, maximize=True)),
    ("adam", torch.optim.Adam, dict(lr=1e-2, amsgrad=True)),
    # betas[1] = 0.6 forgets fast, so the AMSGrad maximum holds many entries (see
    # test_amsgrad_cases_exercise_the_maximum).
    (
        "adam",
        torch.optim.Adam,
        dict(lr=1e-2, betas=(0.9, 0.6), amsgrad=True, weight_decay=0.1, maximize=True),
    ),
    ("adam", torch.optim.Adam, dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)),
    ("adamw", torch.optim.AdamW, dict(lr=1e-2)),
    ("adamw", torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.5, maximize=True)),
    ("adamw", torch.optim.AdamW, dict(lr=1e-2, betas=(0.9, 0.6), weight_decay=0.3, amsgrad=True)),
    ("sgd", torch.optim.SGD, dict(lr=1e-2)),
    ("sgd", torch.optim.SGD, dict(lr=1e-2, momentum=0.9)),
    ("sgd", torch.optim.SGD, dict(lr=1e-2, momentum=0.9, nesterov=True)),
    ("sgd", torch.optim.SGD, dict(lr=1e-2, momentum=0.9, dampening=0.3, weight_decay=0.05)),
    ("sgd", torch.optim.SGD, dict(lr=1e-2, momentum=0.5, maximize=True)),
    ("rmsprop", torch.optim.RMSprop, dict(lr=1e-2)),
    ("rmsprop", torch.optim.RMSprop, dict(lr=1e-2, centered=True)),
    ("rmsprop", torch.optim.RMSprop, dict(lr=1e-2, momentum=0.5, weight_decay=0.1)),
    ("rmsprop", torch.optim.RMSprop, dict(lr=1e-2, centered=True, momentum=0.5, alpha=0.9)),
    ("adagrad", torch.optim.Adagrad, dict(lr=1e-1)),
    (
        "adagrad",
        torch.optim.Adagrad,
        dict(lr=1e-1, lr_decay=0.05, weight_decay=0.1, initial_accumulator_value=0.1),
    ),
    ("adamax", torch.optim.Adamax, dict(lr=1e-2, eps=1e-8)),
    ("adamax", torch.optim.Adamax, dict(lr=1e-2, eps=1e-8, weight_decay=0.1, maximize=True)),
    ("radam", torch.optim.RAdam, dict(lr=1e-2, eps=1e-8)),
    ("radam", torch.optim.RAdam, dict(lr=1e-2, eps=1e-8, weight_decay=0.1)),
    (
        "radam",
        torch.optim.RAdam,
        dict(lr=1e-2, eps=1e-8, weight_decay=0.1, decoupled_weight_decay=True),
    ),
    ("adadelta", torch.optim.Adadelta, dict(lr=1.0)),
    ("adadelta", torch.optim.Adadelta, dict(lr=0.5, rho=0.8, weight_decay=0.1)),
    ("adafactor", torch.optim.Adafactor, dict()),
    ("adafactor", torch.optim.Adafactor, dict(lr=0.05, weight_decay=0.1, maximize=True)),
    ("adafactor", torch.optim.Adafactor, dict(lr=0.1, d=2.0, beta2_decay=-0.5, eps=(1e-6, 1e-2))),
    ("rprop", torch.optim.Rprop, dict()),
    ("rprop", torch.optim.Rprop, dict(lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-3, 0.1))),
    ("rprop", torch.optim.Rprop, dict(lr=1e-3, maximize=True)),
    ("nadam", torch.optim.NAdam, dict(lr=1e-2)),
    ("nadam", torch.optim.NAdam, dict(lr=1e-2, weight_decay=0.1, momentum_decay=1e-2)),
    ("nadam", torch.optim.NAdam, dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)),
    # torch keeps ASGD's step size in the default dtype (float32 here): these float64 runs
    # differ from difopt's float64 step sizes by up to 2e-7 (see test_asgd_*).
    ("asgd", torch.optim.ASGD, dict(lr=1e-2)),
    ("asgd", torch.optim.ASGD, dict(lr=0.05, lambd=1e-3, alpha=0.5, t0=5, weight_decay=0.1)),
    ("asgd", torch.optim.ASGD, dict(lr=0.02, t0=0, maximize=True)),
]

CLASSIC = {
    "adam": difopt.Adam,
    "adamw": difopt.AdamW,
    "sgd": difopt.SGD,
    "rmsprop": difopt.RMSprop,
    "adagrad": difopt.Adagrad,
    "adamax": difopt.Adamax,
    "radam": difopt.RAdam,
    "adadelta": difopt.Adadelta,
    "nadam": difopt.NAdam,
    "adafactor": difopt.Adafactor,
    "rprop": difopt.Rprop,
    "asgd": difopt.ASGD,
}


def _case_id(case):
    name, _, kw = case
    return name + "-" + "-".join(f"{k}={v}" for k, v in kw.items())


def _torch_reference(torch_cls, kw):
    model, data = make_mlp(), make_data()
    opt = torch_cls(model.parameters(), **kw)
    for _ in range(STEPS):
        opt.zero_grad()
        mse(model, data).backward()
        opt.step()
    return list(model.parameters())


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_classic_matches_torch_optim(case):
    name, torch_cls, kw = case
    expected = _torch_reference(torch_cls, kw)
    model, data = make_mlp(), make_data()
    opt = CLASSIC[name](model.parameters(), **kw)
    for _ in range(STEPS):
        opt.zero_grad()
        mse(model, data).backward()
        opt.step()
    assert max_rel_err(model.parameters(), expected) < RTOL


@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "functional"])
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_functional_matches_torch_optim(case, inplace):
    name, torch_cls, kw = case
    expected = _torch_reference(torch_cls, kw)
    model, data = make_mlp(), make_data()
    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    fn_kw = dict(kw)
    # The functional aliases keep TorchOpt's own defaults; pass torch's explicitly.
    fn_kw.setdefault("lr", torch_cls([torch.zeros(1)]).defaults["lr"])
    if name in ("adamax", "radam"):
        fn_kw.setdefault("eps", 1e-8)
    impl = getattr(difopt, name)(**fn_kw)
    state = impl.init(params)
    for _ in range(STEPS):
        loss = torch.func.functional_call(model, params, (data[0],))
        loss = ((loss - data[1]) ** 2).mean()
        grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
        if inplace:
            updates, state = impl.update(grads, state, params=params, inplace=True)
            difopt.apply_updates(params, updates, inplace=True)
        else:
            updates, state = impl.update(grads, state, params=params, inplace=False)
            params = difopt.apply_updates(params, updates, inplace=False)
            params = {k: v.detach().requires_grad_() for k, v in params.items()}
    assert max_rel_err(params.values(), expected) < RTOL


def test_amsgrad_cases_exercise_the_maximum():
    """The AMSGrad rows above are not plain Adam in disguise: the running maximum differs
    from the second moment in many entries, and the parameters from Adam's."""
    kw = dict(lr=1e-2, betas=(0.9, 0.6), weight_decay=0.1)
    amsgrad = _torch_reference(torch.optim.Adam, dict(kw, amsgrad=True))
    plain = _torch_reference(torch.optim.Adam, kw)
    assert max_rel_err(amsgrad, plain) > 1e-3
    model, data = make_mlp(), make_data()
    opt = difopt.Adam(model.parameters(), amsgrad=True, **kw)
    for _ in range(STEPS):
        opt.zero_grad()
        mse(model, data).backward()
        opt.step()
    (state,) = [s for s in opt.state_groups[0] if hasattr(s, "nu_max")]
    held = sum(int((m > v).sum()) for m, v in zip(state.nu_max, state.nu))
    total = sum(v.numel() for v in state.nu)
    assert held > total // 10, (held, total)


def test_adafactor_factors_the_last_two_dimensions():
    """A 3-D parameter keeps one (rows + columns) statistic per leading index; 20 steps match
    torch.optim.Adafactor, and the state holds 4 * (5 + 6) numbers instead of 4 * 5 * 6."""
    gen = torch.Generator().manual_seed(0)
    init = torch.randn(4, 5, 6, generator=gen)
    target = torch.randn(4, 5, 6, generator=gen)
    ours, theirs = init.clone().requires_grad_(), init.clone().requires_grad_()
    opt_ours = difopt.Adafactor([ours], lr=0.05)
    opt_theirs = torch.optim.Adafactor([theirs], lr=0.05)
    for _ in range(STEPS):
        for p, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            ((p.tanh() - target) ** 2).sum().backward()
            opt.step()
    assert max_rel_err([ours], [theirs]) < RTOL
    (state,) = [s for s in opt_ours.state_groups[0] if hasattr(s, "row_var")]
    assert state.row_var[0].shape == (4, 5, 1) and state.col_var[0].shape == (4, 1, 6)
    assert state.variance[0] is None


def test_rprop_cases_flip_signs_and_hit_both_bounds():
    """The Rprop rows above exercise every branch: signs that hold and flip, and step sizes
    at the lower and the upper bound."""
    model, data = make_mlp(), make_data()
    opt = difopt.Rprop(model.parameters(), lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-3, 0.1))
    sizes = []
    flipped = 0
    for _ in range(STEPS):
        opt.zero_grad()
        mse(model, data).backward()
        before = [p.detach().clone() for p in model.parameters()]
        opt.step()
        (state,) = [s for s in opt.state_groups[0] if hasattr(s, "step_size")]
        flipped += sum(int((p.detach() == b).sum()) for p, b in zip(model.parameters(), before))
        sizes = [x.clone() for x in state.step_size]
    assert flipped > 0
    every = torch.cat([x.flatten() for x in sizes])
    assert bool((every == 1e-3).any()) and bool((every == 0.1).any())


def test_param_groups_match_torch_optim():
    model, data = make_mlp(), make_data()
    ref = copy.deepcopy(model)
    groups = lambda m: [  # noqa: E731
        {"params": list(m[0].parameters()), "lr": 0.05},
        {"params": list(m[2].parameters()) + list(m[4].parameters())},
    ]
    ours = difopt.Adam(groups(model), lr=1e-2, weight_decay=0.01)
    theirs = torch.optim.Adam(groups(ref), lr=1e-2, weight_decay=0.01)
    for _ in range(STEPS):
        for m, o in ((model, ours), (ref, theirs)):
            o.zero_grad()
            mse(m, data).backward()
            o.step()
    assert max_rel_err(model.parameters(), list(ref.parameters())) < RTOL
    assert ours.param_groups[0]["lr"] == 0.05 and ours.param_groups[1]["lr"] == 1e-2


def test_closure_and_add_param_group():
    model, data = make_mlp(), make_data()
    ref = copy.deepcopy(model)
    ours = difopt.SGD(model[0].parameters(), lr=0.1, momentum=0.9)
    ours.add_param_group({"params": model[2].parameters(), "lr": 0.01})
    theirs = torch.optim.SGD(ref[0].parameters(), lr=0.1, momentum=0.9)
    theirs.add_param_group({"params": ref[2].parameters(), "lr": 0.01})
    for _ in range(5):
        for m, o in ((model, ours), (ref, theirs)):

            def closure(m=m, o=o):
                o.zero_grad()
                loss = mse(m, data)
                loss.backward()
                return loss

            loss = o.step(closure)
            assert torch.is_tensor(loss)
    assert max_rel_err(model.parameters(), list(ref.parameters())) < RTOL


def test_classic_step_leaves_grads_untouched():
    model, data = make_mlp(), make_data()
    opt = difopt.SGD(model.parameters(), lr=0.1, maximize=True, weight_decay=0.1)
    mse(model, data).backward()
    before = [p.grad.clone() for p in model.parameters()]
    opt.step()
    for p, g in zip(model.parameters(), before):
        assert torch.equal(p.grad, g)


def test_chained_transform_as_classic_optimizer():
    """Optimizer(params, chain(clip_grad_norm, adam)) equals clip_grad_norm_ then Adam."""
    model, data = make_mlp(), make_data()
    ref = copy.deepcopy(model)
    ours = difopt.Optimizer(
        model.parameters(), difopt.chain(difopt.clip_grad_norm(0.1), difopt.adam(1e-2))
    )
    theirs = torch.optim.Adam(ref.parameters(), lr=1e-2)
    for _ in range(STEPS):
        ours.zero_grad()
        mse(model, data).backward()
        ours.step()
        theirs.zero_grad()
        mse(ref, data).backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.1)
        theirs.step()
    assert max_rel_err(model.parameters(), list(ref.parameters())) < RTOL


def test_lr_schedule_matches_torch_lambda_lr():
    sched = difopt.schedule.linear_schedule(1e-2, 1e-3, transition_steps=10)
    model, data = make_mlp(), make_data()
    ref = copy.deepcopy(model)
    ours = difopt.Adam(model.parameters(), lr=sched)
    theirs = torch.optim.Adam(ref.parameters(), lr=1.0)
    lam = torch.optim.lr_scheduler.LambdaLR(theirs, lambda t: sched(t))
    for _ in range(STEPS):
        for m, o in ((model, ours), (ref, theirs)):
            o.zero_grad()
            mse(m, data).backward()
            o.step()
        lam.step()
    assert max_rel_err(model.parameters(), list(ref.parameters())) < RTOL


def test_float32_classic_adam_close_to_torch():
    model, data = make_mlp(dtype=torch.float32), make_data(dtype=torch.float32)
    ref = copy.deepcopy(model)
    ours = difopt.Adam(model.parameters(), lr=1e-2)
    theirs = torch.optim.Adam(ref.parameters(), lr=1e-2, foreach=True)
    for _ in range(5):
        for m, o in ((model, ours), (ref, theirs)):
            o.zero_grad()
            mse(m, data).backward()
            o.step()
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_editing_param_group_lr_takes_effect_like_torch():
    model, data = make_mlp(), make_data()
    ref = copy.deepcopy(model)
    ours = difopt.Adam(model.parameters(), lr=1e-2)
    theirs = torch.optim.Adam(ref.parameters(), lr=1e-2)
    for step in range(STEPS):
        if step == 10:
            for opt in (ours, theirs):
                for g in opt.param_groups:
                    g["lr"] = 3e-3
                    g["weight_decay"] = 0.1
        for m, o in ((model, ours), (ref, theirs)):
            o.zero_grad()
            mse(m, data).backward()
            o.step()
    assert max_rel_err(model.parameters(), list(ref.parameters())) < RTOL
    ours.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match="'lr'"):
        ours.step()
    sgd = difopt.SGD(model.parameters(), lr=0.1)
    sgd.param_groups[0]["momentum"] = 0.9
    with pytest.raises(ValueError, match="state layout"):
        sgd.step()


def test_parameters_without_grad_are_not_updated():
    """A frozen parameter (grad None) is skipped even with weight decay, as in torch.optim."""
    model, data = make_mlp(), make_data()
    frozen = model[0].weight
    frozen.requires_grad_(False)
    before = frozen.detach().clone()
    opt = difopt.AdamW(model.parameters(), lr=0.1, weight_decay=0.5)
    for _ in range(3):
        opt.zero_grad()
        mse(model, data).backward()
        opt.step()
    assert torch.equal(frozen, before)
    assert not torch.equal(model[2].weight, make_mlp()[2].weight)


def _scheduled(cls, kw, lr, steps=12):
    model, data = make_mlp(), make_data()
    opt = cls(model.parameters(), lr=lr, **kw)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=7)
    for _ in range(steps):
        opt.zero_grad()
        mse(model, data).backward()
        opt.step()
        sched.step()
    return list(model.parameters()), opt


@pytest.mark.parametrize("as_tensor", [False, True], ids=["float-lr", "tensor-lr"])
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_torch_lr_scheduler_drives_classic_optimizers_like_torch_optim(case, as_tensor):
    """The classic forms are torch.optim.Optimizers: torch's schedulers edit their
    param_groups' lr (a float: the transformation is rebuilt; a 0-d tensor: filled in place
    and read at every step) with torch.optim's results."""
    name, torch_cls, kw = case
    kw = dict(kw)
    lr = kw.pop("lr", torch_cls([torch.zeros(1)]).defaults["lr"])

    def make_lr():
        return torch.tensor(float(lr), dtype=torch.float64) if as_tensor else lr

    expected, _ = _scheduled(torch_cls, kw, make_lr())
    got, opt = _scheduled(CLASSIC[name], kw, make_lr())
    assert isinstance(opt, torch.optim.Optimizer)
    assert max_rel_err(got, expected) < RTOL


def test_classic_optimizer_runs_torch_optim_step_hooks_and_copies():
    model, data = make_mlp(), make_data()
    opt = difopt.Adam(model.parameters(), lr=1e-2)
    calls = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))
    mse(model, data).backward()
    opt.step()
    assert calls == ["pre", "post"]
    clone = copy.deepcopy(opt)  # the transformation state travels with the copy
    assert len(clone.state_groups) == 1
    for a, b in zip(
        difopt.pytree.tree_leaves(clone.state_groups), difopt.pytree.tree_leaves(opt.state_groups)
    ):
        assert torch.equal(a, b) and a is not b


@pytest.mark.parametrize("bad", [torch.tensor([0.1, 0.2]), torch.tensor(-0.1), torch.tensor(1)])
def test_tensor_learning_rate_must_be_a_non_negative_0d_float(bad):
    with pytest.raises(ValueError, match="Invalid value for 'lr'.*0-d floating-point tensor"):
        difopt.Adam([torch.zeros(2, requires_grad=True)], lr=bad)


@pytest.mark.parametrize(
    "case",
    [
        ("adam", torch.optim.Adam, dict(lr=1e-2, weight_decay=0.1)),
        ("sgd", torch.optim.SGD, dict(lr=1e-2, momentum=0.9, weight_decay=0.1)),
        ("adagrad", torch.optim.Adagrad, dict(lr=1e-1, lr_decay=0.05, weight_decay=0.1)),
    ],
    ids=["adam", "sgd-momentum", "adagrad-lr_decay"],
)
def test_scheduler_with_missing_gradients_and_other_edits_like_torch_optim(case):
    """A scheduler's lr edit only re-scales the end of the chain where lr does nothing else
    (Adam, SGD: no rebuild), or rebuilds it (Adagrad's lr_decay); steps with a missing
    gradient and a later weight_decay edit need the whole chain again."""
    name, torch_cls, kw = case

    def run(cls):
        model, data = make_mlp(), make_data()
        opt = cls(model.parameters(), **kw)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=7)
        for k in range(12):
            opt.zero_grad()
            mse(model, data).backward()
            if k in (3, 4):
                next(model.parameters()).grad = None
            if k == 6:
                opt.param_groups[0]["weight_decay"] = 0.3
            opt.step()
            sched.step()
        return list(model.parameters())

    assert max_rel_err(run(CLASSIC[name]), run(torch_cls)) < RTOL


def test_adan_reads_a_tensor_lr_at_every_step():
    """Adan's proximal weight decay divides by ``1 + lr * weight_decay``: with a tensor lr
    that a scheduler sets to 0, a step leaves the parameters as they are (closed form)."""
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    lr = torch.tensor(0.1, dtype=torch.float64)
    opt = difopt.Adan([w], lr=lr, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.0)
    (w**2).sum().backward()
    opt.step()
    sched.step()
    assert float(lr) == 0.0
    before = w.detach().clone()
    opt.zero_grad()
    (w**2).sum().backward()
    opt.step()
    assert torch.equal(w.detach(), before)


def test_copies_of_a_scheduled_optimizer_are_independent_and_pickle():
    model = make_mlp()
    opt = difopt.Adam(model.parameters(), lr=1e-2)
    torch.optim.lr_scheduler.StepLR(opt, step_size=1)  # attaches a step wrapper to opt
    clone = copy.deepcopy(opt)
    before = [p.detach().clone() for p in model.parameters()]
    for p in clone.param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    clone.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), before))
    assert not all(torch.equal(a, b) for a, b in zip(clone.param_groups[0]["params"], before))
    pickle.loads(pickle.dumps(opt))


@pytest.mark.parametrize("as_tensor", [False, True], ids=["float-lr", "tensor-lr"])
def test_resuming_from_a_state_dict_restores_the_scheduled_lr_like_torch_optim(as_tensor):
    """Save after 5 scheduled steps, load into a fresh optimizer and scheduler, run 5 more:
    the same parameters as torch.optim doing the same (CosineAnnealingLR reads the group's
    current lr, which load_state_dict must restore)."""

    def run(cls):
        model, data = make_mlp(), make_data()

        def make(params):
            lr = torch.tensor(1e-2, dtype=torch.float64) if as_tensor else 1e-2
            opt = cls(params, lr=lr)
            return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=7)

        opt, sched = make(model.parameters())
        for k in range(10):
            if k == 5:
                saved, saved_sched = opt.state_dict(), sched.state_dict()
                opt, sched = make(model.parameters())
                opt.load_state_dict(copy.deepcopy(saved))
                sched.load_state_dict(saved_sched)
            opt.zero_grad()
            mse(model, data).backward()
            opt.step()
            sched.step()
        return list(model.parameters())

    assert max_rel_err(run(difopt.Adam), run(torch.optim.Adam)) < RTOL


def _asgd_runs(kw, schedule=None):
    """20 steps of torch.optim.ASGD (its step sizes kept in float64, as difopt keeps them) and
    of difopt.ASGD: (parameters, averages) of each."""
    out = []
    for cls in (torch.optim.ASGD, difopt.ASGD):
        model, data = make_mlp(), make_data()
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)  # torch's ASGD scalars take the default dtype
        try:
            opt = cls(model.parameters(), **kw)
            sched = schedule(opt) if schedule is not None else None
            for _ in range(STEPS):
                opt.zero_grad()
                mse(model, data).backward()
                opt.step()
                if sched is not None:
                    sched.step()
        finally:
            torch.set_default_dtype(previous)
        if cls is torch.optim.ASGD:
            ax = [opt.state[p]["ax"] for p in model.parameters()]
        else:
            (state,) = [
                s for s in opt.state_groups[0] if isinstance(s, difopt.transform.ScaleByAsgdState)
            ]
            ax = list(state.ax)
        out.append((list(model.parameters()), ax))
    return out


@pytest.mark.parametrize(
    "kw",
    [
        dict(lr=0.05, lambd=1e-2, alpha=0.5, t0=5, weight_decay=0.1),
        dict(lr=0.02, lambd=0.0, t0=-3, maximize=True),
        dict(lr=0.05, t0=0),
    ],
)
def test_asgd_parameters_and_average_match_torch_optim(kw):
    """The iterates and the running average (torch's ``state['ax']``) after 20 steps, with
    averaging from step t0 on; torch's step sizes in float64, so the match is to rounding."""
    (theirs, their_ax), (ours, our_ax) = _asgd_runs(kw)
    assert max_rel_err(ours, theirs) < 1e-12
    assert max_rel_err(our_ax, their_ax) < 1e-12
    assert max_rel_err(our_ax, theirs) > 1e-4  # the average is not the last iterate


def test_asgd_first_step_takes_lr_as_a_scheduler_left_it():
    """A scheduler that sets lr before the first step (LambdaLR at epoch 0): torch.optim.ASGD
    makes its state, hence its first step size, at the first step."""
    schedule = lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.5 / (1 + e))  # noqa: E731
    (theirs, their_ax), (ours, our_ax) = _asgd_runs(dict(lr=0.1, t0=3), schedule)
    assert max_rel_err(ours, theirs) < 1e-12
    assert max_rel_err(our_ax, their_ax) < 1e-12


def test_asgd_rejects_a_schedule_and_bad_values():
    with pytest.raises(TypeError, match="'lr': ASGD decays its step size"):
        difopt.asgd(lr=lambda count: 0.1)
    with pytest.raises(ValueError, match="'lambd'"):
        difopt.asgd(lambd=-1.0)
    with pytest.raises(ValueError, match="'t0'"):
        difopt.asgd(t0=float("nan"))
    with pytest.raises(ValueError, match="'alpha'"):
        difopt.asgd(alpha=float("inf"))
    with pytest.raises(ValueError, match="scale_by_asgd needs 'params'"):
        tx = difopt.asgd()
        p = (torch.zeros(2),)
        tx.update(p, tx.init(p))


def _meta_class(name):
    return getattr(difopt.optim.meta, "Meta" + CLASSIC[name].__name__, None)


META_CASES = [c for c in CASES if _meta_class(c[0]) is not None]


@pytest.mark.parametrize("case", META_CASES, ids=[_case_id(c) for c in META_CASES])
def test_meta_step_without_a_graph_matches_torch_optim_and_keeps_its_inputs(case):
    """A meta optimizer stepped under ``torch.no_grad()`` (how difopt-unroll advances between
    checkpoints) takes torch.optim's steps, and leaves the parameters and the state it was
    given as they were: the new values are new tensors (its no-graph path writes into
    buffers of its own only)."""
    name, torch_cls, kw = case
    expected = _torch_reference(torch_cls, kw)
    model, data = make_mlp(), make_data()
    opt = _meta_class(name)(model, **kw)
    for _ in range(STEPS):
        before = [p.detach().clone() for p in model.parameters()]
        old_params = list(model.parameters())
        old_state = [t for t in difopt.pytree.tree_leaves(opt.state_groups) if torch.is_tensor(t)]
        old_values = [t.detach().clone() for t in old_state]
        loss = mse(model, data)
        with torch.no_grad():
            opt.step(loss)
        for p, b in zip(old_params, before):
            assert torch.equal(p, b)
        for t, v in zip(old_state, old_values):
            assert torch.equal(t, v)
        for p in model.parameters():
            assert p.grad_fn is None
            p.requires_grad_()
    assert max_rel_err(model.parameters(), expected) < RTOL
