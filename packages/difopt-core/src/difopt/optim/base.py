"""``Optimizer``: the torch.optim-style form of any gradient transformation."""

from __future__ import annotations

import dataclasses
import math
from operator import attrgetter
from typing import Any, Callable, Iterable

import torch

from difopt import _leafwise as lw
from difopt import _state
from difopt.base import GradientTransformation
from difopt.optim import _fused_step

__all__ = ["Optimizer"]


class Optimizer(torch.optim.Optimizer):
    """A torch.optim-style optimizer running a :class:`GradientTransformation` in place.

    A :class:`torch.optim.Optimizer`, so what takes one takes it too: ``torch.optim``'s
    learning-rate schedulers (which edit ``param_groups[i]["lr"]``, read at the next step;
    they need a class built from an alias, which has an ``lr``: ``difopt.Adam``, not a plain
    ``Optimizer(params, impl)``), step hooks (``register_step_pre_hook`` / ``..._post_hook``)
    and training frameworks. Its state is the transformation's (``state_groups``;
    ``state_dict()`` saves it, without torch.optim's state-dict hooks), not torch.optim's
    per-parameter ``state`` dict, which stays empty.

    As TorchOpt's, and unlike torch.optim's, it accepts tensors that are not leaves (a module's
    parameters after a Meta optimizer's step, which :func:`difopt.stop_gradient` turns back
    into leaves in place): such a tensor has a ``.grad`` only if it ``retain_grad()``-s, and a
    step updates it in place, outside autograd, like a leaf; without one it is left alone.

    Args:
        params: an iterable of tensors, or of dicts with a ``"params"`` entry (parameter
            groups, as in torch.optim).
        impl: the transformation, e.g. ``difopt.adam(1e-3)`` or
            ``difopt.chain(difopt.clip_grad_norm(1.0), difopt.adam())``.

    Examples:
        >>> import torch, difopt
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> opt = difopt.Optimizer([w], difopt.sgd(lr=0.5))
        >>> (w ** 2).sum().backward(); opt.step()
        >>> w.data
        tensor([0., 0.])
    """

    # Set on the classes generated from an alias function (difopt.Adam, ...).
    alias: Callable[..., GradientTransformation] | None = None
    defaults: dict[str, Any] = {}

    def __init__(self, params: Iterable[Any], impl: GradientTransformation) -> None:
        if not isinstance(impl, GradientTransformation):
            raise TypeError(
                f"'impl' must be a GradientTransformation (e.g. difopt.adam()), got "
                f"{type(impl).__name__}"
            )
        if isinstance(params, torch.nn.Module):
            raise TypeError(
                "'params' must be an iterable of tensors, got an nn.Module; pass "
                "module.parameters(), or use a Meta optimizer to differentiate through steps"
            )
        self.impl = impl
        self.param_groups: list[dict[str, Any]] = []
        self.state_groups: list[Any] = []
        self._groups: list[_Group] = []  # how each parameter group steps
        # [True] once some parameters have taken steps that others have not (a step with some
        # .grad None, or such a state loaded): their step counters then differ, which a
        # compiled step cannot see without reading them (see step()). A list, mutated in
        # place: Dynamo replays that on a torch.optim.Optimizer, not an attribute store.
        self._uneven_counts = [False]
        # Empty: one empty group, as TorchOpt (torch.optim refuses); add_param_group fills it.
        groups = _as_groups(params) or [[]]
        # torch.optim.Optimizer sets up hooks and calls add_param_group (ours) on each group.
        super().__init__(
            [g if isinstance(g, dict) else {"params": g} for g in groups], dict(self.defaults)
        )

    def __getstate__(self) -> dict[str, Any]:
        # torch.optim.Optimizer pickles defaults, state and param_groups only; a copy needs
        # the transformations and their state too. Not what a scheduler attaches to this
        # instance (a ``step`` wrapper bound to this very object, its call flag), as torch.
        state = dict(self.__dict__)
        for attached in ("step", "_opt_called"):
            state.pop(attached, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            hyper = {k: v for k, v in g.items() if k != "params"}
            lines.append(f"  group {i}: {len(g['params'])} tensors {hyper}")
        return "\n".join(lines + [")"])

    def add_param_group(self, params: Any) -> None:
        """Add parameters, optionally as a torch.optim group dict with its own hyper-parameters.

        Hyper-parameter overrides need an optimizer generated from an alias (``difopt.Adam``);
        the plain :class:`Optimizer` applies its one ``impl`` to every group.
        """
        if isinstance(params, dict) and "params" in params:
            group = dict(params)
            tensors = _as_tensor_list(group.pop("params", None), "params['params']")
            overrides = group
        else:
            tensors = _as_tensor_list(params, "params")
            overrides = {}
        if overrides and self.alias is None:
            raise ValueError(
                f"parameter group options {sorted(overrides)} need an optimizer built from an "
                "alias (e.g. difopt.Adam); Optimizer(params, impl) has one impl for all groups"
            )
        unknown = set(overrides) - set(self.defaults)
        if unknown:
            raise ValueError(
                f"unknown parameter group options {sorted(unknown)}; accepted: "
                f"{sorted(self.defaults)}"
            )
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in tensors):
            raise ValueError("some parameters appear in more than one parameter group")
        hyper = {**self.defaults, **overrides}
        impl = self.alias(**hyper) if overrides and self.alias is not None else self.impl
        with torch.no_grad():
            state = impl.init(tuple(tensors))
        self.param_groups.append({"params": tensors, **hyper})
        self._groups.append(_Group.build(impl, hyper, unstepped=_state.placement(tensors)))
        self.state_groups.append(state)

    def _refresh(self, i: int) -> None:
        """Rebuild group ``i``'s transformation if its hyper-parameters were edited.

        As in torch.optim, ``opt.param_groups[i]["lr"] = 0.01`` takes effect at the next
        step. The state is kept, so an edit must not change the state's layout (e.g. turning
        momentum on); that is refused with an error before anything changes.
        """
        if self.alias is None:
            return
        group, built = self.param_groups[i], self._groups[i]
        # Only the alias' hyper-parameters: keys others add (a scheduler's "initial_lr") are
        # left alone, as torch.optim does.
        hyper = {k: group[k] for k in built.hyper}
        if hyper == built.hyper:
            return
        lr = hyper.get("lr")
        if (
            built.lr_is_last_factor
            and _finite_non_negative(lr)
            and all(hyper[k] is v or hyper[k] == v for k, v in built.hyper.items() if k != "lr")
        ):
            # Only lr changed, and the chain declares it is its last factor alone (what a
            # scheduler does on every step): a new factor now, the chain when a step needs it.
            self._groups[i] = built.with_lr(hyper)
            return
        impl = self.alias(**hyper)  # validates the edited values
        if _layout(impl) != _layout(self._impl(i)):
            raise ValueError(
                f"param_groups[{i}] was edited in a way that changes the optimizer's state "
                "layout (e.g. enabling momentum); create a new optimizer instead"
            )
        self._groups[i] = _Group.build(impl, hyper, unstepped=built.unstepped)

    def _impl(self, i: int) -> GradientTransformation:
        """Group ``i``'s whole transformation (built now if an lr edit left it stale)."""
        group = self._groups[i]
        if group.impl is None:
            group.impl = self.alias(**group.hyper)  # type: ignore[misc]
        return group.impl

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of all parameters (to ``None`` by default, as torch.optim)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    if p.grad.grad_fn is not None:
                        p.grad.detach_()
                    else:
                        p.grad.requires_grad_(False)
                    p.grad.zero_()

    @torch.no_grad()
    def step(  # type: ignore[override]  # returns the closure's loss as is (a tensor)
        self, closure: Callable[[], torch.Tensor] | None = None
    ) -> torch.Tensor | None:
        """Update the parameters from their ``.grad``.

        A parameter whose ``.grad`` is None is left unchanged, and so is its state (moments and
        step count), as in torch.optim, which counts steps per parameter too.

        Under ``torch.compile`` the step traces into one graph without reading the step
        counters; once some parameters have missed steps (their counters differ from the
        others'), the step runs eagerly instead, where it reads them.

        Args:
            closure: re-evaluates the model and returns the loss (it runs with grad enabled).
        """
        if self._uneven_counts[0] and torch.compiler.is_compiling():
            # Wrapped here, not at import: torch.compiler.disable imports torch._dynamo
            # (about a second), which only a compiled step has already paid for.
            return torch.compiler.disable(_step_eagerly)(self, closure)
        return self._step(closure)

    def _step(self, closure: Callable[[], torch.Tensor] | None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = []
        for i, group in enumerate(self.param_groups):
            self._refresh(i)
            params = tuple(group["params"])
            built = self._groups[i]
            # Not while compiling: a traced step reads no flag that changes (no recompilation);
            # compile after casting the model.
            if not torch.compiler.is_compiling() and built.unstepped is not None:
                if _state.placement(params) != built.unstepped:
                    # Moved or cast (net.double(), net.to(device)) since the state was made:
                    # make it again, as torch.optim and TorchOpt create state at the first step.
                    self.state_groups[i] = self._impl(i).init(params)
                built.unstepped = None
            grads = _grads_of(params)
            if not self._uneven_counts[0]:
                missing = sum(g is None for g in grads)
                self._uneven_counts[0] = 0 < missing < len(grads)
            work.append((params, grads))
        for i, (params, grads) in enumerate(work):
            plan = self._groups[i].plan
            # The plan covers a complete step; the unfused path needs the whole chain.
            full = plan is None or any(g is None for g in grads)
            impl = self._impl(i) if full else self._groups[i].impl
            _, self.state_groups[i] = _fused_step.step(
                impl, plan, grads, self.state_groups[i], params, True
            )
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The optimizer state as plain containers of tensors.

        Loadable with ``torch.load(..., weights_only=True)``: ``{"state": [...], "param_groups":
        [...]}``, one entry per group; the state entry is the list of the state's leaves.
        """
        return _state.to_dict(self.state_groups, self.param_groups)

    def load_state_dict(self, state_dict: Any) -> None:
        """Restore a state saved by :meth:`state_dict` (or TorchOpt's tuple of states).

        The whole input is checked against the current state before anything is replaced.
        As in torch.optim, the saved hyper-parameters (``lr``, and keys a scheduler added such
        as ``initial_lr``) replace the current ones; a schedule (saved as its description)
        stays as it is.
        """
        state_groups = _state.from_dict(state_dict, self.state_groups)
        groups = _state.hyper_from_dict(state_dict, self.param_groups)
        saved = [dict(g) for g in self.param_groups]
        for group, new in zip(self.param_groups, groups):
            group.update(new)
        try:
            for i in range(len(self.param_groups)):
                self._refresh(i)  # validates the loaded values
        except Exception:
            for group, old in zip(self.param_groups, saved):
                group.clear()
                group.update(old)
            raise
        self.state_groups = state_groups
        for built in self._groups:
            built.unstepped = None  # the loaded state is the state, wherever it was made
        self._uneven_counts[0] = any(_state.counts_differ(s) for s in self.state_groups)


@torch.no_grad()
def _step_eagerly(opt: Optimizer, closure: Callable[[], torch.Tensor] | None) -> Any:
    return opt._step(closure)


@dataclasses.dataclass
class _Group:
    """How one parameter group steps: its transformation, built from ``hyper``, and the plan
    of its step. ``impl`` is None after an lr-only edit, until a step needs the whole chain."""

    hyper: dict[str, Any]
    impl: GradientTransformation | None
    plan: _fused_step.StepPlan | None
    lr_is_last_factor: bool  # the chain's last part declares it is the step of ``lr`` alone
    # Until the first step: the parameters' dtypes and devices when the state was created.
    unstepped: tuple[tuple[torch.dtype, torch.device], ...] | None = None

    @classmethod
    def build(
        cls, impl: GradientTransformation, hyper: dict[str, Any], unstepped: Any = None
    ) -> _Group:
        parts: tuple[Any, ...] = tuple(getattr(impl, "transformations", ()))
        lr = hyper.get("lr")
        declared = parts[-1].properties.learning_rate if parts else None
        is_last = _finite_non_negative(lr) and _finite_non_negative(declared) and declared == lr
        return cls(dict(hyper), impl, _fused_step.make_plan(impl), is_last, unstepped)

    def with_lr(self, hyper: dict[str, Any]) -> _Group:
        assert self.plan is not None  # the last part declares a factor, so there is a plan
        plan = self.plan._replace(factor=-float(hyper["lr"]))
        return _Group(dict(hyper), None, plan, True, self.unstepped)


def _finite_non_negative(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0.0


def _layout(impl: GradientTransformation) -> list[Any]:
    """The factories a transformation is built from: equal layouts have equal state trees."""
    parts = getattr(impl, "transformations", (impl,))
    return [getattr(t, "factory", None) for t in parts]


_GRAD = attrgetter("grad")
_SHAPE = attrgetter("shape")
_SPARSE = attrgetter("is_sparse")


def _grads_of(params: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor | None, ...]:
    """The parameters' ``.grad``, checked (dense, the parameter's shape): in C-level loops
    when every gradient is there and fine, else one by one, which names the culprit."""
    if not torch.compiler.is_compiling():  # Dynamo does not trace attrgetter objects
        grads = tuple(map(_GRAD, params))
        try:
            if list(map(_SHAPE, grads)) == list(map(_SHAPE, params)) and not any(
                map(_SPARSE, grads)
            ):
                return grads
        except AttributeError:  # a None gradient
            pass
    return tuple(_grad_of(p, i) for i, p in enumerate(params))


def _grad_of(p: torch.Tensor, index: int) -> torch.Tensor | None:
    g = p.grad
    if g is None:
        return None
    if g.is_sparse:
        raise RuntimeError(f"parameter {index} has a sparse gradient; difopt needs dense ones")
    if g.shape != p.shape:
        raise RuntimeError(
            f"parameter {index} has shape {tuple(p.shape)} but its .grad has {tuple(g.shape)}"
        )
    return g


def _as_groups(params: Any) -> list[Any]:
    if torch.is_tensor(params) or isinstance(params, dict):
        return [params]
    items = list(params)
    if items and all(isinstance(x, dict) for x in items):
        return items
    return [items] if items else []


def _as_tensor_list(params: Any, name: str) -> list[torch.Tensor]:
    if params is None:
        raise ValueError(f"'{name}' is missing")
    if torch.is_tensor(params):
        params = [params]
    # A dict here is a tree of tensors (TorchOpt's params are any pytree), not a group.
    tensors = list(lw.leaves(params if isinstance(params, dict) else list(params)))
    for i, t in enumerate(tensors):
        if not torch.is_tensor(t):
            raise TypeError(f"'{name}' must contain tensors; item {i} is {type(t).__name__}")
    return tensors
