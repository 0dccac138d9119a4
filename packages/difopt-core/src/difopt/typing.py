"""Type aliases used in difopt's signatures (TorchOpt's ``torchopt.typing`` names)."""

from __future__ import annotations

from typing import (
    Any,
    Callable,
    Dict,
    List,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    Union,
    runtime_checkable,
)

import torch
import torch.distributions
from torch import Tensor
from torch.futures import Future

from difopt.base import (
    ChainedGradientTransformation,
    EmptyState,
    GradientTransformation,
    UninitializedState,
)

__all__ = [
    "ChainedGradientTransformation",
    "Device",
    "Distribution",
    "EmptyState",
    "Future",
    "GradientTransformation",
    "LinearSolver",
    "ListOfOptionalTensors",
    "ListOfTensors",
    "ModuleTensorContainers",
    "Numeric",
    "OptState",
    "OptionalTensor",
    "OptionalTensorOrOptionalTensors",
    "OptionalTensorTree",
    "Params",
    "PyTree",
    "Samplable",
    "SampleFunc",
    "Scalar",
    "ScalarOrSchedule",
    "Schedule",
    "SequenceOfOptionalTensors",
    "SequenceOfTensors",
    "Size",
    "Tensor",
    "TensorContainer",
    "TensorOrTensors",
    "TensorTree",
    "TupleOfOptionalTensors",
    "TupleOfTensors",
    "UninitializedState",
    "Updates",
]

PyTree = Any
Scalar = Union[float, int, bool]
Numeric = Union[Tensor, Scalar]
Schedule = Callable[[Numeric], Numeric]
ScalarOrSchedule = Union[float, Schedule]
Device = Union[torch.device, str, int]
Size = torch.Size
OptionalTensor = Optional[Tensor]
ListOfTensors = List[Tensor]
TupleOfTensors = Tuple[Tensor, ...]
SequenceOfTensors = Sequence[Tensor]
TensorOrTensors = Union[Tensor, SequenceOfTensors]
TensorTree = Any
ListOfOptionalTensors = List[OptionalTensor]
TupleOfOptionalTensors = Tuple[OptionalTensor, ...]
SequenceOfOptionalTensors = Sequence[OptionalTensor]
OptionalTensorOrOptionalTensors = Union[OptionalTensor, SequenceOfOptionalTensors]
OptionalTensorTree = Any
TensorContainer = Dict[str, Optional[Tensor]]
ModuleTensorContainers = Tuple[TensorContainer, ...]
Params = TensorTree
Updates = TensorTree
OptState = TensorTree
LinearSolver = Callable[[Callable[[TensorTree], TensorTree], TensorTree], TensorTree]
Distribution = torch.distributions.Distribution
SampleFunc = Callable[[Size], Union[Tensor, TensorTree]]


@runtime_checkable
class Samplable(Protocol):
    """Anything with ``sample(sample_shape) -> tensor or tree``: a noise source for zero-order
    differentiation. ``torch.distributions.Distribution`` is one (checked at run time)."""

    def sample(self, sample_shape: Size = ...) -> Any:  # noqa: D102
        ...
