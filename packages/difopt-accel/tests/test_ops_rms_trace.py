"""The RMSProp and momentum operators: opcheck, values against a float64 formula, errors."""

from __future__ import annotations

import math

import pytest
import torch

import difopt_accel

ops = torch.ops.difopt_accel
SHAPES = [(3, 4), (5,), (), (0, 2), (70000,)]  # scalar, empty, and a multi-chunk tensor
SMALL = [(3, 4), (5,), ()]
DTYPES = [torch.float32, torch.float64]
DTYPE_IDS = ["float32", "float64"]


def make(shapes=SHAPES, dtype=torch.float32, scale=1.0, positive=False, requires_grad=False):
    xs = [torch.randn(s, dtype=dtype) * scale for s in shapes]
    return [(x.abs() if positive else x).requires_grad_(requires_grad) for x in xs]


def rms_args(shapes=SHAPES, dtype=torch.float32, centered=True, requires_grad=False):
    """grads, mu (empty unless centered), nu, params."""
    grads = make(shapes, dtype)
    mu = make(shapes, dtype, 0.1)
    nu = [m * m + x for m, x in zip(mu, make(shapes, dtype, positive=True))]  # a variance >= 0
    mu = mu if centered else []
    params = make(shapes, dtype)
    return tuple([x.requires_grad_(requires_grad) for x in xs] for xs in (grads, mu, nu, params))


def trace_args(shapes=SHAPES, dtype=torch.float32, requires_grad=False):
    """grads, trace, params."""
    return tuple(make(shapes, dtype, requires_grad=requires_grad) for _ in range(3))


# ----------------------------------------------------------------------------- references


def rms_reference(g, m, v, p, alpha, eps, factor, centered):
    """RMSProp written out in float64."""
    g, v = g.double(), v.double()
    v2 = alpha * v + (1 - alpha) * g * g
    if centered:
        m2 = alpha * m.double() + (1 - alpha) * g
        d = g / (torch.sqrt(v2 - m2 * m2) + eps)
    else:
        m2 = None
        d = g / (torch.sqrt(v2) + eps)
    out = factor * d if p is None else p.double() + factor * d
    return out, m2, v2


def trace_reference(g, b, p, t, momentum, dampening, nesterov, factor):
    """Heavy-ball momentum written out in float64."""
    g, b = g.double(), b.double()
    b2 = g if t == 1 else momentum * b + (1 - dampening) * g
    d = g + momentum * b2 if nesterov else b2
    out = factor * d if p is None else p.double() + factor * d
    return out, b2


