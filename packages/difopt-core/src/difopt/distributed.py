"""Distributed execution on ``torch.distributed.rpc``, provided by ``difopt-distributed``.

Entry point: group ``difopt.distributed``, name ``distributed``.
"""

from difopt._lazy import install

install(__name__, "difopt.distributed", "distributed", "difopt-distributed")
