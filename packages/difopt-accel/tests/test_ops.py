"""The operators themselves: opcheck, values against a float64 formula, argument errors."""

from __future__ import annotations

import pytest
import torch

import difopt_accel

ops = torch.ops.difopt_accel
HYPER = (0.9, 0.999, 1e-8, 1e-6)  # b1, b2, eps, eps_root
SHAPES = [(3, 4), (5,), (), (0, 2), (70000,)]  # scalar, empty, and a multi-chunk tensor


def lists(dtype=torch.float32, shapes=SHAPES, requires_grad=False):
    def make(scale: float = 1.0, positive: bool = False) -> list[torch.Tensor]:
        xs = [torch.randn(s, dtype=dtype) * scale for s in shapes]
        xs = [x.abs() if positive else x for x in xs]
        return [x.requires_grad_(requires_grad) for x in xs]

    return make(), make(0.1), make(0.01, positive=True), make()  # grads, mu, nu, params


def reference(g, m, v, p, t, b1, b2, eps, eps_root, factor):
    """Adam written out in float64."""
    g, m, v = g.double(), m.double(), v.double()
    m2 = b1 * m + (1 - b1) * g
    v2 = b2 * v + (1 - b2) * g * g
    d = (m2 / (1 - b1**t)) / (torch.sqrt(v2 / (1 - b2**t) + eps_root) + eps)
    out = factor * d if p is None else p.double() + factor * d
    return out, m2, v2


@pytest.mark.parametrize("with_params", [True, False], ids=["params", "no-params"])
@pytest.mark.parametrize("requires_grad", [False, True], ids=["nograd", "grad"])
def test_opcheck_adam(with_params: bool, requires_grad: bool) -> None:
    g, m, v, p = lists(torch.float64, shapes=[(3, 4), (5,), ()], requires_grad=requires_grad)
    args = (g, m, v, p if with_params else [], torch.tensor(3), *HYPER, -0.1)
    torch.library.opcheck(ops.adam.default, args)


@pytest.mark.parametrize("accumulate", [True, False])
def test_opcheck_adam_inplace(accumulate: bool) -> None:
    g, m, v, p = lists(shapes=[(3, 4), (5,), ()])
    args = (p, m, v, g, torch.tensor(2), *HYPER, -0.1, accumulate)
    torch.library.opcheck(ops.adam_.default, args)


