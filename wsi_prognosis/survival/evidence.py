"""The study additions to `analyze`: landmark survival, Uno's C / time-dependent AUC, pooled evidence.

`extend_analysis` is called by `survival.api.analyze` after the per-cohort analyses; it adds
`landmarks`, `c_index_uno` and `auc` to each cohort's summary entry (when `config.landmarks` is
set) and returns summary.json's `pooled` entry (when `config.pool` names cohorts) plus the tidy
tables `landmarks`, `discrimination` and `pooled` (written as tables/<name>.csv).
"""

from __future__ import annotations

import pandas as pd

from wsi_prognosis.survival.cox import concat
from wsi_prognosis.survival.landmarks import (discrimination_summary, landmark_summary, landmark_table,
                                              time_dependent_discrimination)
from wsi_prognosis.survival.pooled import pooled_analysis


def extend_analysis(patients: pd.DataFrame, cohorts: dict, config) -> tuple[dict | None, dict[str, pd.DataFrame]]:
    """Mutates `cohorts` (summary entries); returns (pooled summary or None, {table name: DataFrame})."""
    tables: dict[str, list[pd.DataFrame]] = {"landmarks": [], "discrimination": []}
    landmarks = tuple(getattr(config, "landmarks", ()) or ())
    if landmarks:
        for name, entry in cohorts.items():
            df = patients[patients["cohort"] == name]
            lm = landmark_table(df, landmarks, alpha=config.alpha)
            entry["landmarks"] = landmark_summary(lm)
            disc = time_dependent_discrimination(df["time"], df["event"], df["score"], landmarks)
            entry["c_index_uno"], entry["auc"] = discrimination_summary(disc)
            tables["landmarks"].append(lm.assign(cohort=name))
            tables["discrimination"].append(disc.assign(cohort=name))
    out: dict[str, pd.DataFrame] = {}
    for key, frames in tables.items():
        if frames:
            table = concat(frames)
            out[key] = table[["cohort"] + [c for c in table.columns if c != "cohort"]]
    pool = tuple(getattr(config, "pool", ()) or ())
    pooled = None
    if pool:
        pooled, out["pooled"] = pooled_analysis(cohorts, pool, alpha=config.alpha)
    return pooled, out


__all__ = ["extend_analysis"]
