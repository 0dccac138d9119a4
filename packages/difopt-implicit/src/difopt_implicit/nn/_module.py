"""``ImplicitMetaGradientModule``: an ``nn.Module`` whose ``solve`` is differentiated implicitly."""

from __future__ import annotations

import abc
import contextlib
import functools
import inspect
import weakref
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from difopt.nn import MetaGradientModule
from difopt_implicit._root import attach
from difopt_implicit.linear_solve import LinearSolver, solve_normal_cg

__all__ = [
    "ImplicitMetaGradientModule",
    "enable_implicit_gradients",
    "make_optimality_from_objective",
]


def _slot(module: nn.Module, name: str) -> tuple[dict[str, Any], str]:
    """The dict holding tensor ``name`` (a dotted path) and its key in that dict."""
    *path, attr = name.split(".")
    owner: Any = module
    for part in path:
        owner = getattr(owner, part)
    if isinstance(owner, MetaGradientModule) and attr in owner._meta_parameters:
        return owner._meta_parameters, attr
    if attr in owner._parameters:
        return owner._parameters, attr
    if attr in owner._buffers:
        return owner._buffers, attr
    raise KeyError(f"{name!r} is not a parameter, buffer or meta-parameter of the module")


@contextlib.contextmanager
def _substituted(module: nn.Module, tensors: Mapping[str, torch.Tensor | None]) -> Iterator[None]:
    """Let ``module`` use ``tensors`` (by dotted name) inside the block, its own after it."""
    saved: list[tuple[dict[str, Any], str, Any]] = []
    try:
        for name, value in tensors.items():
            slot, key = _slot(module, name)
            saved.append((slot, key, slot[key]))
            slot[key] = value
        yield
    finally:
        for slot, key, old in reversed(saved):
            slot[key] = old


_RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")


def _buffer_snapshot(module: ImplicitMetaGradientModule) -> dict[str, torch.Tensor | None]:
    """The buffers the backward pass uses: those of the module and of its meta-modules.

    Each is a copy taken at the end of ``solve``. A BatchNorm in train mode normalizes with
    batch statistics and would update its running statistics in place, which a function
    transform forbids on captured tensors; its statistics are therefore replaced by None, which
    gives the same output (batch statistics) with no update.
    """
    named: list[tuple[str, nn.Module]] = list(module.named_modules())
    for prefix, meta_module in module.named_meta_modules():
        named.extend(meta_module.named_modules(prefix=prefix))
    snapshot: dict[str, torch.Tensor | None] = {}
    for prefix, owner in named:
        dot = prefix + "." if prefix else ""
        train_mode_bn = isinstance(owner, nn.modules.batchnorm._BatchNorm) and owner.training
        for key, buffer in owner._buffers.items():
            if buffer is None:
                continue
            if train_mode_bn and key in _RUNNING_STATS:
                snapshot[dot + key] = None
            else:
                snapshot[dot + key] = buffer.detach().clone()
    return snapshot


def _as_residual(out: Any, count: int) -> tuple[torch.Tensor, ...]:
    if isinstance(out, torch.Tensor) and count == 1:
        return (out,)
    if isinstance(out, (tuple, list)):
        return tuple(out)
    raise TypeError(
        "optimality() must return a tuple of tensors, one per parameter in "
        f"tuple(module.parameters()) ({count}), got {type(out).__name__}"
    )


def _optimality_from_objective(
    self: ImplicitMetaGradientModule, *input: Any, **kwargs: Any
) -> tuple[torch.Tensor, ...]:
    """The gradient of :meth:`objective` with respect to the module's parameters."""
    names = [n for n, _ in self.named_parameters()]
    tensors = tuple(p for _, p in self.named_parameters())
    if not names:
        raise RuntimeError(
            f"The module has no parameters. {type(self).__name__} has no parameters to "
            "differentiate"
        )
    if next(self.meta_parameters(), None) is None:
        # TorchOpt checks this here too, although the gradient does not need them.
        raise RuntimeError(
            f"The module has no meta-parameters. {type(self).__name__} has no meta-parameters "
            "for the implicit gradient to reach"
        )

    def objective(*params: torch.Tensor) -> torch.Tensor:
        with _substituted(self, dict(zip(names, params))):
            value = self.objective(*input, **kwargs)
        if not isinstance(value, torch.Tensor) or value.ndim != 0:
            raise ValueError(
                f"objective() must return a 0-d tensor, got "
                f"{tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__}"
            )
        return value

    grads = torch.func.grad(objective, argnums=tuple(range(len(tensors))))(*tensors)
    return tuple(grads)