@pytest.mark.parametrize("state_grads", [True, False])
@pytest.mark.parametrize("moment_grads", [True, False])
def test_opcheck_adam_backward(state_grads: bool, moment_grads: bool) -> None:
    g, m, v, d = lists(torch.float64, shapes=[(3, 4), (5,), ()])
    dm, dv = (m, v) if state_grads else ([], [])
    args = (d, dm, dv, g, m, v, torch.tensor(2), *HYPER, -0.1, moment_grads)
    torch.library.opcheck(ops.adam_backward.default, args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("t", [1, 7])
def test_values_match_the_formula(dtype: torch.dtype, t: int) -> None:
    g, m, v, p = lists(dtype)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    out, m2, v2 = difopt_accel.adam(
        g, m, v, torch.tensor(t), params=p, b1=0.8, b2=0.99, eps=1e-3, eps_root=1e-4, factor=-0.5
    )
    for i in range(len(g)):
        ro, rm, rv = reference(g[i], m[i], v[i], p[i], t, 0.8, 0.99, 1e-3, 1e-4, -0.5)
        torch.testing.assert_close(out[i].double(), ro, rtol=tol, atol=tol)
        torch.testing.assert_close(m2[i].double(), rm, rtol=tol, atol=tol)
        torch.testing.assert_close(v2[i].double(), rv, rtol=tol, atol=tol)
        assert out[i].dtype == dtype and out[i].is_contiguous()


def test_inplace_op_equals_the_functional_op() -> None:
    g, m, v, p = lists()
    out, m2, v2 = difopt_accel.adam(g, m, v, torch.tensor(4), params=p, factor=-0.01)
    difopt_accel.adam_(p, m, v, g, torch.tensor(4), factor=-0.01)
    for a, b in zip(out + m2 + v2, p + m + v):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    direction = [torch.empty_like(x) for x in g]
    difopt_accel.adam_(
        direction,
        [torch.zeros_like(x) for x in g],
        [torch.zeros_like(x) for x in g],
        g,
        torch.tensor(1),
        eps=0.0,
        accumulate=False,
    )
    for d, x in zip(direction, g):  # first step without eps: sign(g)
        torch.testing.assert_close(d, torch.sign(x))


def test_threads_do_not_change_the_result() -> None:
    g, m, v, p = lists()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = difopt_accel.adam(g, m, v, torch.tensor(2), params=p)
        torch.set_num_threads(2)
        two = difopt_accel.adam(g, m, v, torch.tensor(2), params=p)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(sum(one, []), sum(two, [])):
        assert torch.equal(a, b)


BAD_CASES = {
    "length": (lambda g, m, v, p: (g, m[:1], v, p), ValueError, "'mu' has 1 tensors"),
    "dtype": (
        lambda g, m, v, p: (g, [m[0].double(), *m[1:]], v, p),
        TypeError,
        r"'mu'\[0\] has dtype Double",
    ),
    "half": (
        lambda g, m, v, p: (
            [x.half() for x in g],
            [x.half() for x in m],
            [x.half() for x in v],
            [],
        ),
        TypeError,
        "cpu kernel supports float32 and float64",
    ),
    "shape": (
        lambda g, m, v, p: (g, m, [v[0].reshape(-1), *v[1:]], p),
        ValueError,
        r"'nu'\[0\] has shape",
    ),
    "contiguity": (
        lambda g, m, v, p: ([g[0].t(), *g[1:]], [m[0].t(), *m[1:]], [v[0].t(), *v[1:]], []),
        RuntimeError,
        r"'grads'\[0\] must be contiguous",
    ),
    "params": (lambda g, m, v, p: (g, m, v, p[:1]), ValueError, "'params' has 1 tensors"),
}


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_arguments_name_the_argument(case: str) -> None:
    g, m, v, p = lists(shapes=[(3, 4), (5,)])
    change, error, message = BAD_CASES[case]
    args = change(g, m, v, p)
    with pytest.raises(error, match=message):
        ops.adam(*args, torch.tensor(1), *HYPER, 1.0)


@pytest.mark.parametrize(
    ("count", "error", "message"),
    [
        (torch.tensor(0), ValueError, "'count' must be >= 1"),
        (torch.tensor([1]), TypeError, "'count' must be a 0-d int64"),
        (torch.tensor(1.0), TypeError, "'count' must be a 0-d int64"),
    ],
)
def test_bad_count(count: torch.Tensor, error: type, message: str) -> None:
    g, m, v, _ = lists(shapes=[(3,)])
    with pytest.raises(error, match=message):
        ops.adam(g, m, v, [], count, *HYPER, 1.0)


@pytest.mark.parametrize(("index", "name"), [(0, "b1"), (1, "b2"), (2, "eps"), (3, "eps_root")])
def test_bad_hyper_parameters(index: int, name: str) -> None:
    g, m, v, _ = lists(shapes=[(3,)])
    hyper = list(HYPER)
    hyper[index] = -0.5
    with pytest.raises(ValueError, match=f"'{name}'"):
        ops.adam(g, m, v, [], torch.tensor(1), *hyper, 1.0)


def test_inplace_error_changes_nothing() -> None:
    g, m, v, p = lists(shapes=[(3, 4), (5,)])
    snapshot = [x.clone() for x in p + m + v]
    bad_g = [g[0], g[1].double()]
    with pytest.raises(TypeError, match=r"'mu'\[1\] has dtype Float"):
        difopt_accel.adam_(p, m, v, bad_g, torch.tensor(1))
    with pytest.raises(RuntimeError, match="must not share memory"):
        difopt_accel.adam_(m, m, v, g, torch.tensor(1))
    for a, b in zip(snapshot, p + m + v):
        assert torch.equal(a, b)
