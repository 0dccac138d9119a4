"""Linear algebra on pytrees (``cg``, ``ns``, ``ns_inv``), provided by ``difopt-implicit``."""

from difopt._lazy import install

__all__ = ["cg", "ns", "ns_inv"]

install(__name__, "difopt.diff", "implicit", "difopt-implicit", path=("linalg",))
