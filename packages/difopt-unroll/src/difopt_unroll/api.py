"""The unroll functions: functional (:func:`unroll`) and object-oriented (:func:`unroll_module`)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Callable, Iterator, NamedTuple

import torch

import difopt
from difopt import pytree
from difopt_unroll.engine import (
    MODES,
    Adapter,
    Engine,
    UnrollFunction,
    UnrollStats,
    advance_detached,
    current_context,
    get_random_state,
    run_plain,
    set_random_state,
)
from difopt_unroll.policies import Every, NoCheckpoint, Policy, Sqrt, make_policy

__all__ = ["UnrollResult", "inner_grad", "transformation_step", "unroll", "unroll_module"]

_NS = pytree.NAMESPACE

Step = Callable[[Any, Any, Any], tuple[Any, ...]]


class UnrollResult(NamedTuple):
    """What an unroll returns.

    Attributes:
        params: the inner parameters after the K steps (same tree as given), on the autograd
            graph of the initial parameters and the meta-parameters.
        state: the optimizer state after the K steps (same tree as given).
        losses: the K inner losses (a tensor of shape ``(K,)``, differentiable like the
            parameters), or ``None`` when the step returns no loss.
        stats: an :class:`~difopt_unroll.UnrollStats`, updated by the forward and, later, by
            the backward (recomputed steps, peak snapshots).
    """

    params: Any
    state: Any
    losses: torch.Tensor | None
    stats: UnrollStats


def inner_grad(loss: torch.Tensor, params: Any) -> Any:
    """The gradient of the inner ``loss`` with respect to ``params`` (a pytree of tensors),
    taken the way the running unroll needs it.

    Use it inside a step passed to :func:`unroll` instead of ``torch.autograd.grad``:
    recorded steps of the ``exact`` and ``truncated`` modes keep the gradient on the graph
    (``create_graph=True``); the ``first_order`` mode and steps run without recording take it
    as a constant. Outside an unroll it keeps the graph. A parameter that does not reach the
    loss gets ``None`` (difopt's transformations leave it unchanged).
    """
    ctx = current_context()
    create_graph = True if ctx is None else ctx.create_graph
    # A recorded step keeps its loss's graph: the per-step losses are differentiable too.
    retain_graph = create_graph or ctx is None or ctx.recording
    leaves, spec = pytree.tree_flatten(params, namespace=_NS)
    grads = torch.autograd.grad(
        loss, leaves, create_graph=create_graph, retain_graph=retain_graph, allow_unused=True
    )
    return pytree.tree_unflatten(spec, list(grads))


def transformation_step(
    loss_fn: Callable[[Any, Any], torch.Tensor], transform: difopt.GradientTransformation
) -> Step:
    """An inner step built from a difopt ``GradientTransformation``.

    The step ``(params, state, batch) -> (params, state, loss)`` computes
    ``loss = loss_fn(params, batch)``, its gradient (:func:`inner_grad`), the update
    ``transform.update(grads, state, params=params, inplace=False)`` and
    ``difopt.apply_updates(params, updates, inplace=False)``: one step of the plain unrolled
    functional loop. Meta-parameters the transformation reads (a tensor learning rate, a
    schedule over a tensor) are declared to the unroll with ``meta_params``.

    Examples:
        >>> import torch, difopt, difopt_unroll
        >>> lr = torch.tensor(0.1, requires_grad=True)
        >>> step = difopt_unroll.transformation_step(
        ...     lambda p, batch: ((p["w"] - 1.0) ** 2).sum(), difopt.sgd(lr=lr))
        >>> params = {"w": torch.zeros(3)}
        >>> out = difopt_unroll.unroll(step, params, difopt.sgd(lr=lr).init(params), 20,
        ...                            meta_params=(lr,), policy="sqrt")
        >>> (hyper,) = torch.autograd.grad(((out.params["w"] - 1.0) ** 2).sum(), lr)
        >>> bool(hyper < 0)  # a larger learning rate gets closer to the minimum
        True
    """
    if not isinstance(transform, difopt.GradientTransformation):
        raise TypeError(
            f"'transform' must be a difopt.GradientTransformation, got {type(transform).__name__}"
        )
    if not callable(loss_fn):
        raise TypeError(f"'loss_fn' must be callable, got {type(loss_fn).__name__}")

    def step(params: Any, state: Any, batch: Any) -> tuple[Any, Any, torch.Tensor]:
        loss = loss_fn(params, batch)
        grads = inner_grad(loss, params)
        ctx = current_context()
        # A step run only for its values (no recording) needs no graph for its update.
        guard = (
            torch.no_grad() if ctx is not None and not ctx.recording else contextlib.nullcontext()
        )
        with guard:
            updates, state = transform.update(grads, state, params=params, inplace=False)
            params = difopt.apply_updates(params, updates, inplace=False)
        return params, state, loss

    return step


# -- argument checks --------------------------------------------------------------------------


def _check_args(
    num_steps: Any, policy: Policy | str | None, budget: Any, mode: Any, truncate: Any
) -> Policy:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"'num_steps' must be an int >= 1, got {num_steps!r}")
    resolved = make_policy(policy, budget)
    if mode not in MODES:
        raise ValueError(f"'mode' must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
    if mode == "truncated":
        if isinstance(truncate, bool) or not isinstance(truncate, int):
            raise ValueError(
                f"mode='truncated' needs 'truncate', the number of last steps to "
                f"differentiate (an int in [1, num_steps]), got {truncate!r}"
            )
        if not 1 <= truncate <= num_steps:
            raise ValueError(f"'truncate' must be in [1, num_steps={num_steps}], got {truncate!r}")
    elif truncate is not None:
        raise ValueError(f"'truncate' applies to mode='truncated' only, got mode={mode!r}")
    return resolved


def _meta_list(meta_params: Any) -> list[torch.Tensor]:
    leaves = pytree.tree_leaves(meta_params, namespace=_NS)
    out: list[torch.Tensor] = []
    seen: set[int] = set()
    for x in leaves:
        if not torch.is_tensor(x):
            raise TypeError(
                f"'meta_params' must be a tensor or a pytree of tensors, found a {type(x).__name__}"
            )
        if id(x) not in seen:
            seen.add(id(x))
            out.append(x)
    return out


def _batch_fn(batches: Any, num_steps: int) -> Callable[[int], Any]:
    if batches is None:
        return lambda k: k
    if torch.is_tensor(batches) or isinstance(batches, Sequence):
        if len(batches) != num_steps:
            raise ValueError(
                f"'batches' must hold one batch per step ({num_steps}), got {len(batches)}"
            )
        return lambda k: batches[k]
    if callable(batches):
        return batches
    raise TypeError(
        "'batches' must be None (the step receives its index), a sequence of num_steps "
        f"batches or a callable k -> batch, got {type(batches).__name__}"
    )


def _check_leaves(
    what: str,
    k: int,
    leaves: list[Any],
    reference: list[Any],
    spec: Any,
    ref_spec: Any,
    who: str = "step",
) -> None:
    if spec != ref_spec:
        raise ValueError(
            f"'{who}' changed the {what}' tree structure at step {k}: got {spec}, expected "
            f"{ref_spec}"
        )
    for i, (x, r) in enumerate(zip(leaves, reference)):
        if torch.is_tensor(r):
            if not torch.is_tensor(x) or x.shape != r.shape or x.dtype != r.dtype:
                got = f"{tuple(x.shape)} {x.dtype}" if torch.is_tensor(x) else type(x).__name__
                raise ValueError(
                    f"'{who}' changed leaf {i} of the {what} at step {k}: got {got}, expected "
                    f"{tuple(r.shape)} {r.dtype}"
                )


def _check_loss(loss: Any, k: int, who: str) -> torch.Tensor | None:
    if loss is None:
        return None
    if not torch.is_tensor(loss) or loss.numel() != 1:
        shape = tuple(loss.shape) if torch.is_tensor(loss) else type(loss).__name__
        raise ValueError(f"'{who}' must give a scalar tensor loss, got {shape} at step {k}")
    return loss.reshape(())


# -- execution shared by both forms -----------------------------------------------------------


def _execute(
    adapter: Adapter,
    params: list[torch.Tensor],
    state: list[Any],
    num_steps: int,
    policy: Policy,
    mode: str,
    truncate: int | None,
    meta: list[torch.Tensor],
) -> tuple[list[torch.Tensor], list[Any], torch.Tensor | None, UnrollStats]:
    stats = UnrollStats(num_steps=num_steps)
    float_state = [torch.is_tensor(x) and (x.is_floating_point() or x.is_complex()) for x in state]
    random = get_random_state()
    try:
        start = 0
        losses: list[torch.Tensor | None] = []
        if mode == "truncated" and truncate is not None and truncate < num_steps:
            start = num_steps - truncate
            params, state, losses = advance_detached(adapter.run, params, state, 0, start, stats)
        inputs = [*params, *(x for x, f in zip(state, float_state) if f), *meta]
        if not torch.is_grad_enabled() or not any(t.requires_grad for t in inputs):
            params, state, rest = advance_detached(
                adapter.run, params, state, start, num_steps, stats
            )
            return params, state, _stack([*losses, *rest]), stats
        if isinstance(policy, NoCheckpoint):
            params, state, rest = run_plain(
                adapter.run, params, state, start, num_steps, mode != "first_order", meta, stats
            )
            return params, state, _stack([*losses, *rest]), stats
        if isinstance(policy, Sqrt):
            policy = Every(policy.period(num_steps - start))
        engine = Engine(
            adapter,
            start=start,
            num_steps=num_steps - start,
            policy=policy,
            mode=mode,
            meta=meta,
            float_state=float_state,
            stats=stats,
        )
        engine.initial_params, engine.initial_state = params, state
        float_in = [x for x, f in zip(state, float_state) if f]
        outs = UnrollFunction.apply(
            engine, len(params), len(float_in), *params, *float_in, *engine.meta
        )
        n_p, n_s = len(params), len(float_in)
        new_params = list(outs[:n_p])
        floats = iter(outs[n_p : n_p + n_s])
        new_state = [next(floats) if f else x for x, f in zip(engine.final_state, float_state)]
        tail = outs[n_p + n_s] if len(outs) > n_p + n_s else None
        if tail is None:
            return new_params, new_state, None, stats
        head = _stack(losses)
        return new_params, new_state, tail if head is None else torch.cat([head, tail]), stats
    except BaseException:
        set_random_state(random)
        raise


def _stack(losses: list[torch.Tensor | None]) -> torch.Tensor | None:
    if not losses or any(v is None for v in losses):
        return None
    return torch.stack([v for v in losses if v is not None])


# -- functional form ----------------------------------------------------------------------------


class _FunctionalAdapter(Adapter):
    def __init__(self, step: Step, batch: Callable[[int], Any], params: Any, state: Any) -> None:
        self.step = step
        self.batch = batch
        self.p_ref, self.p_spec = pytree.tree_flatten(params, namespace=_NS)
        self.s_ref, self.s_spec = pytree.tree_flatten(state, namespace=_NS)

    def run(
        self, params: list[torch.Tensor], state: list[Any], k: int
    ) -> tuple[list[torch.Tensor], list[Any], torch.Tensor | None]:
        out = self.step(
            pytree.tree_unflatten(self.p_spec, params),
            pytree.tree_unflatten(self.s_spec, state),
            self.batch(k),
        )
        if not isinstance(out, tuple) or len(out) not in (2, 3):
            raise TypeError(
                "'step' must return (params, state) or (params, state, loss), got "
                f"{type(out).__name__}"
                + (f" of length {len(out)}" if isinstance(out, tuple) else "")
            )
        p, p_spec = pytree.tree_flatten(out[0], namespace=_NS)
        s, s_spec = pytree.tree_flatten(out[1], namespace=_NS)
        _check_leaves("params", k, p, self.p_ref, p_spec, self.p_spec)
        _check_leaves("state", k, s, self.s_ref, s_spec, self.s_spec)
        return p, s, _check_loss(out[2] if len(out) == 3 else None, k, "step")


def unroll(
    step: Step,
    params: Any,
    state: Any,
    num_steps: int,
    *,
    batches: Any = None,
    meta_params: Any = (),
    policy: Policy | str | None = None,
    budget: int | None = None,
    mode: str = "exact",
    truncate: int | None = None,
) -> UnrollResult:
    """Run ``num_steps`` inner steps and return the result, differentiable in bounded memory.

    Differentiating a function of the result gives the meta-gradient with respect to the
    initial ``params`` and ``state`` and to ``meta_params``, equal to the plain unrolled
    loop's (``policy="none"``), whatever the checkpoint policy.

    Args:
        step: ``step(params, state, batch) -> (params, state[, loss])``, one inner step, e.g.
            :func:`transformation_step`. It must return new tensors of the same tree
            structure, shapes and dtypes (not modify its inputs in place), take its inner
            gradient with :func:`inner_grad` (so that ``mode`` applies), and be a function of
            its arguments, of ``meta_params``, of constants and of torch's random state:
            checkpointed policies run a step several times and replay the random state.
        params: the initial inner parameters, a pytree of floating-point tensors.
        state: the initial optimizer state (``transform.init(params)``), a pytree.
        num_steps: K >= 1.
        batches: the data of each step: a sequence (or tensor) of K batches, a callable
            ``k -> batch`` (called again on recomputation, inside the replayed random state),
            or ``None`` (the step receives its index ``k``).
        meta_params: the tensors the step reads that should get meta-gradients (tensor
            learning rates, regularisation weights...), a tensor or pytree of tensors. A step
            that reads a tensor requiring grad that is neither here nor in ``params``/``state``
            raises ``ValueError`` (its gradient would silently be lost).
        policy: ``"none"`` (plain unroll), ``"sqrt"``, ``"binomial"`` (with ``budget``), or a
            :class:`~difopt_unroll.Policy` such as ``Every(k)`` or ``Binomial(budget)``.
            Default: ``Binomial(budget)`` when ``budget`` is given, else ``"sqrt"``.
        budget: the most snapshots (stored steps) held at once, the initial one included;
            selects the binomial policy.
        mode: ``"exact"``, ``"truncated"`` (differentiate the last ``truncate`` steps only:
            the state before them is a constant) or ``"first_order"`` (the inner gradients are
            constants, as in first-order MAML).
        truncate: the number of last steps ``mode="truncated"`` differentiates.

    Returns:
        An :class:`UnrollResult` ``(params, state, losses, stats)``.

    Raises:
        ValueError: ``num_steps < 1``, ``budget < 1``, an unknown ``policy`` or ``mode``, a
            user ``Policy`` whose ``split`` or ``slots`` returns an invalid value, a
            ``truncate`` outside ``[1, num_steps]``, ``batches`` of the wrong length, a step
            that changes the tree structure, shapes or dtypes, or reads an undeclared tensor
            requiring grad. Errors raised before the unroll returns leave torch's random state
            as it was. A checkpointed unroll checks the reads of a step other than the first
            and the last ones only when its backward records it: that ``ValueError`` is raised
            during the backward, where autograd may already have written ``.grad`` into other
            leaves.
        RuntimeError: during the backward, when the initial ``params`` or ``state`` tensors
            (held, not copied) were modified in place after the forward.

    The backward of a checkpointed unroll is first-order (no double backward; use
    ``policy="none"`` for higher-order derivatives); a second backward through the same
    result (``retain_graph=True``) recomputes the whole unroll.
    """
    resolved = _check_args(num_steps, policy, budget, mode, truncate)
    if not callable(step):
        raise TypeError(f"'step' must be callable, got {type(step).__name__}")
    meta = _meta_list(meta_params)
    p_leaves = pytree.tree_leaves(params, namespace=_NS)
    for x in p_leaves:
        if not torch.is_tensor(x) or not (x.is_floating_point() or x.is_complex()):
            raise TypeError(
                "'params' must be a pytree of floating-point tensors, found "
                f"{x.dtype if torch.is_tensor(x) else type(x).__name__}"
            )
    adapter = _FunctionalAdapter(step, _batch_fn(batches, num_steps), params, state)
    p, s, losses, stats = _execute(
        adapter, list(adapter.p_ref), list(adapter.s_ref), num_steps, resolved, mode, truncate, meta
    )
    return UnrollResult(
        pytree.tree_unflatten(adapter.p_spec, p),
        pytree.tree_unflatten(adapter.s_spec, s),
        losses,
        stats,
    )


# -- object-oriented form ------------------------------------------------------------------------


def _slots(optimizer: difopt.MetaOptimizer) -> list[tuple[dict[str, Any], str]]:
    """The parameters a MetaOptimizer steps, in its order: the trainable entries of its
    modules' ``_parameters`` dicts (``param_containers_groups``)."""
    return [
        (c, k)
        for group in optimizer.param_containers_groups
        for c in group
        for k, p in c.items()
        if p is not None and p.requires_grad
    ]


class _ModuleAdapter(Adapter):
    def __init__(
        self,
        optimizer: difopt.MetaOptimizer,
        loss_fn: Callable[[Any], torch.Tensor],
        batch: Callable[[int], Any],
    ) -> None:
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.batch = batch
        self.slots = _slots(optimizer)
        self.p_ref = [c[k] for c, k in self.slots]
        groups: Any = optimizer.state_groups
        s_ref, self.s_spec = pytree.tree_flatten(groups, namespace=_NS)
        self.s_ref: list[Any] = list(s_ref)

    def set(self, params: list[torch.Tensor], state: list[Any]) -> None:
        for (c, k), t in zip(self.slots, params):
            c[k] = t
        groups: Any = pytree.tree_unflatten(self.s_spec, state)
        self.optimizer.state_groups = groups

    def run(
        self, params: list[torch.Tensor], state: list[Any], k: int
    ) -> tuple[list[torch.Tensor], list[Any], torch.Tensor | None]:
        self.set(params, state)
        loss = _check_loss(self.loss_fn(self.batch(k)), k, "loss_fn")
        # The module's parameters are the unroll's to set: a loss_fn that swaps one for a
        # tensor of another shape or dtype would otherwise fail inside the optimizer.
        _check_leaves(
            "params", k, [c[key] for c, key in self.slots], self.p_ref, None, None, "loss_fn"
        )
        if loss is None or not loss.requires_grad:
            raise ValueError(f"'loss_fn' returned a loss that does not require grad at step {k}")
        ctx = current_context()
        if ctx is None or ctx.create_graph:
            self.optimizer.step(loss)
        else:
            # The inner gradient as a constant: a surrogate loss whose gradient it is, so the
            # optimizer's own differentiable step runs unchanged (and cheaply).
            grads = torch.autograd.grad(loss, params, retain_graph=ctx.recording, allow_unused=True)
            terms = [(p * g).sum() for p, g in zip(params, grads) if g is not None]
            surrogate = torch.stack(terms).sum() if terms else loss
            if ctx.recording:
                self.optimizer.step(surrogate)
            else:  # only the values are kept: the same operations, without recording them
                with torch.no_grad():
                    self.optimizer.step(surrogate)
        new_p = [c[key] for c, key in self.slots]
        groups: Any = self.optimizer.state_groups
        leaves, s_spec = pytree.tree_flatten(groups, namespace=_NS)
        s: list[Any] = list(leaves)
        _check_leaves("params", k, new_p, self.p_ref, None, None)
        _check_leaves("state", k, s, self.s_ref, s_spec, self.s_spec)
        return new_p, s, loss

    @contextlib.contextmanager
    def preserve(self) -> Iterator[None]:
        saved = [c[k] for c, k in self.slots]
        saved_state = self.optimizer.state_groups
        try:
            yield
        finally:
            for (c, k), t in zip(self.slots, saved):
                c[k] = t
            self.optimizer.state_groups = saved_state


def unroll_module(
    optimizer: difopt.MetaOptimizer,
    loss_fn: Callable[[Any], torch.Tensor],
    num_steps: int,
    *,
    batches: Any = None,
    meta_params: Any = (),
    policy: Policy | str | None = None,
    budget: int | None = None,
    mode: str = "exact",
    truncate: int | None = None,
) -> UnrollResult:
    """Take ``num_steps`` steps of a ``difopt.MetaOptimizer`` in bounded memory.

    The same as the plain loop ``for k in range(K): optimizer.step(loss_fn(batch_k))``: the
    module's parameters and the optimizer's state are replaced by the results, on the
    autograd graph of the initial parameters (e.g. ``nn.Parameter``\\ s, for MAML) and of
    ``meta_params`` (a tensor learning rate, a regularisation weight, a part of the module
    the optimizer does not step), with the policy's memory instead of K steps of graph.

    Args:
        optimizer: a ``difopt.MetaOptimizer`` (``difopt.MetaAdam(net, ...)``); its modules'
            parameters are the inner parameters.
        loss_fn: ``loss_fn(batch) -> loss``, the inner loss computed with the module(s).
        num_steps, batches, meta_params, policy, budget, mode, truncate: as in :func:`unroll`.

    Returns:
        An :class:`UnrollResult`; ``params`` is the tuple of the optimizer's parameters (its
        order), ``state`` the optimizer's ``state_groups``. On an error raised before it
        returns, the module and the optimizer are left as they were. When nothing is
        differentiated (``torch.no_grad()``, or truncated with nothing requiring grad past the
        cut) the module gets the final values as fresh leaves requiring grad.

    The optimizer's step runs once per step run, recomputations included: a MetaOptimizer's
    internal step counter (its ``difopt.visual`` step tags) counts them; its state is the
    plain loop's.
    """
    if not isinstance(optimizer, difopt.MetaOptimizer):
        raise TypeError(
            f"'optimizer' must be a difopt.MetaOptimizer, got {type(optimizer).__name__}"
        )
    resolved = _check_args(num_steps, policy, budget, mode, truncate)
    if not callable(loss_fn):
        raise TypeError(f"'loss_fn' must be callable, got {type(loss_fn).__name__}")
    meta = _meta_list(meta_params)
    adapter = _ModuleAdapter(optimizer, loss_fn, _batch_fn(batches, num_steps))
    params, state = list(adapter.p_ref), list(adapter.s_ref)
    saved_state = optimizer.state_groups
    try:
        p, s, losses, stats = _execute(
            adapter, params, state, num_steps, resolved, mode, truncate, meta
        )
    except BaseException:
        adapter.set(params, state)
        optimizer.state_groups = saved_state
        raise
    # Nothing differentiated (torch.no_grad(), or truncated with nothing requiring grad past
    # the cut): the results are detached. Re-leaf them, as the hand-written truncated loop
    # does, so that the module's parameters still require grad and the next step works.
    p = [t if t.requires_grad else t.detach().requires_grad_(True) for t in p]
    adapter.set(p, s)
    return UnrollResult(tuple(p), optimizer.state_groups, losses, stats)
