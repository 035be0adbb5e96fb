"""Risk-group thresholds: two cut-points that split the ensemble score into good / uncertain / poor.

Fitted once on the tuning cohort, written into a new bundle, then applied unchanged to every
other cohort (the validation cohort never moves them).
"""

from wsi_prognosis.calibration.logrank import logrank_statistic, pairwise_logrank_statistics
from wsi_prognosis.calibration.thresholds import (
    DEFAULT_SHARES,
    METHODS,
    RISK_GROUPS,
    Thresholds,
    assign_risk_group,
    assign_risk_groups,
    fit_thresholds,
    group_shares,
)

__all__ = [
    "DEFAULT_SHARES",
    "METHODS",
    "RISK_GROUPS",
    "Thresholds",
    "assign_risk_group",
    "assign_risk_groups",
    "fit_thresholds",
    "group_shares",
    "logrank_statistic",
    "pairwise_logrank_statistics",
]
