"""difopt's flatten shortcut for flat sequences of tensors agrees with optree on every tree.

``difopt._leafwise.flatten``/``leaves``/``flatten_with_none`` skip optree's per-leaf work for a
plain list or tuple of tensors (what an optimizer passes on every step). optree itself, with
difopt's namespace, is the oracle: same leaves (the same objects, in order) and an equal spec
that unflattens to the same container type.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import optree
import pytest
import torch

from difopt import _leafwise as lw
from difopt.pytree import NAMESPACE


class Pair(NamedTuple):
    a: Any
    b: Any


class MyList(list):  # a list subclass is not a plain list: optree decides
    pass


class Tagged(torch.Tensor):  # a tensor subclass: a leaf unless registered
    pass


def _tensors(n: int) -> list[torch.Tensor]:
    return [torch.full((i + 1,), float(i)) for i in range(n)]


def _trees() -> dict[str, Any]:
    t = _tensors(3)
    return {
        "list": list(t),
        "tuple": tuple(t),
        "empty list": [],
        "empty tuple": (),
        "parameters": [torch.nn.Parameter(x) for x in t],
        "tensor alone": t[0],
        "namedtuple": Pair(t[0], t[1]),
        "nested": [t[0], (t[1], t[2])],
        "dict": {"w": t[0], "b": t[1]},
        "list subclass": MyList(t),
        "tensor subclass": [t[0].as_subclass(Tagged), t[1]],
        "with None": [t[0], None, t[2]],
        "all None": [None, None],
        "with a number": [t[0], 3.0],
    }


TREES = _trees()


@pytest.mark.parametrize("name", sorted(TREES))
def test_flatten_and_leaves_match_optree(name: str) -> None:
    tree = TREES[name]
    leaves, spec = lw.flatten(tree)
    want_leaves, want_spec = optree.tree_flatten(tree, namespace=NAMESPACE)
    assert len(leaves) == len(want_leaves)
    assert all(x is y for x, y in zip(leaves, want_leaves))
    assert spec == want_spec
    assert [x is y for x, y in zip(lw.leaves(tree), want_leaves)] == [True] * len(want_leaves)
    rebuilt = optree.tree_unflatten(spec, leaves)
    assert type(rebuilt) is type(tree) or torch.is_tensor(tree)


@pytest.mark.parametrize("name", sorted(TREES))
def test_flatten_with_none_matches_optree(name: str) -> None:
    tree = TREES[name]
    leaves, spec = lw.flatten_with_none(tree)
    want_leaves, want_spec = optree.tree_flatten(tree, none_is_leaf=True, namespace=NAMESPACE)
    assert len(leaves) == len(want_leaves)
    assert all(x is y for x, y in zip(leaves, want_leaves))
    assert spec == want_spec
    assert spec.none_is_leaf


def test_the_returned_leaves_are_a_fresh_list() -> None:
    tree = _tensors(2)
    leaves, _ = lw.flatten(tree)
    leaves.append(torch.zeros(1))
    assert len(tree) == 2
    assert lw.leaves(tree) is not tree


def test_specs_of_different_lengths_and_containers_differ() -> None:
    t = _tensors(3)
    specs = {lw.flatten(t[:n])[1] for n in range(4)} | {
        lw.flatten(tuple(t[:n]))[1] for n in range(4)
    }
    assert len(specs) == 8