def _implicit_solve(user_solve: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a subclass's ``solve`` so that its result carries implicit gradients."""

    @functools.wraps(user_solve)
    def solve(self: ImplicitMetaGradientModule, *input: Any, **kwargs: Any) -> Any:
        # The first sentence of each message is TorchOpt's, which user code may match on.
        self._implicit_restore_leaves()
        named_params = list(self.named_parameters())
        if not named_params:
            raise RuntimeError(
                f"The module has no parameters. {type(self).__name__} has no parameters for "
                "solve() to optimize: the inner variables must be attributes that require grad "
                "(nn.Parameter or tensors; meta-parameters do not count)"
            )
        named_meta = list(self.named_meta_parameters())
        if not named_meta:
            raise RuntimeError(
                f"The module has no meta-parameters. {type(self).__name__} has no "
                "meta-parameters: pass the tensors that require grad (or the modules) to learn "
                "as constructor arguments and assign them as attributes (self.prior = prior), "
                "or register them with register_meta_parameter() / register_meta_module()"
            )
        meta_names = [n for n, _ in named_meta]
        meta_tensors = [t for _, t in named_meta]

        # As in TorchOpt, solve() runs with gradient computation disabled (TorchOpt ran it in
        # an autograd.Function's forward): it may write its parameters in place
        # (``self.x.copy_(...)``), and a gradient-based inner loop opts in with
        # ``torch.enable_grad()``. The gradients come from the implicit function theorem.
        # It also sees detached meta-parameters: it builds no graph into them and cannot
        # accumulate into their .grad, whatever it back-propagates.
        with _substituted(self, {n: t.detach() for n, t in named_meta}), torch.no_grad():
            try:
                output = user_solve(self, *input, **kwargs)
            except RuntimeError as error:
                if "does not require grad" not in str(error):
                    raise
                raise RuntimeError(
                    f"{error}\n{type(self).__name__}.solve() runs with gradient computation "
                    "disabled (as in TorchOpt): wrap a gradient-based inner loop in "
                    "`with torch.enable_grad():`"
                ) from error

        solved = list(self.named_parameters())
        names = [n for n, _ in solved]
        if names != [n for n, _ in named_params]:
            raise RuntimeError(
                f"solve() changed the set of parameters of {type(self).__name__} from "
                f"{[n for n, _ in named_params]} to {names}"
            )
        self._implicit_requires_grad = {n: p.requires_grad for n, p in solved}
        solution = tuple(p for _, p in solved)
        buffers = _buffer_snapshot(self)
        module_ref = weakref.ref(self)
        owner = type(self).__name__

        def residual(x: Sequence[torch.Tensor], meta: Sequence[torch.Tensor]) -> Any:
            module = module_ref()
            if module is None:
                raise RuntimeError(
                    f"the {owner} module was garbage-collected before backward; keep a reference "
                    "to it until the meta-gradient is computed"
                )
            tensors: dict[str, torch.Tensor | None] = dict(zip(names, x))
            tensors.update(zip(meta_names, meta))
            # Fresh copies, so that nothing the optimality does can change the snapshot.
            tensors.update({n: None if b is None else b.clone() for n, b in buffers.items()})
            with _substituted(module, tensors):
                out = module.optimality(*input, **kwargs)
            return _as_residual(out, len(names))

        solve_fn = type(self).linear_solve or solve_normal_cg()
        optimal = attach(residual, solve_fn, solution, meta_tensors)
        if any(t.grad_fn is not None for t in optimal):
            for name, tensor in zip(names, optimal):
                slot, key = _slot(self, name)
                slot[key] = tensor
        return output

    solve.__implicit_gradients_enabled__ = True  # type: ignore[attr-defined]
    return solve


def _check_module_class(cls: Any, function: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, ImplicitMetaGradientModule)):
        raise TypeError(f"{function}() takes a subclass of ImplicitMetaGradientModule, got {cls!r}")


def make_optimality_from_objective(
    cls: type[ImplicitMetaGradientModule],
) -> type[ImplicitMetaGradientModule]:
    """Make ``cls.optimality`` the gradient of ``cls.objective`` with respect to the parameters.

    ``ImplicitMetaGradientModule`` applies it to every subclass that defines ``objective`` and
    no ``optimality`` (TorchOpt's ``torchopt.diff.implicit.nn.module`` function).

    Args:
        cls: A subclass of :class:`ImplicitMetaGradientModule` that defines ``objective``.

    Returns:
        ``cls``, modified in place.

    Raises:
        TypeError: ``cls`` defines no ``objective`` (TorchOpt's message), or is not a subclass
            of :class:`ImplicitMetaGradientModule`.
    """
    _check_module_class(cls, "make_optimality_from_objective")
    base = inspect.getattr_static(ImplicitMetaGradientModule, "objective")
    if inspect.getattr_static(cls, "objective", base) is base:
        raise TypeError(
            f"The objective function is not defined. {cls.__name__} must define objective() "
            "to derive its optimality from it"
        )
    cls.optimality = _optimality_from_objective  # type: ignore[method-assign]
    return cls


