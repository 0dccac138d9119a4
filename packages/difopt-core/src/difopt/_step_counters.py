"""Step counters: one 0-d int64 CPU tensor per parameter, in a state's ``count`` field.

Every transformation that counts steps keeps a counter per parameter, as TorchOpt and
torch.optim do: a tree shaped like the parameters (reading one never synchronises a device).
A parameter whose update is missing (None) keeps its count (see
:mod:`difopt._missing_leaves`); a call of a transformation's update only ever sees counters
that agree (:func:`difopt._missing_leaves.by_step` splits the call where they do not), so the
arithmetic reads one step value for all leaves.
"""

from __future__ import annotations

from typing import Any

import torch

from difopt._leafwise import flatten, foreach_ok, leaves, unflatten


def count_init(params: Any) -> Any:
    """A step counter per leaf of ``params``, at 0."""
    ps, spec = flatten(params)
    return unflatten(spec, [torch.zeros((), dtype=torch.int64) for _ in ps])


def count_inc(count: Any, inplace: bool) -> Any:
    """``count`` with every counter advanced by one (in place with ``inplace``)."""
    cs, spec = flatten(count)
    if not cs:
        return count
    if inplace:
        if foreach_ok(cs):
            torch._foreach_add_(cs, 1)
        else:
            for c in cs:
                c.add_(1)
        return count
    if foreach_ok(cs):
        return unflatten(spec, list(torch._foreach_add(cs, 1)))
    return unflatten(spec, [c + 1 for c in cs])


def step_values(count: Any) -> list[int] | None:
    """Every counter of ``count`` as a Python int, or None when one cannot be read (a traced
    counter, e.g. under ``torch.compile``).

    Inside ``torch.func.vmap`` a counter that is part of the batched state is read through its
    functorch wrappers. Members at different steps are fine while every parameter shares them
    (None: the update reads the batched count as a tensor); counters that differ both between
    parameters and between members raise a :class:`ValueError`.
    """
    cs = leaves(count)
    if not cs:
        return []
    if torch.compiler.is_compiling():
        # Reading a counter would break the graph (a data-dependent Python scalar); the
        # updates read it as a tensor instead, and ``counters_agree`` checks it at run time.
        return None
    try:
        if len(cs) == 1:
            return [int(cs[0])]
        return torch.stack(cs).tolist()
    except RuntimeError:
        pass
    per_leaf = []
    for c in cs:
        members = _unwrapped_values(c)
        if members is None:
            return None
        per_leaf.append(members)
    if all(members == per_leaf[0] for members in per_leaf):
        if all(m == per_leaf[0][0] for m in per_leaf[0]):
            return [int(per_leaf[0][0])] * len(cs)
        return None  # one batched count shared by every leaf: the update reads it as a tensor
    if any(m != members[0] for members in per_leaf for m in members):
        raise ValueError(
            "step counters differ both between parameters and between the members of a "
            "torch.func.vmap batch; vmap an optimizer's update over states whose parameters "
            "took the same steps"
        )
    return [int(members[0]) for members in per_leaf]


def _unwrapped_values(t: torch.Tensor) -> list[Any] | None:
    """The values of the plain tensor under ``t``'s functorch wrappers (vmap, grad), or None
    when there is none to read (a traced or fake tensor)."""
    functorch = torch._C._functorch
    while functorch.is_functorch_wrapped_tensor(t):
        t = functorch.get_unwrapped(t)
    try:
        return t.flatten().tolist()
    except RuntimeError:
        return None


def step_value(count: Any) -> int | torch.Tensor:
    """The step value of ``count``, whose counters agree: a Python int when it can be read
    without a transform in the way, else the (first) counter tensor itself."""
    cs = leaves(count)
    if not cs:
        return 0
    if torch.compiler.is_compiling():
        return cs[0]  # a tensor: no graph break (see step_values)
    try:
        return int(cs[0])
    except RuntimeError:  # a batched / traced counter inside torch.func
        return cs[0]


def real_step(t: Any, like: torch.Tensor | None = None) -> Any:
    """A step value for arithmetic: an int as is; a counter tensor (traced or batched) as a
    float tensor of the precision of ``like`` (float64 for float64/complex128 leaves or when
    ``like`` is None, else float32; float32 on MPS, which has no float64). An int64 counter
    used directly in ``b ** t`` would compute in float32 even for float64 parameters, and a
    float64 one for float32 parameters makes a compiled step do double arithmetic in its
    element loop (1.8x slower at 8M parameters)."""
    if not isinstance(t, torch.Tensor):
        return t
    double = like is None or like.dtype in (torch.float64, torch.complex128)
    return t.to(torch.float64 if double and t.device.type != "mps" else torch.float32)


def where_first(first: Any, at_first: float, after: float, like: torch.Tensor) -> torch.Tensor:
    """``at_first`` where the traced step value ``first`` is 0, else ``after``, as a 0-d tensor
    of ``like``'s dtype and device (``torch.where`` of two Python floats would be float32)."""
    a = torch.tensor(at_first, dtype=like.dtype, device=like.device)
    b = torch.tensor(after, dtype=like.dtype, device=like.device)
    return torch.where(first == 0, a, b)


def assert_counters_agree(count: Any) -> None:
    """Under ``torch.compile``, where the counters cannot be read without breaking the graph,
    make the compiled step fail at run time when they differ (parameters that skipped steps)
    instead of stepping all of them with the first one's count."""
    cs = leaves(count)
    if len(cs) < 2:
        return
    counts = torch.stack([c.detach() for c in cs])
    torch._assert_async(
        (counts == counts[0]).all(),
        "difopt: the step counters of this state differ between parameters (some parameters "
        "missed steps); a torch.compile'd step needs them to agree: run this step eagerly",
    )


def uniform_step(count: Any) -> int | None:
    """The step value shared by all counters of ``count``; None when they differ or when one
    cannot be read. The fused paths (``apply_scaled``) take it, and give way otherwise."""
    values = step_values(count)
    if not values or any(v != values[0] for v in values):
        return None
    return values[0]
