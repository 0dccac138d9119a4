"""A TorchOpt program of several files, unedited: run with ``python -m difopt.compat main.py``."""

import sys

import torch
import torchopt
from draw import draw
from ridge import ridge
from torchopt.diff.implicit import nn as implicit_nn  # noqa: F401  (a module path of TorchOpt)
from world import describe

torch.manual_seed(0)
X = torch.randn(8, 3, dtype=torch.float64)
y = torch.randn(8, dtype=torch.float64)
l2reg = torch.tensor(float(sys.argv[1]), dtype=torch.float64, requires_grad=True)

w = ridge(torch.zeros(3, dtype=torch.float64), l2reg, X, y)
(grad,) = torch.autograd.grad(w.sum(), l2reg)

# Closed form: (X'X + l I) w = X'y, so dw/dl = -(X'X + l I)^-1 w.
A = X.T @ X + l2reg.detach() * torch.eye(3, dtype=torch.float64)
expected = -torch.linalg.solve(A, w.detach()).sum()
print("implicit", torch.allclose(grad, expected, rtol=1e-6, atol=1e-8))
print("world", *describe())
print("dot", "meta_param" in draw(torch.ones(2, requires_grad=True)))
print("alias", torchopt.__name__, type(torchopt.MetaAdam).__name__)
