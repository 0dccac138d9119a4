"""Composition of gradient transformations."""

from __future__ import annotations

from difopt.base import ChainedGradientTransformation, GradientTransformation

__all__ = ["chain", "chain_flat"]


def chain(*transformations: GradientTransformation) -> ChainedGradientTransformation:
    """Apply ``transformations`` one after the other.

    Nested chains are flattened and :func:`identity` parts dropped. The state is the tuple of
    the parts' states.

    Examples:
        >>> import difopt
        >>> difopt.chain(difopt.clip_grad_norm(1.0), difopt.chain(difopt.transform.scale(-0.1)))
        ChainedGradientTransformation(
            clip_grad_norm(max_norm=1.0, norm_type=2.0, error_if_nonfinite=False),
            scale(step_size=-0.1)
        )
    """
    return ChainedGradientTransformation(*transformations)


chain_flat = chain
"""TorchOpt's name for a chain over flattened leaves; every difopt chain already is one."""

chain.flat = chain_flat  # type: ignore[attr-defined]  # TorchOpt's spelling: chain.flat(...)
