"""Packing of small tensors for the wire: round trips, gradients, limits (no RPC needed), and
the same through real calls."""

from __future__ import annotations

import pytest
import torch

import difopt_distributed as dd
import dist_tasks as tasks
from difopt_distributed import _pack


def _tree():
    g = torch.Generator().manual_seed(0)
    return {
        "w": [torch.randn(4, 3, generator=g), torch.randn(3, generator=g)],
        "x": torch.randn(5, 4, dtype=torch.float64, generator=g).T,  # not contiguous
        "i": torch.arange(6).reshape(2, 3),
        "also_i": torch.tensor([7, 8]),
        "mask": torch.tensor([True, False]),
        "scalar": torch.tensor(2.5),
        "note": "kept",
        "none": None,
    }


def test_round_trip_keeps_values_dtypes_shapes_and_structure() -> None:
    tree = _tree()
    packed = _pack.pack(tree, limit=1 << 20)
    assert isinstance(packed, _pack.Packed)
    # float32 (w[0], w[1], scalar) and int64 (i, also_i) are packed; the float64 and the
    # bool tensor are alone in their groups and travel as they are
    assert {(b.dtype, b.numel()) for b in packed.buffers} == {
        (torch.float32, 12 + 3 + 1),
        (torch.int64, 6 + 2),
    }
    out = _pack.unpack(packed)
    assert out.keys() == tree.keys()
    assert out["note"] == "kept" and out["none"] is None
    for key in ("x", "i", "also_i", "mask", "scalar"):
        assert out[key].dtype == tree[key].dtype
        assert torch.equal(out[key], tree[key])
    for a, b in zip(out["w"], tree["w"]):
        assert torch.equal(a, b) and a.is_contiguous()


def test_unpacked_tensors_are_independent_of_each_other() -> None:
    a, b = torch.zeros(3), torch.zeros(2)
    x, y = _pack.unpack(_pack.pack([a, b], limit=1024))
    x.add_(1.0)
    assert torch.equal(y, torch.zeros(2)) and torch.equal(b, torch.zeros(2))
    assert x.data_ptr() != y.data_ptr()


def test_nothing_to_pack_returns_the_tree_itself() -> None:
    one = [torch.ones(3), "x"]
    assert _pack.pack(one, limit=1024) is one  # a group of one tensor is not packed
    pair = [torch.ones(3), torch.ones(2)]
    assert _pack.pack(pair, limit=0) is pair  # packing off
    big = [torch.ones(300), torch.ones(300)]
    assert _pack.pack(big, limit=1000) is big  # 1200 bytes each: above the limit
    params = [torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))]
    assert _pack.pack(params, limit=1024) is params  # subclasses keep their own pickling
    assert _pack.unpack(one) is one


def test_requires_grad_is_mirrored_and_leaves_stay_leaves() -> None:
    a = torch.ones(2, requires_grad=True)
    b = torch.ones(3, requires_grad=True)
    c, d = torch.zeros(2), torch.zeros(1)
    with torch.no_grad():  # cat does not record here; the flag must still travel
        packed = _pack.pack([a, b, c, d], limit=1024)
    assert len(packed.buffers) == 2
    assert sorted(t.requires_grad for t in packed.buffers) == [False, True]
    received = [t.detach().requires_grad_(t.requires_grad) for t in packed.buffers]
    out = _pack.unpack(_pack.Packed(packed.tree, received, packed.shapes))
    assert [t.requires_grad for t in out] == [True, True, False, False]
    assert all(t.is_leaf for t in out)


def test_gradients_flow_through_pack_and_unpack_float64() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.randn(2, 3, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, generator=g, requires_grad=True)

    def f(a, b):
        x, y = _pack.unpack(_pack.pack([a, b], limit=1024))
        return (x.sin() * 2).sum() + (y**3).sum(), x * y[:3]

    assert torch.autograd.gradcheck(f, (a, b))
    assert torch.autograd.gradgradcheck(f, (a, b))


def test_in_place_on_an_unpacked_tensor_that_requires_grad() -> None:
    a = torch.ones(3, dtype=torch.float64, requires_grad=True)
    b = torch.ones(2, dtype=torch.float64, requires_grad=True)
    x, y = _pack.unpack(_pack.pack([a, b], limit=1024))  # on the graph: non-leaf outputs
    x.mul_(3.0)
    (ga, gb) = torch.autograd.grad(x.sum() + y.sum(), [a, b])
    torch.testing.assert_close(ga, torch.full((3,), 3.0, dtype=torch.float64))
    torch.testing.assert_close(gb, torch.ones(2, dtype=torch.float64))


def test_the_limit_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_pack.PACK_BYTES_ENV, "4096")
    assert _pack._read_pack_bytes() == 4096
    monkeypatch.setenv(_pack.PACK_BYTES_ENV, "")
    assert _pack._read_pack_bytes() == _pack.DEFAULT_PACK_BYTES
    for bad in ("-1", "lots", "1.5"):
        monkeypatch.setenv(_pack.PACK_BYTES_ENV, bad)
        with pytest.raises(ValueError, match=f"{_pack.PACK_BYTES_ENV} must be a whole number"):
            _pack._read_pack_bytes()


@pytest.mark.usefixtures("world")
def test_packed_arguments_and_results_through_real_calls() -> None:
    tree = _tree()
    tree["w"][0].requires_grad_()
    tree["w"][1].requires_grad_()
    (got,) = dd.remote_sync_call(tasks.echo, args=(tree,), partitioner=3)
    assert got["note"] == "kept" and got["none"] is None
    for key in ("x", "i", "also_i", "mask", "scalar"):
        assert got[key].dtype == tree[key].dtype and torch.equal(got[key], tree[key])
    for a, b in zip(got["w"], tree["w"]):
        assert a.requires_grad and torch.equal(a.detach(), b.detach())
    (seen,) = dd.remote_sync_call(tasks.describe, args=(tree,), partitioner=1)
    want = tasks.describe(tree)
    assert [s[:3] for s in seen] == [s[:3] for s in want]  # dtype, shape, requires_grad
    assert [s[3] for s in seen] == [s[3] for s in want]  # `x`, not packed, keeps its strides
    assert [s[4] for s in seen] == pytest.approx([s[4] for s in want])
