"""``custom_root``: differentiate the solution of a root-finding problem implicitly.

If ``x*(theta)`` solves ``F(x, theta) = 0`` and ``A = dF/dx`` is invertible at ``x*``, the
implicit function theorem gives ``dx*/dtheta = -A^{-1} B`` with ``B = dF/dtheta``. For a
cotangent ``g`` of ``x*`` the backward pass therefore solves ``A^T u = -g`` with a linear
solver whose ``matvec`` is a VJP of ``F`` in ``x`` (``A`` is never formed), then returns
``B^T u``, a second VJP of ``F`` in ``theta``. The solver itself is never differentiated
through: it runs on detached inputs, so it can use autograd internally and builds no graph.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Sequence, cast

import torch
from torch.autograd.function import once_differentiable

from difopt import pytree
from difopt_implicit.linear_solve import LinearSolver, solve_normal_cg

__all__ = ["custom_root"]

_P = inspect.Parameter
_NAMED_KINDS = (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD, _P.KEYWORD_ONLY)


def _flatten(tree: Any) -> tuple[list[Any], pytree.PyTreeSpec]:
    return pytree.tree_flatten(tree, namespace=pytree.NAMESPACE)


def _unflatten(spec: pytree.PyTreeSpec, flat: Sequence[Any]) -> Any:
    return pytree.tree_unflatten(spec, list(flat))


def _describe(spec: pytree.PyTreeSpec, flat: Sequence[Any]) -> str:
    shapes = [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in flat]
    return f"{spec} with shapes {shapes}"


def _normalize_argnums(argnums: Any) -> tuple[int, ...]:
    items = (argnums,) if isinstance(argnums, int) and not isinstance(argnums, bool) else argnums
    if not isinstance(items, (tuple, list)) or not items:
        raise TypeError(f"'argnums' must be an int or a non-empty tuple of ints, got {argnums!r}")
    for i in items:
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"'argnums' must contain ints, got {i!r} in {argnums!r}")
        if i < 0:
            raise ValueError(
                f"'argnums' must be >= 1 (positions in solver_fn's arguments), got {i}"
            )
        if i == 0:
            raise ValueError(
                "'argnums' must not contain 0: argument 0 is the solver's initial guess, and a "
                "root does not depend on where the solver started (its gradient is zero)"
            )
    if len(set(items)) != len(items):
        raise ValueError(f"'argnums' has duplicates: {argnums!r}")
    return tuple(items)


class _OptimalityCall:
    """Calls ``optimality_fn(x, ...)`` with the arguments the solver was called with.

    When every parameter of ``optimality_fn`` after the first is named like an argument of
    ``solver_fn``, arguments are matched by name, so the solver may take
    extra options (``maxiter=...``). Otherwise they are matched by position, as in TorchOpt
    and JAXopt: the solver's positional arguments after the first, then the keyword-only ones
    that ``optimality_fn`` accepts.
    """

    def __init__(self, optimality_fn: Callable[..., Any], signature: inspect.Signature) -> None:
        self.fn = optimality_fn
        self.signature = signature
        params = list(signature.parameters.values())
        if not params or params[0].kind in (_P.KEYWORD_ONLY, _P.VAR_KEYWORD):
            raise TypeError(
                "'optimality_fn' must take the solution as its first positional argument; "
                f"its signature is {signature}"
            )
        # With optimality_fn(*args) nothing can be matched by name.
        self.rest = params[1:] if params[0].kind is not _P.VAR_POSITIONAL else []
        self.var_keyword = any(p.kind is _P.VAR_KEYWORD for p in params)
        self.keywords = {p.name for p in params if p.kind in _NAMED_KINDS[1:]}

    def arguments(
        self, solution: Any, solver_bound: inspect.BoundArguments
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        available: dict[str, Any] = {}
        for name, value in solver_bound.arguments.items():
            kind = solver_bound.signature.parameters[name].kind
            if kind is _P.VAR_KEYWORD:
                available.update(value)
            elif kind is not _P.VAR_POSITIONAL:
                available[name] = value
        first = next(iter(solver_bound.signature.parameters))
        by_name = bool(self.rest) and all(
            p.kind in _NAMED_KINDS and p.name != first and p.name in available for p in self.rest
        )
        if by_name:
            args: list[Any] = [solution]
            kwargs: dict[str, Any] = {}
            for p in self.rest:
                if p.kind is _P.POSITIONAL_ONLY:
                    args.append(available[p.name])
                else:
                    kwargs[p.name] = available[p.name]
            return tuple(args), kwargs
        positional = (solution, *solver_bound.args[1:])
        kwargs = {
            k: v for k, v in solver_bound.kwargs.items() if self.var_keyword or k in self.keywords
        }
        return positional, kwargs

    def check(self, solution: Any, solver_bound: inspect.BoundArguments) -> None:
        args, kwargs = self.arguments(solution, solver_bound)
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(
                f"custom_root: the arguments of solver_fn{solver_bound.signature} cannot be "
                f"passed to optimality_fn{self.signature} ({exc}). Give optimality_fn the "
                "solver's signature, or name its parameters like the solver's"
            ) from None

    def __call__(self, solution: Any, solver_bound: inspect.BoundArguments) -> Any:
        args, kwargs = self.arguments(solution, solver_bound)
        return self.fn(*args, **kwargs)


@dataclasses.dataclass
class _Problem:
    """What the backward pass needs: everything but the tensors saved on the context."""

    residual: Callable[[Any, Sequence[torch.Tensor]], Any]
    solve: LinearSolver
    solution_spec: pytree.PyTreeSpec
    solution_leaves: list[torch.Tensor]
    n_inputs: int


def _check_residual(out: Any, solution: Any, what: str) -> None:
    out_flat, out_spec = _flatten(out)
    sol_flat, sol_spec = _flatten(solution)
    if (
        out_spec != sol_spec
        or any(not isinstance(o, torch.Tensor) for o in out_flat)
        or any(o.shape != s.shape for o, s in zip(out_flat, sol_flat))
    ):
        raise ValueError(
            f"{what} must return a residual structured like the solution: expected "
            f"{_describe(sol_spec, sol_flat)}, got {_describe(out_spec, out_flat)}"
        )


def implicit_vjp(
    problem: _Problem,
    solution: list[torch.Tensor],
    inputs: list[torch.Tensor],
    needs: Sequence[bool],
    grad_outputs: Sequence[torch.Tensor],
    what: str,
) -> list[torch.Tensor | None]:
    """Return ``B^T u`` for the inputs in ``needs``, where ``A^T u = -grad_outputs``.

    The residual is evaluated once, on fresh leaves for the solution and the needed inputs; its
    graph is kept for the whole solve. Every ``A^T`` product of the linear solver is a backward
    pass of that graph restricted to the solution (autograd skips the branches that lead only
    to the inputs), and ``B^T u`` is a last backward pass restricted to the inputs: one
    evaluation of the optimality function in all, not one per VJP.
    """
    index = [i for i, need in enumerate(needs) if need]
    with torch.enable_grad():
        sol_leaves = [t.detach().requires_grad_() for t in solution]
        full = list(inputs)
        selected = []
        for i in index:
            full[i] = inputs[i].detach().requires_grad_()
            selected.append(full[i])
        sol_tree = _unflatten(problem.solution_spec, sol_leaves)
        residual_at = problem.residual(sol_tree, full)
    _check_residual(residual_at, sol_tree, what)
    out_flat, _ = _flatten(residual_at)
    # Residual leaves that depend on nothing differentiable contribute zero to every VJP.
    live = [k for k, o in enumerate(out_flat) if o.requires_grad]
    outputs = [out_flat[k] for k in live]

    def vjp(
        targets: list[torch.Tensor], cotangents: Sequence[torch.Tensor], retain: bool
    ) -> list[torch.Tensor]:
        grads: Sequence[torch.Tensor | None] = [None] * len(targets)
        if outputs:
            grads = torch.autograd.grad(
                outputs,
                targets,
                [cotangents[k] for k in live],
                retain_graph=retain,
                # Differentiable in the cotangent when traced (solve_normal_cg transposes
                # matvec with a VJP of it); a plain backward pass otherwise.
                create_graph=torch.is_grad_enabled(),
                allow_unused=True,
            )
        return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, targets)]

    spec = problem.solution_spec

    def matvec(u: Any) -> Any:  # A^T u
        u_leaves = cast("list[torch.Tensor]", spec.flatten_up_to(u))
        return _unflatten(spec, vjp(sol_leaves, u_leaves, True))

    cotangent = _unflatten(spec, [-g for g in grad_outputs])
    u = problem.solve(matvec, cotangent)
    u_flat, u_spec = _flatten(u)
    if u_spec != spec:
        raise ValueError(
            f"the linear solver 'solve' returned {_describe(u_spec, u_flat)}, expected the "
            f"structure of the solution {spec}"
        )
    result: list[torch.Tensor | None] = [None] * len(inputs)
    if not index:
        return result
    for i, g in zip(index, vjp(selected, u_flat, False)):
        result[i] = g
    return result


class _ImplicitFunction(torch.autograd.Function):
    """Attaches the computed solution to the graph of the differentiable inputs."""

    @staticmethod
    def forward(ctx: Any, problem: _Problem, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.problem = problem
        outputs = tuple(problem.solution_leaves)
        ctx.save_for_backward(*inputs, *outputs)
        return outputs

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grad_outputs: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        problem: _Problem = ctx.problem
        saved = ctx.saved_tensors
        inputs = [t.detach() for t in saved[: problem.n_inputs]]
        solution = [t.detach() for t in saved[problem.n_inputs :]]
        grads = implicit_vjp(
            problem,
            solution,
            inputs,
            ctx.needs_input_grad[1:],
            grad_outputs,
            "optimality_fn",
        )
        return (None, *grads)


def attach(
    residual: Callable[[Any, Sequence[torch.Tensor]], Any],
    solve: LinearSolver,
    solution: Any,
    inputs: Sequence[torch.Tensor],
) -> Any:
    """Return ``solution`` (detached) on the graph of ``inputs`` through implicit gradients.

    Args:
        residual: ``residual(solution_tree, input_leaves)``, zero at the solution.
        solve: The linear solver of the backward pass.
        solution: The computed root, a pytree of tensors.
        inputs: The tensors to differentiate with respect to.
    """
    flat, spec = _flatten(solution)
    detached = [t.detach() for t in flat]
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in inputs)):
        return _unflatten(spec, detached)
    problem = _Problem(residual, solve, spec, detached, len(inputs))
    outputs = _ImplicitFunction.apply(problem, *inputs)
    problem.solution_leaves = []  # the context keeps the outputs; drop the second reference
    return _unflatten(spec, outputs)


def _differentiable_leaves(
    bound: inspect.BoundArguments, argnums: tuple[int, ...]
) -> list[tuple[int, pytree.PyTreeSpec, list[torch.Tensor]]]:
    names = list(bound.signature.parameters)
    n_args = len(bound.args)
    selected = []
    for i in argnums:
        if i >= n_args:
            raise ValueError(
                f"'argnums' contains {i}, but solver_fn was called with {n_args} positional "
                f"argument(s) (valid: 1 to {n_args - 1}); signature {bound.signature}"
            )
        name = names[i] if i < len(names) else f"#{i}"
        flat, spec = _flatten(bound.args[i])
        bad = [type(t).__name__ for t in flat if not isinstance(t, torch.Tensor)]
        if bad or not flat:
            raise TypeError(
                f"'argnums' contains {i}, which points at argument {name!r} of solver_fn; it "
                f"must be a tensor or a pytree of tensors, got {type(bound.args[i]).__name__}"
                + (f" with non-tensor leaves {bad}" if bad else " without tensors")
            )
        not_float = [t.dtype for t in flat if not (t.is_floating_point() or t.is_complex())]
        if not_float:
            raise TypeError(
                f"'argnums' contains {i} (argument {name!r}): tensors to differentiate must be "
                f"floating point, got dtype {not_float[0]}"
            )
        selected.append((i, spec, flat))
    return selected


def _custom_root(
    solver_fn: Callable[..., Any],
    optimality: _OptimalityCall,
    argnums: tuple[int, ...],
    has_aux: bool,
    solve: LinearSolver,
) -> Callable[..., Any]:
    if not callable(solver_fn):
        raise TypeError(f"custom_root(...) decorates a function, got {type(solver_fn).__name__}")
    solver_signature = inspect.signature(solver_fn)

    @functools.wraps(solver_fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        bound = solver_signature.bind(*args, **kwargs)
        bound.apply_defaults()
        selected = _differentiable_leaves(bound, argnums)
        optimality.check(bound.args[0] if bound.args else None, bound)

        detached = list(bound.args)
        for i, spec, flat in selected:
            detached[i] = _unflatten(spec, [t.detach() for t in flat])
        result = solver_fn(*detached, **bound.kwargs)
        if has_aux:
            if not (isinstance(result, tuple) and len(result) == 2):
                raise TypeError(
                    "custom_root(has_aux=True): solver_fn must return a pair (solution, aux), "
                    f"got {type(result).__name__}"
                )
            solution, aux = result
        else:
            solution = result
        flat, _ = _flatten(solution)
        if not flat or any(not isinstance(t, torch.Tensor) for t in flat):
            raise TypeError(
                "solver_fn must return a tensor or a pytree of tensors"
                + (" (as the first element of its (solution, aux) pair)" if has_aux else "")
                + f", got {type(solution).__name__}"
            )

        inputs = [t for _, _, leaves in selected for t in leaves]
        layout = [(i, spec, len(leaves)) for i, spec, leaves in selected]
        constants = list(bound.args)

        def residual(x: Any, leaves: Sequence[torch.Tensor]) -> Any:
            call_args = list(constants)
            start = 0
            for i, spec, count in layout:
                call_args[i] = _unflatten(spec, leaves[start : start + count])
                start += count
            return optimality(x, solver_signature.bind(*call_args, **bound.kwargs))

        output = attach(residual, solve, solution, inputs)
        return (output, aux) if has_aux else output

    return wrapped


def custom_root(
    optimality_fn: Callable[..., Any],
    argnums: int | tuple[int, ...],
    has_aux: bool = False,
    solve: LinearSolver | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Return a decorator that differentiates a root solver implicitly.

    .. code-block:: python

        def optimality_fn(x, theta, data):        # zero at the solution
            return grad_of_inner_loss(x, theta, data)

        @custom_root(optimality_fn, argnums=1)
        def solver_fn(x_init, theta, data):        # any solver; not differentiated through
            ...
            return x_star

        x_star = solver_fn(x0, theta, data)        # d x_star / d theta by implicit diff

    Same signature and defaults as TorchOpt 0.7.3's ``torchopt.diff.implicit.custom_root``.
    Beyond it: the arguments named by ``argnums`` and the solution may be any pytrees of
    tensors (0-d included), the solver runs with grad enabled on detached inputs (so it may use
    autograd; the caller's grad mode is kept), ``optimality_fn`` may take a subset of the
    solver's arguments by name, and bad input fails with errors naming the argument.

    Args:
        optimality_fn: ``optimality_fn(x, *args, **kwargs)``, whose output has the structure
            and shapes of the solution ``x`` and vanishes at it. Its arguments after the first
            are the solver's: matched by name when all of them are named like the solver's
            parameters, else by position; its keyword arguments are a
            subset of the solver's.
        argnums: Position (or tuple of positions) of the solver's arguments to differentiate
            with respect to; 0 is the initial guess and is not allowed. Each must be a tensor
            or a pytree of floating-point tensors.
        has_aux: Whether ``solver_fn`` returns ``(solution, aux)``; ``aux`` is returned as is
            and is not differentiated.
        solve: A linear solver ``solve(matvec, b)`` from :mod:`difopt_implicit.linear_solve`;
            ``matvec`` multiplies by the transpose of ``d optimality_fn / dx``. Default:
            :func:`~difopt_implicit.linear_solve.solve_normal_cg` (any invertible system).
            Use ``solve_cg()`` when the optimality is a gradient (symmetric Jacobian), and
            ``solve_gmres()`` or ``solve_bicgstab()`` for fixed points.

    Returns:
        A decorator ``solver_fn -> wrapped_solver_fn`` with the solver's signature.

    Raises:
        TypeError: ``optimality_fn`` or ``solve`` is not callable, ``argnums`` is not an int or
            tuple of ints, or (at call time) an argument in ``argnums`` is not a tensor pytree.
        ValueError: ``argnums`` contains 0, a negative or repeated index, or (at call time) an
            index beyond the arguments given; in backward, ``optimality_fn``'s output is not
            structured like the solution.

    Examples:
        >>> import torch
        >>> from difopt_implicit import custom_root
        >>> def optimality(x, a):                  # x**2 = a
        ...     return x * x - a
        >>> @custom_root(optimality, argnums=1)
        ... def sqrt(x, a):
        ...     for _ in range(30):
        ...         x = 0.5 * (x + a / x)        # Newton
        ...     return x
        >>> a = torch.tensor(4.0, dtype=torch.float64, requires_grad=True)
        >>> x = sqrt(torch.tensor(1.0, dtype=torch.float64), a)
        >>> (grad,) = torch.autograd.grad(x, a)
        >>> round(float(grad), 6)                  # 1 / (2 sqrt(a))
        0.25

    References:
        Blondel et al., "Efficient and Modular Implicit Differentiation", NeurIPS 2022.
    """
    if not callable(optimality_fn):
        raise TypeError(f"'optimality_fn' must be callable, got {type(optimality_fn).__name__}")
    normalized = _normalize_argnums(argnums)
    if not isinstance(has_aux, bool):
        raise TypeError(f"'has_aux' must be a bool, got {type(has_aux).__name__}")
    if solve is None:
        solve = solve_normal_cg()
    elif not callable(solve):
        raise TypeError(
            f"'solve' must be a linear solver solve(matvec, b) (e.g. "
            f"difopt.linear_solve.solve_cg()), got {type(solve).__name__}"
        )
    optimality = _OptimalityCall(optimality_fn, inspect.signature(optimality_fn))
    return functools.partial(
        _custom_root,
        optimality=optimality,
        argnums=normalized,
        has_aux=has_aux,
        solve=solve,
    )
