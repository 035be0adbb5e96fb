"""Slide -> table and slide -> patient aggregation (pure functions on records and DataFrames).

scores.csv is always rebuilt from the per-slide records, in manifest order, by `slide_table`,
whether by one run, a rerun or `merge` of shards, so all of them give the same file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from wsi_prognosis.calibration import assign_risk_groups
from wsi_prognosis.errors import ConfigurationError

SLIDE_COLUMNS = (
    "slide_id", "patient_id", "cohort", "score", "risk_group", "n_tiles_10x", "n_tiles_40x", "status", "error",
)
PATIENT_COLUMNS = ("patient_id", "cohort", "score", "risk_group", "n_slides")
PATIENT_AGGREGATIONS = ("mean", "max")


MEMBER_AGGREGATIONS = ("mean", "weighted")


def resolve_patient_aggregation(bundle_aggregation: Mapping[str, Any] | None, configured: str | None) -> str:
    """The patient rule: the configured one, else the bundle's `aggregation.patient`, else mean.

    Also checks the bundle's member rule: the mean of the members, or their mean weighted by
    `aggregation.weights` (select's `weighted`: each member's tuning C above chance).
    """
    from wsi_prognosis.errors import BundleError

    aggregation = dict(bundle_aggregation or {})
    if aggregation.get("members", "mean") not in MEMBER_AGGREGATIONS or (
            aggregation.get("members") == "weighted" and not isinstance(aggregation.get("weights"), Mapping)):
        raise BundleError(
            f"bundle aggregation.members={aggregation.get('members')!r}: scoring averages the members (mean, or "
            "weighted with aggregation.weights). Fix: rebuild the bundle with `select`."
        )
    method = configured if configured is not None else str(aggregation.get("patient", "mean"))
    if method not in PATIENT_AGGREGATIONS:
        raise ConfigurationError(f"patient_aggregation={method!r} unknown. Fix: one of {list(PATIENT_AGGREGATIONS)}.")
    return method


def ensemble_score(member_scores: Mapping[str, float], weights: Mapping[str, float] | None = None) -> float:
    """The ensemble score: the mean of the members' slide scores, or their weighted mean (`weights` by member
    name, as the bundle's aggregation records them; members without a weight count 0)."""
    if not member_scores:
        return math.nan
    values = np.array([float(v) for v in member_scores.values()])
    if not weights:
        return float(values.mean())
    w = np.array([float(weights.get(name, 0.0)) for name in member_scores])
    return float((w * values).sum() / w.sum()) if w.sum() > 0 else float(values.mean())


def member_weights(tuning_values: Mapping[str, float]) -> dict[str, float]:
    """select's `weighted` rule: each member's weight is its tuning metric above chance (C or AUC - 0.5,
    floored at 0), normalised to sum 1; when no member beats chance, equal weights. A member that ranks the
    tuning patients no better than chance then adds nothing but noise to the ensemble (a resolution that does
    not carry a cohort's signal), which the plain mean would average in."""
    raw = {name: max(0.0, float(v) - 0.5) if v == v else 0.0 for name, v in tuning_values.items()}
    total = sum(raw.values())
    if total <= 0:
        return {name: 1.0 / len(raw) for name in raw} if raw else {}
    return {name: round(v / total, 6) for name, v in raw.items()}


def slide_table(
    rows: pd.DataFrame,
    records: Mapping[str, Mapping[str, Any]],
    member_names: Sequence[str],
    thresholds: Mapping[str, float] | None,
) -> pd.DataFrame:
    """scores.csv: one row per manifest row (in its order), from the per-slide records.

    A row without a record (never scored) is `status=failed` with error "not scored".
    """
    out: list[dict[str, Any]] = []
    for row in rows.itertuples(index=False):
        rec = records.get(row.slide_id)
        entry: dict[str, Any] = {
            "slide_id": row.slide_id, "patient_id": row.patient_id, "cohort": row.cohort,
            "score": math.nan, "risk_group": "", "n_tiles_10x": 0, "n_tiles_40x": 0,
            "status": "failed", "error": "not scored",
        }
        members = {f"member_{n}": math.nan for n in member_names}
        if rec is not None:
            n_tiles = rec.get("n_tiles", {})
            entry.update(
                score=float(rec["score"]) if rec.get("score") is not None else math.nan,
                n_tiles_10x=int(n_tiles.get("10x", 0)), n_tiles_40x=int(n_tiles.get("40x", 0)),
                status=rec["status"], error=rec.get("error", "") or "",
            )
            for name, value in (rec.get("members") or {}).items():
                members[f"member_{name}"] = float(value)
        entry.update(members)
        out.append(entry)
    table = pd.DataFrame(out, columns=[*SLIDE_COLUMNS, *(f"member_{n}" for n in member_names)])
    table["risk_group"] = assign_risk_groups(table["score"].to_numpy(float), thresholds)
    return table


def patient_table(slides: pd.DataFrame, method: str, thresholds: Mapping[str, float] | None) -> pd.DataFrame:
    """patient_scores.csv: per (cohort, patient_id), the mean or max of the ok slides' scores.

    Patients without an ok slide are left out (their slides' failed rows say why).
    """
    if method not in PATIENT_AGGREGATIONS:
        raise ConfigurationError(f"patient_aggregation={method!r} unknown. Fix: one of {list(PATIENT_AGGREGATIONS)}.")
    ok = slides[slides["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame(columns=list(PATIENT_COLUMNS))
    grouped = ok.groupby(["cohort", "patient_id"], sort=True)["score"]
    table = grouped.agg([method, "size"]).reset_index().rename(columns={method: "score", "size": "n_slides"})
    table["risk_group"] = assign_risk_groups(table["score"].to_numpy(float), thresholds)
    return table[list(PATIENT_COLUMNS)].reset_index(drop=True)


def write_table(table: pd.DataFrame, path: Any) -> None:
    """Write a CSV atomically; floats in shortest round-trip form (exact on reread, identical on rerun)."""
    from wsi_prognosis.atomic import write_text_atomic

    write_text_atomic(path, table.to_csv(index=False, lineterminator="\n"))
