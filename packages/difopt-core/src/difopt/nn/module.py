"""``MetaGradientModule``: a module that knows which of its inputs are meta-parameters."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterator

import torch
from torch import nn

__all__ = ["MetaGradientModule"]


def _meta_inputs(args: Any, kwargs: Any) -> tuple[dict[int, torch.Tensor], dict[int, nn.Module]]:
    import optree

    inputs: Any = (args, kwargs)  # optree's PyTree type does not admit a plain tuple
    leaves = optree.tree_leaves(inputs, is_leaf=lambda x: isinstance(x, nn.Module))
    tensors = {id(x): x for x in leaves if torch.is_tensor(x) and x.requires_grad}
    modules = {id(x): x for x in leaves if isinstance(x, nn.Module)}
    # As in TorchOpt, the sub-modules and parameters of a module input are meta too: assigning
    # ``self.head = net.head`` or ``self.w = net.weight`` registers a meta-module/-parameter.
    for module in list(modules.values()):
        modules.update((id(m), m) for m in module.modules())
        tensors.update((id(p), p) for p in module.parameters())
    return tensors, modules


def _check_name(kind: str, name: Any) -> None:
    if not isinstance(name, str):
        raise TypeError(f"{kind} name should be a string. Got {torch.typename(name)}")
    if "." in name:
        raise KeyError(f"{kind} name can't contain '.'")
    if name == "":
        raise KeyError(f"{kind} name can't be empty string ''")


class MetaGradientModule(nn.Module):
    """An ``nn.Module`` whose constructor inputs (tensors that require grad, and modules) are
    meta-parameters: assigned as attributes, they are tracked by :meth:`meta_parameters`
    instead of :meth:`parameters`, so an inner optimizer never updates them.

    Examples:
        >>> import torch, difopt
        >>> class Inner(difopt.nn.MetaGradientModule):
        ...     def __init__(self, prior):
        ...         super().__init__()
        ...         self.prior = prior            # a meta-parameter
        ...         self.w = torch.nn.Parameter(prior.detach().clone())
        >>> m = Inner(torch.zeros(3, requires_grad=True))
        >>> [n for n, _ in m.named_parameters()], [n for n, _ in m.named_meta_parameters()]
        (['w'], ['prior'])
    """

    _meta_inputs: tuple[dict[int, torch.Tensor], dict[int, nn.Module]]
    _meta_parameters: dict[str, torch.Tensor | None]
    _meta_modules: dict[str, nn.Module | None]

    def __new__(cls, *args: Any, **kwargs: Any) -> MetaGradientModule:
        instance = super().__new__(cls)
        object.__setattr__(instance, "_meta_inputs", _meta_inputs(args, kwargs))
        object.__setattr__(instance, "_meta_parameters", OrderedDict())
        object.__setattr__(instance, "_meta_modules", OrderedDict())
        return instance

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def __setattr__(self, name: str, value: Any) -> None:
        # TorchOpt's rule: any tensor that requires grad is a parameter (not only an
        # nn.Parameter: inner parameters are often non-leaf tensors computed from
        # meta-parameters), or a meta-parameter when it was a constructor input.
        if isinstance(value, nn.Parameter) or (torch.is_tensor(value) and value.requires_grad):
            if "_parameters" not in self.__dict__:
                raise AttributeError("cannot assign parameters before Module.__init__() call")
            self._forget(name)
            if id(value) in self._meta_inputs[0]:
                self.register_meta_parameter(name, value)
            else:
                self.register_parameter(name, value)
        elif isinstance(value, nn.Module):
            if "_modules" not in self.__dict__:
                raise AttributeError("cannot assign module before Module.__init__() call")
            self._forget(name)
            if id(value) in self._meta_inputs[1]:
                self._meta_modules[name] = value
            else:
                self._modules[name] = value
        elif name in self.__dict__.get("_meta_parameters", {}):
            if value is not None:
                raise TypeError(
                    f"cannot assign '{torch.typename(value)}' as meta-parameter '{name}' "
                    "(a tensor that requires grad, or None, expected)"
                )
            self._meta_parameters[name] = None
        elif name in self.__dict__.get("_meta_modules", {}):
            if value is not None:
                raise TypeError(
                    f"cannot assign '{torch.typename(value)}' as meta-module '{name}' "
                    "(torch.nn.Module or None expected)"
                )
            self._meta_modules[name] = None
        elif name in self.__dict__.get("_parameters", {}) and value is not None:
            raise TypeError(
                f"cannot assign '{torch.typename(value)}' as parameter '{name}' "
                "(a tensor that requires grad, or None, expected)"
            )
        else:
            super().__setattr__(name, value)

    def _forget(self, name: str) -> None:
        """Remove ``name`` from wherever a previous assignment put it."""
        self.__dict__.pop(name, None)
        for table in ("_parameters", "_buffers", "_modules", "_meta_parameters", "_meta_modules"):
            self.__dict__[table].pop(name, None)
        self._non_persistent_buffers_set.discard(name)

    def __getattr__(self, name: str) -> Any:
        meta_params = self.__dict__.get("_meta_parameters", {})
        if name in meta_params:
            return meta_params[name]
        meta_modules = self.__dict__.get("_meta_modules", {})
        if name in meta_modules:
            return meta_modules[name]
        return super().__getattr__(name)

    def __delattr__(self, name: str) -> None:
        if name in self._meta_parameters:
            del self._meta_parameters[name]
        elif name in self._meta_modules:
            del self._meta_modules[name]
        else:
            super().__delattr__(name)

    def register_parameter(self, name: str, param: torch.Tensor | None) -> None:
        """Add a parameter: an ``nn.Parameter``, or any tensor that requires grad (or None)."""
        if isinstance(param, nn.Parameter) or param is None:
            super().register_parameter(name, param)
            return
        _check_name("parameter", name)
        if "_parameters" not in self.__dict__:
            raise AttributeError("cannot assign parameter before Module.__init__() call")
        if hasattr(self, name) and name not in self._parameters:
            raise KeyError(f"attribute '{name}' already exists")
        if not torch.is_tensor(param):
            raise TypeError(
                f"cannot assign '{torch.typename(param)}' object to parameter '{name}' "
                "(torch.Tensor or None required)"
            )
        if not param.requires_grad:
            raise ValueError(
                f"cannot assign a tensor with requires_grad=False to parameter '{name}'"
            )
        if id(param) in self._meta_inputs[0]:
            raise ValueError(
                f"cannot assign Tensor that is a meta-parameter to parameter '{name}'. Use "
                "self.register_meta_parameter() instead."
            )
        self._parameters[name] = param  # type: ignore[assignment]

    def register_meta_parameter(self, name: str, param: torch.Tensor | None) -> None:
        """Track ``param`` (a tensor that requires grad, or None) as meta-parameter ``name``."""
        _check_name("meta-parameter", name)
        if param is not None and not torch.is_tensor(param):
            raise TypeError(
                f"cannot assign '{torch.typename(param)}' object to meta-parameter '{name}' "
                "(torch.Tensor or None required)"
            )
        if param is not None and not param.requires_grad:
            raise ValueError(
                f"cannot assign a tensor with requires_grad=False to meta-parameter '{name}'"
            )
        if name in self._parameters or name in self._buffers or name in self._modules:
            raise KeyError(f"attribute {name!r} already exists as a parameter, buffer or module")
        self._meta_parameters[name] = param

    def register_meta_module(self, name: str, meta_module: nn.Module | None) -> None:
        """Track ``meta_module`` (all its parameters) as meta-parameters under ``name``."""
        if meta_module is not None and not isinstance(meta_module, nn.Module):
            raise TypeError(f"'meta_module' must be an nn.Module, got {type(meta_module).__name__}")
        if name in self._parameters or name in self._buffers or name in self._modules:
            raise KeyError(f"attribute {name!r} already exists as a parameter, buffer or module")
        self._meta_modules[name] = meta_module

    add_meta_module = register_meta_module

    def named_meta_parameters(
        self, prefix: str = "", recurse: bool = True
    ) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield ``(name, tensor)`` for every meta-parameter (and those of meta-modules)."""
        seen: set[int] = set()
        modules = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for mod_prefix, module in modules:
            if not isinstance(module, MetaGradientModule):
                continue
            dot = mod_prefix + ("." if mod_prefix else "")
            for k, v in module._meta_parameters.items():
                if v is not None and id(v) not in seen:
                    seen.add(id(v))
                    yield dot + k, v
            for k, m in module._meta_modules.items():
                if m is None:
                    continue
                for pk, pv in m.named_parameters(prefix=dot + k):
                    if id(pv) not in seen:
                        seen.add(id(pv))
                        yield pk, pv

    def meta_parameters(self, recurse: bool = True) -> Iterator[torch.Tensor]:
        """Yield every meta-parameter."""
        for _, p in self.named_meta_parameters(recurse=recurse):
            yield p

    def named_meta_children(self) -> Iterator[tuple[str, nn.Module]]:
        """Yield ``(name, module)`` for the direct meta-modules."""
        for k, m in self._meta_modules.items():
            if m is not None:
                yield k, m

    def meta_children(self) -> Iterator[nn.Module]:
        for _, m in self.named_meta_children():
            yield m

    def named_meta_modules(
        self, memo: set[nn.Module] | None = None, prefix: str = "", remove_duplicate: bool = True
    ) -> Iterator[tuple[str, nn.Module]]:
        """Yield every meta-module of this module and its sub-modules, with its name."""
        memo = set() if memo is None else memo
        for mod_prefix, module in self.named_modules(prefix=prefix):
            if not isinstance(module, MetaGradientModule):
                continue
            dot = mod_prefix + ("." if mod_prefix else "")
            for k, m in module._meta_modules.items():
                if m is None or (remove_duplicate and m in memo):
                    continue
                memo.add(m)
                yield dot + k, m

    def meta_modules(self) -> Iterator[nn.Module]:
        for _, m in self.named_meta_modules():
            yield m