def enable_implicit_gradients(
    cls: type[ImplicitMetaGradientModule],
) -> type[ImplicitMetaGradientModule]:
    """Wrap ``cls.solve`` so that the solution carries implicit gradients.

    ``ImplicitMetaGradientModule`` applies it to every subclass that defines ``solve``
    (TorchOpt's ``torchopt.diff.implicit.nn.module`` function); applying it twice is an error.

    Args:
        cls: A subclass of :class:`ImplicitMetaGradientModule`.

    Returns:
        ``cls``, modified in place.

    Raises:
        TypeError: ``cls.solve`` is already wrapped (TorchOpt's message), or ``cls`` is not a
            subclass of :class:`ImplicitMetaGradientModule`.
    """
    _check_module_class(cls, "enable_implicit_gradients")
    solve = cls.solve
    if getattr(solve, "__implicit_gradients_enabled__", False):
        raise TypeError(
            f"Implicit gradients are already enabled for the `solve` method. "
            f"{cls.__name__}.solve is already differentiated implicitly"
        )
    cls.solve = _implicit_solve(solve)  # type: ignore[method-assign]
    return cls


class ImplicitMetaGradientModule(MetaGradientModule, metaclass=abc.ABCMeta):
    """A module whose :meth:`solve` fits its parameters; meta-gradients come implicitly.

    Subclass it, take the meta-parameters (tensors that require grad, or modules) as
    constructor arguments and assign them as attributes, create the inner parameters as
    ``nn.Parameter`` attributes, and define :meth:`solve` and either :meth:`optimality` or
    :meth:`objective` (the optimality is then the gradient of the objective with respect to
    the parameters). After ``module.solve(...)`` the parameters are the solution, attached to
    the meta-parameters' graph through the implicit function theorem, so a loss computed with
    the module back-propagates into the meta-parameters. Choose the linear solver with the
    class keyword ``linear_solve=`` (default: ``solve_normal_cg()``).

    Same API as TorchOpt 0.7.3's ``torchopt.nn.ImplicitMetaGradientModule``. Differences:

    - modules given at construction are meta-modules whatever their ``training`` flag (TorchOpt
      registered an ``eval()``-mode module as a plain submodule, losing its meta-parameters);
      their buffers (BatchNorm statistics) are used, as they were at the end of ``solve``, in
      both train and eval mode, and the backward pass never modifies them;
    - ``solve`` runs, as in TorchOpt, with gradient computation disabled (so it may write its
      parameters in place; a gradient-based inner loop uses ``torch.enable_grad()``), but
      with detached meta-parameters, and the graph of one outer iteration is
      released as soon as the caller drops its outputs (no reference cycle through the
      module), so memory stays flat across outer iterations;
    - calling ``solve`` again on the same module starts from the previous solution as fresh
      leaf parameters.

    Examples:
        >>> import torch, difopt
        >>> class Ridge(difopt.nn.ImplicitMetaGradientModule,
        ...             linear_solve=difopt.linear_solve.solve_cg(rtol=1e-10)):
        ...     def __init__(self, log_lam, n):
        ...         super().__init__()
        ...         self.log_lam = log_lam                      # meta-parameter
        ...         self.w = torch.nn.Parameter(torch.zeros(n, dtype=torch.float64))
        ...     def objective(self, x, y):
        ...         fit = 0.5 * ((x @ self.w - y) ** 2).sum()
        ...         return fit + 0.5 * self.log_lam.exp() * (self.w ** 2).sum()
        ...     def solve(self, x, y):
        ...         lam = self.log_lam.exp()
        ...         a = x.T @ x + lam * torch.eye(x.shape[1], dtype=x.dtype)
        ...         with torch.no_grad():
        ...             self.w.copy_(torch.linalg.solve(a, x.T @ y))
        >>> x, y = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, dtype=torch.float64)
        >>> log_lam = torch.zeros((), dtype=torch.float64, requires_grad=True)
        >>> model = Ridge(log_lam, 3)
        >>> model.solve(x, y)
        >>> (model.w ** 2).sum().backward()
        >>> log_lam.grad is not None
        True
    """

    linear_solve: LinearSolver | None = None
    _custom_optimality: bool
    _custom_objective: bool
    _implicit_requires_grad: dict[str, bool]

    def __init_subclass__(cls, linear_solve: LinearSolver | None = None, **kwargs: Any) -> None:
        """Check the subclass and make its ``solve`` implicitly differentiable.

        Args:
            linear_solve: The linear solver of the backward pass, e.g.
                ``difopt.linear_solve.solve_cg(maxiter=20)``; inherited when None.
            **kwargs: Passed on to ``super().__init_subclass__``.

        Raises:
            TypeError: ``linear_solve`` is not callable; neither ``optimality`` nor
                ``objective`` is defined; one of them is a static or class method.
        """
        super().__init_subclass__(**kwargs)
        if linear_solve is not None:
            if not callable(linear_solve):
                raise TypeError(
                    f"'linear_solve' must be a linear solver solve(matvec, b) (e.g. "
                    f"difopt.linear_solve.solve_cg()), got {type(linear_solve).__name__}"
                )
            cls.linear_solve = linear_solve
        base_optimality = inspect.getattr_static(ImplicitMetaGradientModule, "optimality")
        base_objective = inspect.getattr_static(ImplicitMetaGradientModule, "objective")
        optimality = inspect.getattr_static(cls, "optimality")
        objective = inspect.getattr_static(cls, "objective")
        cls._custom_optimality = optimality is not base_optimality and (
            optimality is not _optimality_from_objective
        )
        cls._custom_objective = objective is not base_objective
        for name, attr, custom in (
            ("optimality", optimality, cls._custom_optimality),
            ("objective", objective, cls._custom_objective),
        ):
            if custom and isinstance(attr, (staticmethod, classmethod)):
                raise TypeError(
                    f"method {name}() must not be a {type(attr).__name__}. "
                    f"{cls.__name__}.{name}() must be a plain method"
                )
            if custom and not callable(attr):
                raise TypeError(
                    f"method {name}() must be callable. {cls.__name__}.{name} is a "
                    f"{type(attr).__name__}"
                )
        if not cls._custom_optimality:
            if not cls._custom_objective:
                raise TypeError(
                    "ImplicitMetaGradientModule requires either an optimality() method or an "
                    f"objective() method: {cls.__name__} must define optimality() (the "
                    "residual, zero at the solution) or objective() (whose gradient is then "
                    "the residual)"
                )
            make_optimality_from_objective(cls)
        if "solve" in cls.__dict__ and not getattr(
            cls.__dict__["solve"], "__implicit_gradients_enabled__", False
        ):
            enable_implicit_gradients(cls)

    def _implicit_restore_leaves(self) -> None:
        """Turn parameters left on a graph by a previous ``solve`` back into leaves."""
        flags = self.__dict__.get("_implicit_requires_grad", {})
        for name, tensor in list(self.named_parameters()):
            if tensor.grad_fn is not None:
                slot, key = _slot(self, name)
                slot[key] = nn.Parameter(
                    tensor.detach().clone(), requires_grad=flags.get(name, True)
                )

    @abc.abstractmethod
    def solve(self, *input: Any, **kwargs: Any) -> Any:
        """Fit the module's parameters (the inner problem); meta-parameters stay fixed.

        It runs with gradient computation disabled, as in TorchOpt: it may write the
        parameters in place (``self.x.copy_(...)``), and a gradient-based inner loop enables
        it itself (``with torch.enable_grad(): ...``). Inside, the meta-parameters are
        detached, so ``loss.backward()`` cannot accumulate into their ``.grad``; restricting
        back-propagation to the parameters (``loss.backward(inputs=params)`` or
        ``torch.autograd.grad``) saves the work.

        Returns:
            Anything; it is returned to the caller unchanged.
        """

    def optimality(self, *input: Any, **kwargs: Any) -> tuple[torch.Tensor, ...]:
        """The residual of the inner problem, zero at the solution of :meth:`solve`.

        Returns:
            A tuple with one tensor per parameter, in the order of ``tuple(self.parameters())``
            and with their shapes: typically the gradient of the inner loss (KKT condition),
            or ``f(x) - x`` for a fixed point ``x = f(x)``.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must define optimality(...) or objective(...)"
        )

    def objective(self, *input: Any, **kwargs: Any) -> torch.Tensor:
        """The inner objective, a 0-d tensor; :meth:`optimality` defaults to its gradient."""
        raise NotImplementedError(
            f"{type(self).__name__} must define objective(...) or optimality(...)"
        )
