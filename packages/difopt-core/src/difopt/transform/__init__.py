"""Gradient transformations: the building blocks optimizers are chained from."""

from difopt.transform._adaptive import ScaleByAdaDeltaState
from difopt.transform._adaptive import ScaleByAdamaxState
from difopt.transform._adaptive import ScaleByAdamState
from difopt.transform._adaptive import ScaleByAdanState
from difopt.transform._adaptive import ScaleByLionState
from difopt.transform._adaptive import ScaleByNadamState
from difopt.transform._adaptive import ScaleByRAdamState
from difopt.transform._adaptive import ScaleByRmsState
from difopt.transform._adaptive import ScaleByRssState
from difopt.transform._adaptive import ScaleByRStdDevState
from difopt.transform._adaptive import scale_by_accelerated_adam
from difopt.transform._adaptive import scale_by_adadelta
from difopt.transform._adaptive import scale_by_adam
from difopt.transform._adaptive import scale_by_adamax
from difopt.transform._adaptive import scale_by_adan
from difopt.transform._adaptive import scale_by_lion
from difopt.transform._adaptive import scale_by_nadam
from difopt.transform._adaptive import scale_by_radam
from difopt.transform._adaptive import scale_by_rms
from difopt.transform._adaptive import scale_by_rss
from difopt.transform._adaptive import scale_by_stddev
from difopt.transform._core import MaskedState
from difopt.transform._core import ScaleByScheduleState
from difopt.transform._core import TraceState
from difopt.transform._core import add_decayed_weights
from difopt.transform._core import flip_sign_and_add_weight_decay
from difopt.transform._core import masked
from difopt.transform._core import nan_to_num
from difopt.transform._core import scale
from difopt.transform._core import scale_by_neg_lr
from difopt.transform._core import scale_by_schedule
from difopt.transform._core import trace

__all__ = [
    "MaskedState",
    "ScaleByAdaDeltaState",
    "ScaleByAdamState",
    "ScaleByAdamaxState",
    "ScaleByAdanState",
    "ScaleByLionState",
    "ScaleByNadamState",
    "ScaleByRAdamState",
    "ScaleByRStdDevState",
    "ScaleByRmsState",
    "ScaleByRssState",
    "ScaleByScheduleState",
    "TraceState",
    "add_decayed_weights",
    "flip_sign_and_add_weight_decay",
    "masked",
    "nan_to_num",
    "scale",
    "scale_by_accelerated_adam",
    "scale_by_adadelta",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_adan",
    "scale_by_lion",
    "scale_by_nadam",
    "scale_by_neg_lr",
    "scale_by_radam",
    "scale_by_rms",
    "scale_by_rss",
    "scale_by_schedule",
    "scale_by_stddev",
    "trace",
]
