"""Ridge regression solved in closed form, differentiated implicitly (TorchOpt's custom_root)."""

import torch
from torchopt import linear_solve
from torchopt.diff.implicit import custom_root


def stationarity(w, l2reg, X, y):
    """The gradient of 0.5 * |Xw - y|^2 + 0.5 * l2reg * |w|^2: zero at the solution."""
    return X.T @ (X @ w - y) + l2reg * w


@custom_root(stationarity, argnums=1, solve=linear_solve.solve_cg())
def ridge(w0, l2reg, X, y):
    A = X.T @ X + l2reg * torch.eye(X.shape[1], dtype=X.dtype)
    return torch.linalg.solve(A, X.T @ y)