def assert_close64(x: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(x.double(), ref, rtol=tol, atol=tol)
    assert x.dtype == dtype and x.is_contiguous()


# ----------------------------------------------------------------------------- opcheck


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("with_params", [True, False], ids=["params", "no-params"])
@pytest.mark.parametrize("requires_grad", [False, True], ids=["nograd", "grad"])
@pytest.mark.parametrize("centered", [False, True], ids=["uncentered", "centered"])
def test_opcheck_rms(dtype, with_params: bool, requires_grad: bool, centered: bool) -> None:
    g, m, v, p = rms_args(SMALL, dtype, centered, requires_grad)
    args = (g, m, v, p if with_params else [], 0.9, 1e-3, -0.1, centered)
    torch.library.opcheck(ops.rms.default, args)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("accumulate", [True, False])
@pytest.mark.parametrize("centered", [False, True], ids=["uncentered", "centered"])
def test_opcheck_rms_inplace(dtype, accumulate: bool, centered: bool) -> None:
    g, m, v, p = rms_args(SMALL, dtype, centered)
    args = (p, m, v, g, 0.9, 1e-3, -0.1, centered, accumulate)
    torch.library.opcheck(ops.rms_.default, args)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("state_grads", [True, False])
@pytest.mark.parametrize("moment_grads", [True, False])
@pytest.mark.parametrize("centered", [False, True], ids=["uncentered", "centered"])
def test_opcheck_rms_backward(dtype, state_grads: bool, moment_grads: bool, centered) -> None:
    g, m, v, d = rms_args(SMALL, dtype, centered)
    dm = m if state_grads else []
    dv = v if state_grads else []
    args = (d, dm, dv, g, m, v, 0.9, 1e-3, -0.1, centered, moment_grads)
    torch.library.opcheck(ops.rms_backward.default, args)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("with_params", [True, False], ids=["params", "no-params"])
@pytest.mark.parametrize("requires_grad", [False, True], ids=["nograd", "grad"])
@pytest.mark.parametrize("nesterov", [False, True], ids=["plain", "nesterov"])
@pytest.mark.parametrize("t", [1, 3], ids=["first-step", "later-step"])
def test_opcheck_trace(dtype, with_params: bool, requires_grad: bool, nesterov, t) -> None:
    g, b, p = trace_args(SMALL, dtype, requires_grad)
    args = (g, b, p if with_params else [], torch.tensor(t), 0.9, 0.25, nesterov, -0.1)
    torch.library.opcheck(ops.trace.default, args)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("accumulate", [True, False])
@pytest.mark.parametrize("nesterov", [False, True], ids=["plain", "nesterov"])
def test_opcheck_trace_inplace(dtype, accumulate: bool, nesterov: bool) -> None:
    g, b, p = trace_args(SMALL, dtype)
    args = (p, b, g, torch.tensor(2), 0.9, 0.0, nesterov, -0.1, accumulate)
    torch.library.opcheck(ops.trace_.default, args)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("state_grads", [True, False])
@pytest.mark.parametrize("trace_grads", [True, False])
def test_opcheck_trace_backward(dtype, state_grads: bool, trace_grads: bool) -> None:
    d, db, _ = trace_args(SMALL, dtype)
    args = (d, db if state_grads else [], torch.tensor(2), 0.9, 0.25, True, -0.1, trace_grads)
    torch.library.opcheck(ops.trace_backward.default, args)


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("centered", [False, True], ids=["uncentered", "centered"])
@pytest.mark.parametrize("alpha", [0.0, 0.8, 1.0])
def test_rms_values_match_the_formula(dtype, centered: bool, alpha: float) -> None:
    g, m, v, p = rms_args(dtype=dtype, centered=centered)
    v = [x + 0.05 for x in v]  # the variance stays clear of 0 (alpha = 1 keeps it)
    hyper = {"alpha": alpha, "eps": 1e-3, "factor": -0.5, "centered": centered}
    out, m2, v2 = difopt_accel.rms(g, m, v, params=p, **hyper)
    assert len(m2) == (len(g) if centered else 0)
    for i in range(len(g)):
        ro, rm, rv = rms_reference(g[i], m[i] if centered else None, v[i], p[i], *hyper.values())
        assert_close64(out[i], ro, dtype)
        assert_close64(v2[i], rv, dtype)
        if centered:
            assert_close64(m2[i], rm, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("nesterov", [False, True], ids=["plain", "nesterov"])
@pytest.mark.parametrize("t", [1, 2, 7])
def test_trace_values_match_the_formula(dtype, nesterov: bool, t: int) -> None:
    g, b, p = trace_args(dtype=dtype)
    if t == 1:
        b[0] = torch.full_like(b[0], math.nan)  # the first step replaces the buffer unread
    hyper = {"momentum": 0.8, "dampening": 0.0 if nesterov else 0.3, "nesterov": nesterov}
    out, b2 = difopt_accel.trace_op(g, b, torch.tensor(t), params=p, factor=-0.5, **hyper)
    for i in range(len(g)):
        ro, rb = trace_reference(g[i], b[i], p[i], t, *hyper.values(), -0.5)
        assert_close64(b2[i], rb, dtype)
        assert_close64(out[i], ro, dtype)


def test_no_params_gives_the_scaled_direction() -> None:
    g, m, v, p = rms_args(SMALL, centered=True)
    with_p, _, _ = difopt_accel.rms(g, m, v, params=p, factor=-0.5, centered=True)
    without, _, _ = difopt_accel.rms(g, m, v, factor=-0.5, centered=True)
    for a, b, x in zip(with_p, without, p):
        torch.testing.assert_close(a, x + b)
    g, b, p = trace_args(SMALL)
    with_p, _ = difopt_accel.trace_op(g, b, torch.tensor(2), params=p, factor=-0.5)
    without, _ = difopt_accel.trace_op(g, b, torch.tensor(2), factor=-0.5)
    for a, b, x in zip(with_p, without, p):
        torch.testing.assert_close(a, x + b)


@pytest.mark.parametrize("centered", [False, True], ids=["uncentered", "centered"])
def test_rms_inplace_op_equals_the_functional_op(centered: bool) -> None:
    g, m, v, p = rms_args(centered=centered)
    out, m2, v2 = difopt_accel.rms(g, m, v, params=p, factor=-0.01, centered=centered)
    difopt_accel.rms_(p, m, v, g, factor=-0.01, centered=centered)
    for a, b in zip(out + m2 + v2, p + m + v):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    direction = [torch.empty_like(x) for x in g]
    difopt_accel.rms_(direction, [], v, g, factor=2.0, centered=False, accumulate=False)
    expected, _, _ = difopt_accel.rms(g, [], v2, factor=2.0)  # v was updated in place: v2
    for d, e in zip(direction, expected):
        assert torch.equal(d, e)


@pytest.mark.parametrize("nesterov", [False, True], ids=["plain", "nesterov"])
@pytest.mark.parametrize("t", [1, 4], ids=["first-step", "later-step"])
def test_trace_inplace_op_equals_the_functional_op(nesterov: bool, t: int) -> None:
    g, b, p = trace_args()
    hyper = {"momentum": 0.9, "nesterov": nesterov, "factor": -0.01}
    out, b2 = difopt_accel.trace_op(g, b, torch.tensor(t), params=p, **hyper)
    difopt_accel.trace_(p, b, g, torch.tensor(t), **hyper)
    for x, y in zip(out + b2, p + b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    direction = [torch.empty_like(x) for x in g]
    difopt_accel.trace_(direction, b, g, torch.tensor(1), accumulate=False)
    for d, x in zip(direction, g):  # first step, plain: the direction is g itself
        assert torch.equal(d, x)


def test_threads_do_not_change_the_result() -> None:
    g, m, v, p = rms_args()
    b = [x.clone() for x in m]
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            rms = difopt_accel.rms(g, m, v, params=p, centered=True)
            trace = difopt_accel.trace_op(g, b, torch.tensor(2), params=p, nesterov=True)
            results.append([*rms, *trace])
    finally:
        torch.set_num_threads(before)
    for a, b in zip(sum(results[0], []), sum(results[1], [])):
        assert torch.equal(a, b)


def test_backward_ops_with_and_without_state_gradients() -> None:
    g, m, v, d = rms_args(SMALL, torch.float64, centered=True)
    zeros = [torch.zeros_like(x) for x in g]
    full = difopt_accel.rms_backward(d, zeros, zeros, g, m, v, centered=True)
    short = difopt_accel.rms_backward(d, [], [], g, m, v, centered=True)
    for a, b in zip(sum(full, []), sum(short, [])):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    dg, dm, dv = difopt_accel.rms_backward(d, [], [], g, [], v, moment_grads=False)
    assert len(dg) == len(g) and dm == [] and dv == []
    full = difopt_accel.trace_backward(d, zeros, torch.tensor(1))
    short = difopt_accel.trace_backward(d, [], torch.tensor(1))
    for a, b in zip(sum(full, []), sum(short, [])):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert all(torch.equal(x, torch.zeros_like(x)) for x in full[1])  # first step: no d_trace


def test_empty_lists() -> None:
    assert difopt_accel.rms([], [], []) == ([], [], [])
    assert difopt_accel.trace_op([], [], torch.tensor(1)) == ([], [])


# ----------------------------------------------------------------------------- errors


def _meta(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x, device="meta")


def _on_cpu_kernel(op, *args):
    # Mixed devices would dispatch to the Meta kernel; run the CPU kernel on them directly.
    return op.default.redispatch(torch._C.DispatchKeySet(torch._C.DispatchKey.CPU), *args)


RMS_BAD = {
    "length-mu": (lambda g, m, v, p: (g, m[:1], v, p, True), ValueError, "'mu' has 1 tensors"),
    "length-nu": (lambda g, m, v, p: (g, m, v[:1], p, True), ValueError, "'nu' has 1 tensors"),
    "length-params": (
        lambda g, m, v, p: (g, m, v, p[:1], True),
        ValueError,
        "'params' has 1 tensors",
    ),
    "mu-uncentered": (
        lambda g, m, v, p: (g, m, v, p, False),
        ValueError,
        "'mu' must be empty when 'centered' is false",
    ),
    "dtype": (
        lambda g, m, v, p: (g, m, [v[0].double(), *v[1:]], p, True),
        TypeError,
        r"'nu'\[0\] has dtype Double but 'grads'\[0\] has Float",
    ),
    "half": (
        lambda g, m, v, p: ([x.half() for x in g], [], [x.half() for x in v], [], False),
        TypeError,
        "cpu kernel supports float32 and float64",
    ),
    "shape": (
        lambda g, m, v, p: (g, m, v, [p[0].reshape(-1), *p[1:]], True),
        ValueError,
        r"'params'\[0\] has shape",
    ),
    "contiguity-grads": (
        lambda g, m, v, p: ([x.t() for x in g], [x.t() for x in m], [x.t() for x in v], [], True),
        RuntimeError,
        r"'grads'\[0\] must be contiguous",
    ),
    "contiguity-state": (
        lambda g, m, v, p: (g, m, [v[0].t().contiguous().t(), *v[1:]], p, True),
        RuntimeError,
        r"'nu'\[0\] must be contiguous",
    ),
}


@pytest.mark.parametrize("case", RMS_BAD)
def test_rms_bad_arguments_name_the_argument(case: str) -> None:
    g, m, v, p = rms_args([(3, 4), (5, 2)])
    change, error, message = RMS_BAD[case]
    grads, mu, nu, params, centered = change(g, m, v, p)
    with pytest.raises(error, match=message):
        ops.rms(grads, mu, nu, params, 0.9, 1e-8, 1.0, centered)


def test_rms_device_mismatch_names_the_argument() -> None:
    g, m, v, p = rms_args([(3, 4)])
    with pytest.raises(RuntimeError, match=r"'nu'\[0\] is on meta but 'grads'\[0\] is on cpu"):
        _on_cpu_kernel(ops.rms, g, m, [_meta(v[0])], p, 0.9, 1e-8, 1.0, True)
    with pytest.raises(RuntimeError, match=r"'grads'\[0\] is on meta; every tensor of one call"):
        _on_cpu_kernel(ops.rms, [_meta(g[0])], [], [_meta(v[0])], [], 0.9, 1e-8, 1.0, False)


@pytest.mark.parametrize(
    ("alpha", "eps", "name"),
    [
        (-0.1, 1e-8, "alpha"),
        (1.5, 1e-8, "alpha"),
        (math.nan, 1e-8, "alpha"),
        (0.9, -1.0, "eps"),
        (0.9, math.inf, "eps"),
        (0.9, math.nan, "eps"),
    ],
)
def test_rms_bad_hyper_parameters(alpha: float, eps: float, name: str) -> None:
    g, m, v, _ = rms_args([(3,)])
    with pytest.raises(ValueError, match=f"'{name}'"):
        ops.rms(g, m, v, [], alpha, eps, 1.0, True)
    with pytest.raises(ValueError, match=f"'{name}'"):
        ops.rms_backward(g, [], [], g, m, v, alpha, eps, 1.0, True, True)


TRACE_BAD = {
    "length-trace": (lambda g, b, p: (g, b[:1], p), ValueError, "'trace' has 1 tensors"),
    "length-params": (lambda g, b, p: (g, b, p[:1]), ValueError, "'params' has 1 tensors"),
    "dtype": (
        lambda g, b, p: (g, [b[0], b[1].double()], p),
        TypeError,
        r"'trace'\[1\] has dtype Double",
    ),
    "half": (
        lambda g, b, p: ([x.half() for x in g], [x.half() for x in b], []),
        TypeError,
        "cpu kernel supports float32 and float64",
    ),
    "shape": (
        lambda g, b, p: (g, [b[0].reshape(-1), b[1]], p),
        ValueError,
        r"'trace'\[0\] has shape",
    ),
    "contiguity": (
        lambda g, b, p: ([g[0].t(), g[1]], [b[0].t(), b[1]], []),
        RuntimeError,
        r"'grads'\[0\] must be contiguous",
    ),
}


@pytest.mark.parametrize("case", TRACE_BAD)
def test_trace_bad_arguments_name_the_argument(case: str) -> None:
    g, b, p = trace_args([(3, 4), (5, 2)])
    change, error, message = TRACE_BAD[case]
    with pytest.raises(error, match=message):
        ops.trace(*change(g, b, p), torch.tensor(2), 0.9, 0.0, False, 1.0)


def test_trace_device_mismatch_names_the_argument() -> None:
    g, b, p = trace_args([(3, 4)])
    with pytest.raises(RuntimeError, match=r"'trace'\[0\] is on meta but 'grads'\[0\] is on cpu"):
        _on_cpu_kernel(ops.trace, g, [_meta(b[0])], p, torch.tensor(2), 0.9, 0.0, False, 1.0)


@pytest.mark.parametrize(
    ("count", "error", "message"),
    [
        (torch.tensor(0), ValueError, "'count' must be >= 1"),
        (torch.tensor([1]), TypeError, "'count' must be a 0-d int64"),
        (torch.tensor(1.0), TypeError, "'count' must be a 0-d int64"),
    ],
)
def test_trace_bad_count(count: torch.Tensor, error: type, message: str) -> None:
    g, b, _ = trace_args([(3,)])
    with pytest.raises(error, match=message):
        ops.trace(g, b, [], count, 0.9, 0.0, False, 1.0)
    with pytest.raises(error, match=message):
        ops.trace_backward(g, [], count, 0.9, 0.0, False, 1.0, True)


@pytest.mark.parametrize(
    ("momentum", "dampening", "name"),
    [
        (-0.5, 0.0, "momentum"),
        (math.inf, 0.0, "momentum"),
        (math.nan, 0.0, "momentum"),
        (0.9, 1.5, "dampening"),
        (0.9, -0.1, "dampening"),
    ],
)
def test_trace_bad_hyper_parameters(momentum: float, dampening: float, name: str) -> None:
    g, b, _ = trace_args([(3,)])
    with pytest.raises(ValueError, match=f"'{name}'"):
        ops.trace(g, b, [], torch.tensor(2), momentum, dampening, False, 1.0)
    with pytest.raises(ValueError, match=f"'{name}'"):
        ops.trace_backward(g, [], torch.tensor(2), momentum, dampening, False, 1.0, True)


def test_backward_ops_check_their_gradient_lists() -> None:
    g, m, v, _ = rms_args([(3,), (2,)])
    with pytest.raises(ValueError, match="'grad_mu' must be empty when 'centered' is false"):
        ops.rms_backward(g, m, v, g, [], v, 0.9, 1e-8, 1.0, False, True)
    with pytest.raises(ValueError, match="'grad_mu' and 'grad_nu' must both be given"):
        ops.rms_backward(g, m, [], g, m, v, 0.9, 1e-8, 1.0, True, True)
    with pytest.raises(ValueError, match="'grad_out' has 1 tensors"):
        ops.rms_backward(g[:1], [], [], g, m, v, 0.9, 1e-8, 1.0, True, True)
    with pytest.raises(ValueError, match="'grad_trace' has 1 tensors but 'grad_out' has 2"):
        ops.trace_backward(g, g[:1], torch.tensor(2), 0.9, 0.0, False, 1.0, True)


def test_inplace_errors_change_nothing() -> None:
    g, m, v, p = rms_args([(3, 4), (5,)])
    b = [x.clone() for x in m]
    snapshot = [x.clone() for x in p + m + v + b]
    bad_g = [g[0], g[1].double()]  # the second tensor fails: the first must not be written
    calls = [
        (lambda: difopt_accel.rms_(p, m, v, bad_g, centered=True), TypeError, r"'mu'\[1\]"),
        (lambda: difopt_accel.rms_(p, m, v, g, alpha=1.5, centered=True), ValueError, "alpha"),
        (lambda: difopt_accel.rms_(p, m, v, g, centered=False), ValueError, "'mu' must be empty"),
        (lambda: difopt_accel.rms_(v, m, v, g, centered=True), RuntimeError, "share memory"),
        (lambda: difopt_accel.rms_(p, m, m, g, centered=True), RuntimeError, "share memory"),
        (lambda: difopt_accel.rms_(p[:1], m, v, g, centered=True), ValueError, "'out' has 1"),
        (lambda: difopt_accel.trace_(p, b, bad_g, torch.tensor(2)), TypeError, r"'trace'\[1\]"),
        (lambda: difopt_accel.trace_(p, b, g, torch.tensor(0)), ValueError, "'count'"),
        (lambda: difopt_accel.trace_(p, b, g, torch.tensor(2), momentum=-1.0), ValueError, "mom"),
        (lambda: difopt_accel.trace_(b, b, g, torch.tensor(2)), RuntimeError, "share memory"),
    ]
    for call, error, message in calls:
        with pytest.raises(error, match=message):
            call()
        for before, after in zip(snapshot, p + m + v + b):
            assert torch.equal(before, after)
