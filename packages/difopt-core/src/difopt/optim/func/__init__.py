"""Functional optimizer wrapper."""

from difopt.optim.func.base import FuncOptimizer

__all__ = ["FuncOptimizer"]
