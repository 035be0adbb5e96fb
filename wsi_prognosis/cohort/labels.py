"""Outcome labels for training: good / poor / excluded from follow-up time and event.

DoMore's definition (defaults, in years): **good** = no endpoint event and followed for more
than 6 years; **poor** = endpoint event between 100 days and 2.5 years; everyone else is left
out of training (censored too early, or died of the endpoint outside the poor window). All
thresholds are in `time_unit`, the unit of clinical.csv's `time` column.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from wsi_prognosis.errors import ConfigurationError, TrainingError

log = logging.getLogger(__name__)

GOOD, POOR, EXCLUDED = "good", "poor", "excluded"
DAYS_PER_UNIT = {"days": 1.0, "months": 365.25 / 12.0, "years": 365.25}


@dataclass(frozen=True)
class LabelConfig:
    """Label thresholds, each in `time_unit` (days, months or years)."""

    time_unit: str = "years"
    good_min_followup: float = 6.0          # good: event == 0 and time > this
    poor_min_time: float = 100.0 / 365.25   # poor: event == 1 and poor_min_time <= time ...
    poor_max_time: float = 2.5              # ... <= poor_max_time
    # DoMore's "> 6 years cancer-specific survival" read literally also counts a cancer death after
    # good_min_followup as good; the default (false) demands no event at all.
    good_allows_later_event: bool = False

    def __post_init__(self) -> None:
        if self.time_unit not in DAYS_PER_UNIT:
            raise ConfigurationError(f"labels.time_unit={self.time_unit!r}: use one of {list(DAYS_PER_UNIT)}.")
        if not 0 <= self.poor_min_time < self.poor_max_time:
            raise ConfigurationError(
                f"labels.poor_min_time={self.poor_min_time} must be >= 0 and below labels.poor_max_time={self.poor_max_time}."
            )
        if self.good_min_followup < self.poor_max_time:
            raise ConfigurationError(
                f"labels.good_min_followup={self.good_min_followup} is below labels.poor_max_time={self.poor_max_time}; "
                "good and poor windows would overlap in time."
            )


def outcome_labels(clinical: pd.DataFrame, config: LabelConfig = LabelConfig()) -> pd.Series:
    """`good` / `poor` / `excluded` per row of a clinical table (columns time, event)."""
    time = clinical["time"].to_numpy(dtype=float)
    event = clinical["event"].to_numpy(dtype=int)
    good = (time > config.good_min_followup) & ((event == 0) | config.good_allows_later_event)
    poor = (event == 1) & (time >= config.poor_min_time) & (time <= config.poor_max_time)
    labels = np.where(good, GOOD, np.where(poor, POOR, EXCLUDED))
    return pd.Series(labels, index=clinical.index, name="label")


def label_counts(labels: pd.Series) -> dict[str, int]:
    return {name: int((labels == name).sum()) for name in (GOOD, POOR, EXCLUDED)}


def training_labels(
    manifest: pd.DataFrame,
    clinical: pd.DataFrame,
    config: LabelConfig = LabelConfig(),
    *,
    cohort: str = "training",
    source: str = "clinical.csv",
    keep_excluded: bool = False,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Slides of `cohort` with their patient's label; excluded patients dropped.

    Returns (slides with columns of the manifest + time, event, label, y (1 = poor, 0 = good; NaN for
    the excluded, which `keep_excluded=True` keeps for a Cox loss)), and the
    per-class patient counts (also logged). Raises `TrainingError` when the cohort has no
    slides, or no good or no poor patient — nothing could be learned.
    """
    slides = manifest[manifest["cohort"] == cohort]
    if slides.empty:
        raise TrainingError(
            f"manifest: no slides with cohort={cohort!r} (cohorts present: {sorted(manifest['cohort'].unique())}). "
            "Fix: mark the training slides' cohort column, or set data.train_cohort."
        )
    patients = clinical[clinical["patient_id"].isin(set(slides["patient_id"]))].copy()
    missing = sorted(set(slides["patient_id"]) - set(patients["patient_id"]))
    if missing:
        log.warning("%s: %d %s patient(s) have no clinical row and are left out: %s", source, len(missing), cohort, missing[:5])
    patients["label"] = outcome_labels(patients, config)
    counts = label_counts(patients["label"])
    log.info(
        "%s labels (%s): good=%d poor=%d excluded=%d (good: no event, followed > %g %s; poor: event in [%g, %g] %s)",
        cohort, source, counts[GOOD], counts[POOR], counts[EXCLUDED], config.good_min_followup, config.time_unit,
        config.poor_min_time, config.poor_max_time, config.time_unit,
    )
    empty = [name for name in (GOOD, POOR) if counts[name] == 0]
    if empty:
        raise TrainingError(
            f"{source}: no {' and no '.join(empty)}-prognosis patient in the {cohort} cohort "
            f"(good={counts[GOOD]}, poor={counts[POOR]}, excluded={counts[EXCLUDED]}; times in {config.time_unit}). "
            "Fix: check `time` is in labels.time_unit, or adjust labels.good_min_followup / poor_min_time / poor_max_time."
        )
    table = slides.merge(patients[["patient_id", "time", "event", "label"]], on="patient_id", how="inner")
    if not keep_excluded:
        table = table[table["label"] != EXCLUDED].reset_index(drop=True)
    # y: 1 = poor, 0 = good, NaN = no label (kept only for a loss that uses every patient, e.g. Cox)
    table["y"] = np.where(table["label"] == POOR, 1.0, np.where(table["label"] == GOOD, 0.0, np.nan)).astype(np.float32)
    return table, counts
