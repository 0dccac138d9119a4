"""The checkpointed unroll: forward without the graph, backward by recomputed segments.

The engine runs an inner step ``K`` times on flat lists of tensors (parameters, optimizer
state). Its forward stores snapshots where the policy says (parameters, state and the
random-number-generator state of that step) and keeps the autograd graph of the last range
only. Its backward walks the ranges from last to first: it restores a snapshot, recomputes
the range (storing further snapshots if the policy splits it again), records its last part on
the graph and calls ``torch.autograd.grad`` with the incoming cotangent, with respect to the
range's starting parameters and state and to the meta-parameters the step reads. The
meta-parameters' gradients are summed over the ranges; the cotangent of the range's start
becomes that of the previous range's end.

An ``autograd.Function`` connects the whole unroll to the outer graph: its inputs are the
initial parameters, the floating-point state leaves and the meta-parameters, its outputs the
final ones and the per-step losses. Its backward is first-order only (``once_differentiable``);
a second backward (``retain_graph=True``) recomputes the unroll from its initial state.

Checking reads: every recorded range's graph is walked back to its starting leaves; a leaf
requiring grad found on the way that is not a declared meta-parameter is a tensor the step
reads without declaring it, whose gradient the recomputation would silently drop: an error.
The forward records only the first step and the last range, so a read at another step is
found when the backward records it: the error is raised during the backward.

The initial parameters and state are held, not copied (the first snapshot); their version
counters are recorded in the forward and checked at the start of the backward, so an
in-place change in between raises instead of differentiating other values.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import torch
from torch.autograd.function import once_differentiable

from difopt_unroll.policies import Policy

__all__ = ["MODES", "StepContext", "UnrollStats", "current_context"]

MODES = ("exact", "first_order", "truncated")
"""The meta-gradient modes: ``mode=`` of :func:`difopt_unroll.unroll`."""


class StepContext(NamedTuple):
    """How the unroll is running the current step (read with :func:`current_context`).

    Attributes:
        create_graph: whether the inner gradient must be taken with ``create_graph=True``
            (recorded steps in the ``exact`` and ``truncated`` modes).
        recording: whether the step's graph is kept for the backward.
        step: the index of the step, in ``[0, num_steps)``.
    """

    create_graph: bool
    recording: bool
    step: int


_CONTEXT: contextvars.ContextVar[StepContext | None] = contextvars.ContextVar(
    "difopt_unroll_step", default=None
)


def current_context() -> StepContext | None:
    """The context of the step being run by an unroll, or ``None`` outside one."""
    return _CONTEXT.get()


@contextlib.contextmanager
def _step_context(ctx: StepContext) -> Iterator[None]:
    token = _CONTEXT.set(ctx)
    try:
        with torch.enable_grad():
            yield
    finally:
        _CONTEXT.reset(token)


@dataclasses.dataclass
class UnrollStats:
    """What an unroll did, updated by its forward and its backward.

    Attributes:
        num_steps: K.
        steps_advanced: steps run without keeping their graph (the forward sweep and the
            recomputations of the backward).
        steps_recorded: steps run with their graph kept for the backward (each step once).
        snapshots: snapshots held now.
        peak_snapshots: the most snapshots held at once (the initial state's included).
        peak_recorded: the most steps whose graph was held at once.
    """

    num_steps: int = 0
    steps_advanced: int = 0
    steps_recorded: int = 0
    snapshots: int = 0
    peak_snapshots: int = 0
    peak_recorded: int = 0


class RandomState(NamedTuple):
    cpu: torch.Tensor
    cuda: tuple[torch.Tensor, ...]


def get_random_state() -> RandomState:
    cuda: tuple[torch.Tensor, ...] = ()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = tuple(torch.cuda.get_rng_state_all())
    return RandomState(torch.random.get_rng_state(), cuda)


def set_random_state(state: RandomState) -> None:
    torch.random.set_rng_state(state.cpu)
    if state.cuda:
        torch.cuda.set_rng_state_all(list(state.cuda))


class Adapter:
    """What the engine needs from an API form (functional or MetaOptimizer).

    ``run(params, state, k)`` runs step ``k`` on flat leaf lists and returns the new flat
    lists and the step's loss (or ``None``), checking the structure; ``preserve()`` is a
    context manager around recomputations that restores whatever the form mutates.
    """

    def run(
        self, params: list[torch.Tensor], state: list[Any], k: int
    ) -> tuple[list[torch.Tensor], list[Any], torch.Tensor | None]:
        raise NotImplementedError

    @contextlib.contextmanager
    def preserve(self) -> Iterator[None]:
        yield


class _Snapshot(NamedTuple):
    params: list[torch.Tensor]
    state: list[Any]
    random: RandomState


class _Tape(NamedTuple):
    """A range of steps recorded on the graph: leaves at its start, results at its end."""

    pos: int
    length: int
    start_params: list[torch.Tensor]
    start_state: list[Any]
    end_params: list[torch.Tensor]
    end_state: list[Any]
    losses: list[torch.Tensor | None]


class _Pending(NamedTuple):
    snapshot: _Snapshot
    pos: int
    length: int
    slots: int
    owner: bool


def undeclared_reads(
    roots: Sequence[Any], inputs: Sequence[Any], meta: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """Leaf tensors requiring grad that ``roots`` depend on other than through ``inputs`` or
    ``meta``: tensors a step reads without declaring them (their gradient would be lost)."""
    stop_nodes: set[int] = set()
    allowed: set[int] = set()
    keep_alive = []
    for t in (*inputs, *meta):
        if torch.is_tensor(t) and t.requires_grad:
            if t.grad_fn is None:
                allowed.add(id(t))
            else:
                stop_nodes.add(id(t.grad_fn))
                keep_alive.append(t.grad_fn)
    found: dict[int, torch.Tensor] = {}
    seen: set[int] = set()
    stack: list[Any] = []
    for t in roots:
        if torch.is_tensor(t) and t.requires_grad:
            if t.grad_fn is None:
                if id(t) not in allowed:
                    found[id(t)] = t
            else:
                stack.append(t.grad_fn)
    nodes = []  # keeps the visited nodes alive, so ids are not reused during the walk
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen or id(node) in stop_nodes:
            continue
        seen.add(id(node))
        nodes.append(node)
        variable = getattr(node, "variable", None)
        if variable is not None:  # AccumulateGrad: a leaf
            if id(variable) not in allowed:
                found[id(variable)] = variable
            continue
        stack.extend(nxt for nxt, _ in node.next_functions)
    return list(found.values())


def describe_undeclared(tensors: list[torch.Tensor], where: str) -> str:
    shapes = ", ".join(f"a tensor of shape {tuple(t.shape)}" for t in tensors[:3])
    return (
        f"the step reads {len(tensors)} tensor(s) that require grad without declaring them "
        f"({shapes}) {where}; pass them in 'meta_params' so that they get their meta-gradient "
        "(or detach them)"
    )


class Engine:
    """Runs one unroll; its ``forward``/``backward`` are those of :class:`UnrollFunction`."""

    def __init__(
        self,
        adapter: Adapter,
        *,
        start: int,
        num_steps: int,
        policy: Policy,
        mode: str,
        meta: Sequence[torch.Tensor],
        float_state: Sequence[bool],
        stats: UnrollStats,
    ) -> None:
        self.adapter = adapter
        self.start = start
        self.stop = start + num_steps
        self.policy = policy
        self.create_graph = mode != "first_order"
        self.meta = [m for m in meta if m.requires_grad]
        self.float_state = list(float_state)
        self.stats = stats
        self.loss_values: list[torch.Tensor | None] = []
        self.tape: _Tape | None = None
        self.pending: list[_Pending] = []
        self.meta_grads: list[torch.Tensor | None] = [None] * len(self.meta)
        self.check_first = True
        self.initial_random = get_random_state()
        self.initial_params: list[torch.Tensor] = []
        self.initial_state: list[Any] = []
        self.final_state: list[Any] = []
        self.versions: list[tuple[torch.Tensor, int]] = []

    # -- steps ------------------------------------------------------------------------------

    def _leaves(
        self, params: list[torch.Tensor], state: list[Any], recording: bool
    ) -> tuple[list[torch.Tensor], list[Any]]:
        p = [x.detach().requires_grad_(True) for x in params]
        s = [
            (x.detach().requires_grad_(recording) if f else x.detach()) if torch.is_tensor(x) else x
            for x, f in zip(state, self.float_state)
        ]
        return p, s

    def _advance(
        self, params: list[torch.Tensor], state: list[Any], pos: int, n: int
    ) -> tuple[list[torch.Tensor], list[Any]]:
        for k in range(pos, pos + n):
            if self.check_first:  # the first step is recorded once to check what it reads
                tape = self._record(params, state, k, 1, count=False)
                params = [t.detach() for t in tape.end_params]
                state = [t.detach() if torch.is_tensor(t) else t for t in tape.end_state]
            else:
                p, s = self._leaves(params, state, recording=False)
                with _step_context(StepContext(False, False, k)):
                    out_p, out_s, loss = self.adapter.run(p, s, k)
                self._store_loss(k, loss)
                params = [t.detach() for t in out_p]
                state = [t.detach() if torch.is_tensor(t) else t for t in out_s]
            self.stats.steps_advanced += 1
        return params, state

    def _store_loss(self, k: int, loss: torch.Tensor | None) -> None:
        i = k - self.start
        if i == len(self.loss_values):
            self.loss_values.append(None if loss is None else loss.detach())

    def _record(
        self, params: list[torch.Tensor], state: list[Any], pos: int, n: int, count: bool = True
    ) -> _Tape:
        p0, s0 = self._leaves(params, state, recording=True)
        p, s = p0, s0
        losses: list[torch.Tensor | None] = []
        for k in range(pos, pos + n):
            with _step_context(StepContext(self.create_graph, True, k)):
                p, s, loss = self.adapter.run(p, s, k)
            self._store_loss(k, loss)
            losses.append(loss)
        tape = _Tape(pos, n, p0, s0, p, s, losses)
        if count:
            self.stats.steps_recorded += n
            self.stats.peak_recorded = max(self.stats.peak_recorded, n)
        self._check_reads(tape)
        self.check_first = False
        return tape

    def _check_reads(self, tape: _Tape) -> None:
        roots = [*tape.end_params, *tape.end_state, *tape.losses]
        bad = undeclared_reads(roots, [*tape.start_params, *tape.start_state], self.meta)
        if bad:
            where = f"in steps {tape.pos}..{tape.pos + tape.length - 1}"
            raise ValueError(describe_undeclared(bad, where))

    # -- snapshots --------------------------------------------------------------------------

    def _take(self, params: list[torch.Tensor], state: list[Any]) -> _Snapshot:
        self.stats.snapshots += 1
        self.stats.peak_snapshots = max(self.stats.peak_snapshots, self.stats.snapshots)
        return _Snapshot(list(params), list(state), get_random_state())

    def _free(self) -> None:
        self.stats.snapshots -= 1

    def _spine(
        self,
        params: list[torch.Tensor],
        state: list[Any],
        pos: int,
        length: int,
        slots: int,
        snapshot: _Snapshot | None,
    ) -> tuple[list[_Pending], _Tape]:
        """Advance through a range, storing snapshots where the policy splits it; record its
        last part. Returns the ranges left to reverse (last one last) and the tape."""
        pending: list[_Pending] = []
        while True:
            m = self.policy.split(length, slots)
            if m is None:
                break
            self._check_split(m, length, slots)
            owner = snapshot is None
            if snapshot is None:
                snapshot = self._take(params, state)
            pending.append(_Pending(snapshot, pos, m, slots, owner))
            params, state = self._advance(params, state, pos, m)
            pos, length, slots, snapshot = pos + m, length - m, slots - 1, None
        return pending, self._record(params, state, pos, length)

    def _check_split(self, m: Any, length: int, slots: int) -> None:
        if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= length - 1:
            raise ValueError(
                f"'policy' {self.policy!r}: split(length={length}, slots={slots}) returned "
                f"{m!r}; a Policy's split must return None or an int in [1, length - 1]"
            )
        if slots < 1:
            raise ValueError(
                f"'policy' {self.policy!r}: split(length={length}, slots={slots}) asked for a "
                "snapshot with no slot left; a Policy may split a range only while slots >= 1"
            )

    def _slots(self) -> int:
        n = self.stop - self.start
        slots = self.policy.slots(n)
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 0:
            raise ValueError(
                f"'policy' {self.policy!r}: slots({n}) returned {slots!r}; a Policy's slots "
                "must return an int >= 0"
            )
        return slots

    # -- forward / backward -----------------------------------------------------------------

    def _record_versions(self) -> None:
        """The initial parameters and state are the caller's tensors, held (not copied) as the
        first snapshot: remember their version counters to refuse in-place changes."""
        self.versions = []
        for t in [*self.initial_params, *self.initial_state]:
            if torch.is_tensor(t) and not t.is_inference():
                self.versions.append((t, t._version))

    def _check_versions(self) -> None:
        changed = [t for t, v in self.versions if t._version != v]
        if changed:
            raise RuntimeError(
                f"{len(changed)} of the unroll's initial parameter or state tensors (shape "
                f"{tuple(changed[0].shape)}) has been modified by an inplace operation between "
                "the forward and the backward; the checkpointed backward recomputes the unroll "
                "from them, so it would differentiate other values (clone them before changing "
                "them in place)"
            )

    def forward(
        self, params: list[torch.Tensor], state: list[Any]
    ) -> tuple[list[torch.Tensor], list[Any]]:
        self._record_versions()
        slots = self._slots()
        self.initial_random = get_random_state()
        self.pending, self.tape = self._spine(
            params, state, self.start, self.stop - self.start, slots, None
        )
        return self.tape.end_params, self.tape.end_state

    def losses(self) -> torch.Tensor | None:
        if any(v is None for v in self.loss_values):
            return None
        return torch.stack([v for v in self.loss_values if v is not None])

    def _vjp(
        self,
        tape: _Tape,
        cot_p: list[torch.Tensor | None],
        cot_s: list[torch.Tensor | None],
        cot_losses: torch.Tensor | None,
    ) -> tuple[list[torch.Tensor | None], list[torch.Tensor | None]]:
        outs, gouts = [], []
        # cot_s covers the floating-point state leaves only (the Function's outputs): pair it
        # with those leaves, not with the whole state (whose integer counters may come first).
        ends = [*tape.end_params, *(t for t, f in zip(tape.end_state, self.float_state) if f)]
        if len(ends) != len(cot_p) + len(cot_s):
            raise RuntimeError("difopt_unroll internal error: cotangents and outputs differ")
        for t, g in zip(ends, [*cot_p, *cot_s]):
            if g is not None and torch.is_tensor(t) and t.requires_grad:
                outs.append(t)
                gouts.append(g)
        if cot_losses is not None:
            for i, loss in enumerate(tape.losses):
                if loss is not None and loss.requires_grad:
                    outs.append(loss)
                    gouts.append(cot_losses[tape.pos - self.start + i])
        s_in = [x for x, f in zip(tape.start_state, self.float_state) if f]
        inputs = [*tape.start_params, *s_in, *self.meta]
        if not outs:
            return [None] * len(cot_p), [None] * len(cot_s)
        grads = torch.autograd.grad(outs, inputs, gouts, allow_unused=True)
        n_p, n_s = len(tape.start_params), len(s_in)
        for i, g in enumerate(grads[n_p + n_s :]):
            if g is not None:
                acc = self.meta_grads[i]
                self.meta_grads[i] = g if acc is None else acc + g
        return list(grads[:n_p]), list(grads[n_p : n_p + n_s])

    def _unwind(
        self,
        pending: list[_Pending],
        cot_p: list[torch.Tensor | None],
        cot_s: list[torch.Tensor | None],
        cot_losses: torch.Tensor | None,
    ) -> tuple[list[torch.Tensor | None], list[torch.Tensor | None]]:
        while pending:
            item = pending.pop()
            snap = item.snapshot
            set_random_state(snap.random)
            sub, tape = self._spine(
                snap.params, snap.state, item.pos, item.length, item.slots, snap
            )
            cot_p, cot_s = self._vjp(tape, cot_p, cot_s, cot_losses)
            del tape
            cot_p, cot_s = self._unwind(sub, cot_p, cot_s, cot_losses)
            if item.owner:
                self._free()
        return cot_p, cot_s

    def backward(
        self,
        cot_p: list[torch.Tensor | None],
        cot_s: list[torch.Tensor | None],
        cot_losses: torch.Tensor | None,
    ) -> tuple[list[torch.Tensor | None], list[torch.Tensor | None], list[torch.Tensor | None]]:
        self._check_versions()
        random = get_random_state()
        try:
            with self.adapter.preserve():
                if self.tape is None:  # a second backward (retain_graph): recompute it all
                    set_random_state(self.initial_random)
                    self.pending, self.tape = self._spine(
                        self.initial_params,
                        self.initial_state,
                        self.start,
                        self.stop - self.start,
                        self._slots(),
                        None,
                    )
                self.meta_grads = [None] * len(self.meta)
                cot_p, cot_s = self._vjp(self.tape, cot_p, cot_s, cot_losses)
                self.tape = None
                cot_p, cot_s = self._unwind(self.pending, cot_p, cot_s, cot_losses)
        finally:
            self.tape = None
            self.pending = []
            set_random_state(random)
        return cot_p, cot_s, self.meta_grads


class UnrollFunction(torch.autograd.Function):
    """Inputs: ``(engine, n_params, n_state, *params, *float_state, *meta)``; outputs: the
    final parameters, the final floating-point state leaves and (when the step returns
    losses) the per-step losses."""

    @staticmethod
    def forward(
        ctx: Any,
        engine: Engine,
        n_params: int,
        n_state: int,
        *tensors: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        ctx.set_materialize_grads(False)
        ctx.engine = engine
        ctx.n_params, ctx.n_state = n_params, n_state
        params, state = engine.forward(engine.initial_params, engine.initial_state)
        engine.final_state = [t.detach() if torch.is_tensor(t) else t for t in state]
        outs = [t.detach() for t in params]
        outs += [t.detach() for t, f in zip(state, engine.float_state) if f]
        losses = engine.losses()
        ctx.has_losses = losses is not None
        if losses is not None:
            outs.append(losses)
        return tuple(outs)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Any, ...]:
        engine: Engine = ctx.engine
        n_p, n_s = ctx.n_params, ctx.n_state
        cot_p: list[torch.Tensor | None] = list(grads[:n_p])
        cot_s: list[torch.Tensor | None] = list(grads[n_p : n_p + n_s])
        cot_losses = grads[n_p + n_s] if ctx.has_losses else None
        # The engine's state cotangents cover every float state leaf, in order.
        g_p, g_s, g_meta = engine.backward(cot_p, cot_s, cot_losses)
        return (None, None, None, *g_p, *g_s, *g_meta)


def run_plain(
    run: Callable[[list[torch.Tensor], list[Any], int], tuple[list[Any], list[Any], Any]],
    params: list[torch.Tensor],
    state: list[Any],
    start: int,
    stop: int,
    create_graph: bool,
    meta: Sequence[torch.Tensor],
    stats: UnrollStats,
) -> tuple[list[torch.Tensor], list[Any], list[torch.Tensor | None]]:
    """The plain unroll: every step on the graph. The steps' reads are checked as they run."""
    losses: list[torch.Tensor | None] = []
    params = [p if p.requires_grad else p.detach().requires_grad_(True) for p in params]
    for k in range(start, stop):
        with _step_context(StepContext(create_graph, True, k)):
            new_p, new_s, loss = run(params, state, k)
        bad = undeclared_reads([*new_p, *new_s, loss], [*params, *state], meta)
        if bad:
            raise ValueError(describe_undeclared(bad, f"in step {k}"))
        params, state = new_p, new_s
        losses.append(loss)
        stats.steps_recorded += 1
    stats.peak_recorded = stats.steps_recorded
    return params, state, losses


def advance_detached(
    run: Callable[[list[torch.Tensor], list[Any], int], tuple[list[Any], list[Any], Any]],
    params: list[torch.Tensor],
    state: list[Any],
    start: int,
    stop: int,
    stats: UnrollStats,
) -> tuple[list[torch.Tensor], list[Any], list[torch.Tensor | None]]:
    """Run steps without the graph (results detached): the forward-only unroll, and the
    steps a truncated unroll does not differentiate."""
    losses: list[torch.Tensor | None] = []
    for k in range(start, stop):
        p = [x.detach().requires_grad_(True) for x in params]
        s = [x.detach() if torch.is_tensor(x) else x for x in state]
        with _step_context(StepContext(False, False, k)):
            new_p, new_s, loss = run(p, s, k)
        params = [t.detach() for t in new_p]
        state = [t.detach() if torch.is_tensor(t) else t for t in new_s]
        losses.append(None if loss is None else loss.detach())
        stats.steps_advanced += 1
    return params, state, losses
