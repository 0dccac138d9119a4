"""What a TorchOpt 0.7.3 user's code meets when it moves to difopt unchanged (issue 17).

Each case comes from TorchOpt's tutorials or docs: the behaviour TorchOpt documents is the
oracle, and where difopt deliberately differs (the derivative of gradient clipping), the closed
form of both derivatives is. The ``torchopt`` import alias (:mod:`difopt.compat`) is tested in
fresh interpreters, since it changes the import system of the process.
"""

from __future__ import annotations

import math
import pathlib
import textwrap

import numpy as np
import pytest
import torch

import difopt
from core_testing import run_python


class _Quadratic(torch.nn.Module):
    """TorchOpt tutorial 3's network: ``a * x**2`` with ``a`` initialised to 1."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a * x**2


# -- the classic optimizer on tensors that are not leaves ------------------------------------


def test_a_classic_optimizer_accepts_parameters_after_a_meta_step():
    # TorchOpt tutorial 3: after a MetaSGD step the module's parameters are not leaves.
    net = torch.nn.Linear(1, 1)
    difopt.MetaSGD(net, lr=0.1).step(net(torch.ones(1)).sum())
    assert not net.weight.is_leaf
    opt = difopt.Adam(net.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in net.parameters()]
    # No .grad on a non-leaf that does not retain it: nothing moves, as in TorchOpt, and torch
    # says why when the step reads it.
    with pytest.warns(UserWarning, match="not a leaf"):
        opt.step()
    for p, b in zip(net.parameters(), before):
        assert torch.equal(p.detach(), b)


def test_a_non_leaf_that_retains_its_grad_steps_as_torch_optim_steps_a_leaf():
    torch.manual_seed(0)
    start = torch.randn(5, dtype=torch.float64)
    source = start.clone().requires_grad_()
    x = source * 1.0  # not a leaf
    x.retain_grad()
    oracle = torch.nn.Parameter(start.clone())
    reference = torch.optim.Adam([oracle], lr=0.1)
    opt = difopt.Adam([x], lr=0.1)
    for _ in range(3):
        g = torch.randn(5, dtype=torch.float64)
        x.grad, oracle.grad = g.clone(), g.clone()
        opt.step()
        reference.step()
    torch.testing.assert_close(x.detach(), oracle.detach())


def test_stop_gradient_makes_the_held_tensors_leaves_again_and_steps_then_reach_the_module():
    # TorchOpt tutorial 4's loop: the outer optimizer was built on the tensors a meta step made;
    # stop_gradient detaches them in place, so the same objects are leaves with a .grad.
    net = _Quadratic()
    x = torch.tensor(2.0)
    difopt.MetaSGD(net, lr=1.0).step(net(x))  # a = 1 - x**2 = -3
    outer = difopt.SGD(net.parameters(), lr=0.5)
    difopt.stop_gradient(net)
    assert net.a.is_leaf
    net(x).backward()  # d(a x^2)/da = x^2 = 4
    outer.step()
    assert float(net.a.detach()) == pytest.approx(-3.0 - 0.5 * 4.0)


# -- gradient clipping inside a meta optimizer ------------------------------------------------


@pytest.mark.parametrize(("detach_factor", "expected"), [(False, -4.0), (True, -12.0)])
def test_the_meta_gradient_through_clipping_matches_its_closed_form(detach_factor, expected):
    # TorchOpt tutorial 3, section 3: inner loss a0*x^2, g = x^2 = 4 is clipped to norm 2, then
    # a1 = a0 - c*g with c = 2/(|g| + 1e-6). Exact: c*g = 2 g/(g + 1e-6) barely depends on x, so
    # d(a1 x^2)/dx = 2*a1*x = -4. With c a constant (TorchOpt): da1/dx = -c*2x = -2, so the
    # derivative is -2*x^2 + 2*a1*x = -12.
    net = _Quadratic()
    x = torch.tensor(2.0, requires_grad=True)
    impl = difopt.chain(
        difopt.clip.clip_grad_norm(max_norm=2.0, detach_factor=detach_factor),
        difopt.sgd(lr=1.0),
    )
    optim = difopt.MetaOptimizer(net, impl)
    optim.step(net(x))
    net(x).backward()
    assert float(x.grad) == pytest.approx(expected, abs=1e-5)


def test_detach_factor_must_be_a_bool():
    with pytest.raises(TypeError, match="'detach_factor'"):
        difopt.clip.clip_grad_norm(1.0, detach_factor="yes")


# -- the torchopt alias -----------------------------------------------------------------------


def _python(*args: str, cwd: pathlib.Path, env_path: pathlib.Path | None = None) -> str:
    """Run ``python args`` in a fresh interpreter; return its stdout."""
    env = {"PYTHONPATH": str(env_path)} if env_path is not None else None
    return run_python(*args, cwd=cwd, env=env).stdout


def _write(folder: pathlib.Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text))


# A TorchOpt program of two files, written as TorchOpt's docs write them: module-path imports
# that `import difopt as torchopt` alone cannot serve.
_PROGRAM = {
    "train.py": """
        import sys

        import torch
        import torchopt
        from torchopt.optim.meta import MetaSGD
        from torchopt import pytree

        from inner import adapt

        net = torch.nn.Linear(3, 1)
        x, y = torch.ones(4, 3), torch.zeros(4, 1)
        init = torchopt.extract_state_dict(net)
        adapt(net, MetaSGD(net, lr=float(sys.argv[1])), x, y)
        torch.nn.functional.mse_loss(net(x), y).backward()
        torchopt.recover_state_dict(net, init)
        print(__name__, sys.argv[1:], net.weight.grad is not None,
              type(torchopt).__name__, torchopt.__name__, pytree.__name__)
    """,
    "inner.py": """
        import torch.nn.functional as F
        import torchopt.transform as T
        from torchopt.base import GradientTransformation

        assert isinstance(T.scale_by_adam(), GradientTransformation)

        def adapt(net, optim, x, y):
            optim.step(F.mse_loss(net(x), y))
    """,
}


def test_python_m_difopt_compat_runs_a_torchopt_program_unchanged(tmp_path):
    _write(tmp_path, _PROGRAM)
    out = _python("-m", "difopt.compat", "train.py", "0.1", cwd=tmp_path)
    assert out.split() == ["__main__", "['0.1']", "True", "module", "difopt", "difopt.pytree"]


def test_python_m_difopt_compat_runs_a_module(tmp_path):
    (tmp_path / "pkg").mkdir()
    _write(tmp_path / "pkg", {"__init__.py": "", "__main__.py": _PROGRAM["train.py"]})
    _write(tmp_path, {"inner.py": _PROGRAM["inner.py"]})
    out = _python("-m", "difopt.compat", "-m", "pkg", "0.5", cwd=tmp_path, env_path=tmp_path)
    assert out.split()[:3] == ["__main__", "['0.5']", "True"]


def test_alias_torchopt_binds_difopt_modules_and_can_be_removed(tmp_path):
    code = """
        import sys
        import difopt.compat as compat

        assert "torchopt" not in sys.modules
        compat.alias_torchopt()
        compat.alias_torchopt()  # idempotent
        import torchopt.schedule as S
        from torchopt.diff.implicit import nn as implicit_nn  # a plugin path still resolves
        import difopt.schedule
        assert S is difopt.schedule and compat.is_aliased()
        for private in ("torchopt._src", "torchopt.accelerated_op._src"):
            try:
                __import__(private)  # TorchOpt's private modules: not provided
            except ModuleNotFoundError as err:
                assert "difopt" + private[len("torchopt"):] in str(err), err
            else:
                raise AssertionError(f"{private} resolved")
        compat.remove_torchopt_alias()
        assert not compat.is_aliased() and "torchopt.schedule" not in sys.modules
        try:
            import torchopt
        except ModuleNotFoundError:
            print("removed")
    """
    _write(tmp_path, {"prog.py": code})
    assert _python("prog.py", cwd=tmp_path).split() == ["removed"]


def test_the_alias_refuses_when_the_real_torchopt_is_imported_or_installed(tmp_path):
    site = tmp_path / "site"
    (site / "torchopt").mkdir(parents=True)
    (site / "torchopt" / "__init__.py").write_text("REAL = True\n")
    code = """
        import sys
        import difopt.compat as compat

        try:
            compat.alias_torchopt()
        except compat.TorchOptAliasError as err:
            print("installed:", "shadow_installed=True" in str(err))
        import torchopt
        assert torchopt.REAL  # not shadowed
        try:
            compat.alias_torchopt(shadow_installed=True)
        except compat.TorchOptAliasError as err:
            print("imported:", "already imported" in str(err))
        del sys.modules["torchopt"]
        compat.alias_torchopt(shadow_installed=True)
        import torchopt, difopt
        print("shadowed:", torchopt is difopt)
    """
    _write(tmp_path, {"prog.py": code})
    out = _python("prog.py", cwd=tmp_path, env_path=site)
    assert out.splitlines() == ["installed: True", "imported: True", "shadowed: True"]
    _write(tmp_path, {"main.py": "import torchopt; print(torchopt.__name__)\n"})
    done = run_python(
        "-m", "difopt.compat", "main.py", cwd=tmp_path, env={"PYTHONPATH": str(site)}, check=False
    )
    assert done.returncode == 2 and "--shadow-installed" in done.stderr
    out = _python("-m", "difopt.compat", "--shadow-installed", "main.py", cwd=tmp_path)
    assert out.strip() == "difopt"


def test_python_m_difopt_compat_explains_its_usage(tmp_path):
    done = run_python("-m", "difopt.compat", check=False)
    assert done.returncode == 2 and "usage: python -m difopt.compat" in done.stderr
    done = run_python("-m", "difopt.compat", str(tmp_path / "missing.py"), check=False)
    assert done.returncode == 2 and "missing.py" in done.stderr


def test_torchopt_files_resolve_to_the_difopt_module_holding_their_names(tmp_path):
    code = """
        import difopt.compat

        difopt.compat.alias_torchopt()
        from torchopt.alias.adam import adam
        from torchopt.optim.meta.sgd import MetaSGD
        from torchopt.schedule.polynomial import linear_schedule
        from torchopt.transform.scale_by_adam import ScaleByAdamState
        import torchopt.transform.scale_by_adam as by_adam
        import difopt

        # As in TorchOpt, whose packages re-import each file's names: the name, not the file.
        assert adam is difopt.alias.adam is difopt.adam and by_adam is difopt.transform.scale_by_adam
        assert MetaSGD is difopt.MetaSGD and linear_schedule is difopt.schedule.linear_schedule
        assert ScaleByAdamState is difopt.transform.ScaleByAdamState
        try:
            from torchopt.transform.utils import tree_map_flat  # private to TorchOpt's file
        except ImportError:
            print("ok")
    """
    _write(tmp_path, {"prog.py": code})
    assert _python("-W", "error", "prog.py", cwd=tmp_path).split() == ["ok"]


# -- inputs TorchOpt accepts ------------------------------------------------------------------


def test_an_optimizer_may_start_empty_and_take_groups_later():
    opt = difopt.Adam([], lr=0.1)
    opt.step()
    w = torch.nn.Parameter(torch.ones(2))
    opt.add_param_group({"params": [w]})
    w.grad = torch.ones(2)
    opt.step()
    # Adam's first step moves every coordinate by lr (m_hat / sqrt(v_hat) = 1).
    torch.testing.assert_close(w.detach(), torch.full((2,), 0.9))


def test_params_may_be_a_dict_of_tensors():
    w, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.zeros(1))
    for params in ([{"w": w, "b": b}], {"w": w, "b": b}):
        with torch.no_grad():
            w.fill_(1.0), b.zero_()
        opt = difopt.SGD(params, lr=0.1)
        w.grad, b.grad = torch.ones(2), torch.ones(1)
        opt.step()
        torch.testing.assert_close(w.detach(), torch.full((2,), 0.9))
        torch.testing.assert_close(b.detach(), torch.full((1,), -0.1))


def test_a_model_cast_after_building_its_optimizer_steps_as_torch_optim():
    # torch.optim and TorchOpt create their state at the first step, so net.double() after
    # building the optimizer is fine; difopt creates it again at the first step if needed.
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    oracle = torch.nn.Linear(3, 1).double()
    oracle.load_state_dict(net.state_dict())
    opt, reference = (
        difopt.Adam(net.parameters(), lr=0.1),
        torch.optim.Adam(oracle.parameters(), lr=0.1),
    )
    net.double()
    x = torch.randn(8, 3, dtype=torch.float64)
    for _ in range(3):
        for model, o in ((net, opt), (oracle, reference)):
            o.zero_grad()
            model(x).pow(2).mean().backward()
            o.step()
    for p, q in zip(net.parameters(), oracle.parameters()):
        assert p.dtype == torch.float64
        torch.testing.assert_close(p, q)


def test_schedules_take_what_torchopt_documents():
    constant = difopt.schedule.linear_schedule(0.1, 0.01, transition_steps=0)
    assert [constant(t) for t in (0, 5, 100)] == [0.1, 0.1, 0.1]
    assert difopt.schedule.exponential_decay(1.0, 0.5, transition_steps=0)(7) == 1.0
    s = difopt.schedule.linear_schedule(torch.tensor(0.1), 0.0, transition_steps=np.int64(10))
    torch.testing.assert_close(s(5), torch.tensor(0.05))
    with pytest.raises(ValueError, match="'transition_steps'"):
        difopt.schedule.linear_schedule(0.1, 0.0, transition_steps=2.5)


def test_scale_by_radam_takes_torchopts_positional_order():
    # TorchOpt: scale_by_radam(b1, b2, eps, moment_requires_grad).
    tx = difopt.transform.scale_by_radam(0.9, 0.999, 1e-6, True)
    state = tx.init(torch.zeros(2))
    assert state.mu.requires_grad


def test_pytree_helpers_take_torchopts_signatures():
    from difopt import pytree

    a = {"x": torch.eye(2) * 2.0}
    torch.testing.assert_close(pytree.tree_matmul(a, a, a)["x"], torch.eye(2) * 8.0)
    torch.testing.assert_close(
        pytree.tree_sub(minuend_tree=a, subtrahend_tree=a)["x"], torch.zeros(2, 2)
    )
    leaves, _ = pytree.tree_flatten_as_tuple([1, None], none_is_leaf=True)
    assert leaves == (1, None)
    assert pytree.acc_add(1, 2, 3) == 6 and pytree.acc_mul(2, 3) == 6


def test_the_parts_of_a_meta_module_input_are_meta_too():
    # TorchOpt's MetaGradientModule: a module given to the constructor is a meta-module, and so
    # are its sub-modules and parameters when assigned on their own.
    class Inner(difopt.nn.MetaGradientModule):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.head = net[0]
            self.w = net[1].weight
            self.own = torch.nn.Parameter(torch.zeros(2))

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    inner = Inner(net)
    assert [n for n, _ in inner.named_parameters()] == ["own"]
    meta = {id(p) for p in inner.meta_parameters()}
    assert meta == {id(net[0].weight), id(net[0].bias), id(net[1].weight)}


def test_the_sgd_classes_take_torchopts_positional_order():
    # TorchOpt: SGD(params, lr, momentum, weight_decay, dampening, nesterov, maximize), and
    # MetaSGD(module, lr, momentum, weight_decay, dampening, nesterov, moment_requires_grad,
    # maximize): weight_decay before dampening, unlike torch.optim.SGD.
    w = torch.nn.Parameter(torch.ones(2))
    group = difopt.SGD([w], 0.1, 0.9, 1e-4).param_groups[0]
    assert (group["momentum"], group["weight_decay"], group["dampening"]) == (0.9, 1e-4, 0.0)
    meta = difopt.MetaSGD(torch.nn.Linear(1, 1), 0.1, 0.9, 1e-4, 0.0, False, True, False)
    assert meta.defaults["weight_decay"] == 1e-4 and meta.defaults["moment_requires_grad"]


def test_a_module_cast_after_building_a_meta_optimizer_steps():
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    opt = difopt.MetaAdam(net, lr=0.1)
    net.double()
    before = [p.detach().clone() for p in net.parameters()]
    opt.step(net(torch.ones(1, 2, dtype=torch.float64)).sum())
    # Adam's first step moves each parameter by -lr * g / (|g| + eps); the gradient of
    # w.x + b at x = 1 is 1 for every parameter, so each decreases by lr (to 1e-8).
    after = [net.weight, net.bias]
    for p, b in zip(after, before):
        assert p.dtype == torch.float64
        torch.testing.assert_close(p.detach(), b - 0.1, rtol=0, atol=1e-7)


def test_stop_gradient_of_a_meta_sgd_with_momentum_after_its_first_step():
    # The MAML loop of TorchOpt's tutorial 4: the first step's momentum buffer is a new tensor
    # (not the autograd gradient, which may be a view that cannot be detached in place).
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    opt = difopt.MetaSGD(net, lr=0.1, momentum=0.9)
    x = torch.randn(5, 3)
    for _ in range(2):
        opt.step(net(x).pow(2).mean())
        difopt.stop_gradient(net)
        difopt.stop_gradient(opt)
    assert all(t.grad_fn is None for t in difopt.pytree.tree_leaves(opt.state_groups))


def test_a_meta_state_dict_round_trip_keeps_the_graph():
    # TorchOpt's MetaOptimizer.state_dict()/load_state_dict() pass references both ways.
    x = torch.tensor(2.0, requires_grad=True)
    net = _Quadratic()
    opt = difopt.MetaAdam(net, lr=0.1)
    opt.step(net(x))
    opt.load_state_dict(opt.state_dict())
    mu = opt.state_groups[0][1].mu[0]
    assert mu.grad_fn is not None
    (grad,) = torch.autograd.grad(mu, x)  # mu = (1 - b1) * d(a x^2)/da = 0.1 * x^2
    assert float(grad) == pytest.approx(0.1 * 2 * 2.0)


def test_a_callable_schedule_gets_the_count_as_a_tensor():
    # TorchOpt passes the step count as a 0-d int64 tensor: torch.cos(count / 10) works.
    w = torch.nn.Parameter(torch.zeros(1))
    seen = []

    def schedule(count):
        seen.append(count)
        return 0.1 * torch.cos(count / 10)

    opt = difopt.SGD([w], lr=schedule)
    for _ in range(2):
        w.grad = torch.ones(1)
        opt.step()
    assert all(torch.is_tensor(c) and c.dtype == torch.int64 for c in seen)
    expected = -0.1 * (math.cos(0.0) + math.cos(0.1))
    assert float(w.detach()) == pytest.approx(expected, rel=1e-6)


def test_a_weight_decay_mask_may_be_a_flat_list_of_flags():
    net = torch.nn.Linear(2, 1)
    for mask in ([True, False], lambda ps: [p.ndim > 1 for p in ps], (np.bool_(True), False)):
        with torch.no_grad():
            net.weight.fill_(1.0), net.bias.fill_(1.0)
        opt = difopt.AdamW(net.parameters(), lr=0.1, weight_decay=0.5, mask=mask)
        net.weight.grad, net.bias.grad = torch.zeros(1, 2), torch.zeros(1)
        opt.step()
        # Decoupled decay multiplies the masked weight by 1 - lr * wd; the bias is not decayed.
        torch.testing.assert_close(net.weight.detach(), torch.full((1, 2), 0.95))
        torch.testing.assert_close(net.bias.detach(), torch.ones(1))


def test_numpy_scalars_and_int_flags_as_hyper_parameters():
    w = torch.nn.Parameter(torch.ones(2))
    opt = difopt.Adam([w], lr=np.float32(0.5), betas=np.array([0.9, 0.999]))
    assert type(opt.param_groups[0]["lr"]) is float
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)
    difopt.SGD([w], 0.1, momentum=0.9, nesterov=1)
    difopt.RMSProp([w], centered=np.bool_(True))
    with pytest.raises(TypeError, match="'nesterov'"):
        difopt.SGD([w], 0.1, momentum=0.9, nesterov="False")  # truthy, not a flag


def test_a_bad_loss_is_both_a_value_and_a_runtime_error():
    # TorchOpt's meta step raises RuntimeError (from torch.autograd.grad) on such a loss.
    net = torch.nn.Linear(1, 1)
    with pytest.raises(RuntimeError, match="'loss'"):
        difopt.MetaSGD(net, lr=0.1).step(torch.tensor(1.0))
    with pytest.raises(ValueError, match="'loss'"):
        difopt.MetaSGD(net, lr=0.1).step(net(torch.ones(2, 1)))
