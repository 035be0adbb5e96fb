"""Lenient input handling for the analysis: read, check, join, aggregate — and account for every row.

Unlike `wsi_prognosis.cohort.read_clinical` (strict, raises on the first bad row) this module
never stops at a bad row and never drops one silently: every patient that is not analysed
appears in `Prepared.excluded` or `Prepared.unmatched` with a reason. Only problems that make
the whole analysis impossible (missing file, missing required column) raise.

Joining rule: clinical.csv holds one row per patient and is keyed by `patient_id` alone; scores
are keyed by (cohort, patient_id) because a patient can be in two cohorts (training and test).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from wsi_prognosis.errors import ClinicalError, ConfigurationError
from wsi_prognosis.survival.html_parts import fmt_threshold

RISK_GROUPS: tuple[str, ...] = ("good", "uncertain", "poor")
_SEVERITY = {g: i for i, g in enumerate(RISK_GROUPS)}
SCORE_COLUMNS = ("patient_id", "cohort", "score")
CLINICAL_COLUMNS = ("patient_id", "time", "event")
EXCLUDED_COLUMNS = ["cohort", "patient_id", "source", "reason"]
UNMATCHED_COLUMNS = ["direction", "cohort", "patient_id"]


@dataclass
class Prepared:
    """Analysable patients plus the full account of what was left out and why.

    patients: one row per (cohort, patient_id): score, risk_group, n_slides, time, event and the
        clinical covariates (original column names).
    excluded: patients present in scores that cannot be analysed (cohort, patient_id, source, reason).
    unmatched: direction ("in_scores_not_clinical" | "in_clinical_not_scores"), cohort, patient_id.
    failed_slides: score rows whose status is not "ok", per cohort.
    notes: plain-language remarks for the report (aggregation, duplicates, ...).
    """

    patients: pd.DataFrame
    excluded: pd.DataFrame
    unmatched: pd.DataFrame
    failed_slides: dict[str, int] = field(default_factory=dict)
    input_level: str = "slide"
    notes: list[str] = field(default_factory=list)


def read_table(path: str | Path, what: str) -> pd.DataFrame:
    """Read a CSV with every column as text (values are checked later, row by row)."""
    path = Path(path)
    error = ClinicalError if what == "clinical" else ConfigurationError
    if not path.is_file():
        raise error(f"{path}: {what} table not found. Fix: pass {what}=PATH to an existing CSV.")
    try:
        return pd.read_csv(path, dtype=str)  # pandas' NA spellings ("", NA, N/A, null, ...) are missing
    except Exception as exc:  # pandas raises several types for malformed CSV
        raise error(f"{path}: cannot be parsed as CSV ({exc}). Fix: save it as comma-separated UTF-8.") from exc


def _require(table: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        error = ClinicalError if what == "clinical" else ConfigurationError
        raise error(
            f"{what} table: missing column(s) {missing}; found {list(table.columns)}. "
            f"Fix: the {what} table needs {list(columns)}."
        )


def _clean_id(values: pd.Series) -> pd.Series:
    return values.astype("string").str.strip()


def _check_clinical(clinical: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str], list[str]]:
    """Valid clinical rows (time float, event int) and {patient_id: reason} for invalid ones."""
    table = clinical.copy()
    table["patient_id"] = _clean_id(table["patient_id"])
    notes: list[str] = []
    problems: dict[str, str] = {}
    blank = table["patient_id"].isna() | (table["patient_id"] == "")
    if blank.any():
        notes.append(f"clinical: {int(blank.sum())} row(s) without patient_id ignored (cannot be matched).")
        table = table[~blank]
    if "cohort" in table.columns:  # clinical is per patient; the scores' cohort is authoritative
        table = table.rename(columns={"cohort": "clinical_cohort"})
    raw_time, raw_event = table["time"], table["event"]
    time = pd.to_numeric(raw_time, errors="coerce")
    event = pd.to_numeric(raw_event, errors="coerce")
    for pid, t_raw, t, e_raw, e in zip(table["patient_id"], raw_time, time, raw_event, event):
        if pd.isna(t_raw):
            problems[pid] = "time missing"
        elif pd.isna(t):
            problems[pid] = f"time not numeric ({t_raw!r})"
        elif not np.isfinite(t) or t < 0:
            problems[pid] = f"time negative or infinite ({t_raw!r})"
        elif pd.isna(e) or e not in (0, 1):
            problems[pid] = f"event not 0/1 ({e_raw!r})"
    table = table.assign(time=time, event=event)
    dup = table["patient_id"].duplicated(keep=False)
    if dup.any():
        for pid, rows in table[dup].groupby("patient_id"):
            if len(rows.drop_duplicates()) == 1:
                notes.append(f"clinical: patient {pid} listed {len(rows)} times with identical values; used once.")
            else:
                problems[pid] = f"listed {len(rows)} times in clinical with different values"
        table = table.drop_duplicates(subset="patient_id", keep="first")
    valid = table[~table["patient_id"].isin(problems)].copy()
    zero = int((valid["time"] == 0).sum())
    if zero:
        notes.append(f"clinical: {zero} patient(s) with time 0 (an event or censoring at time 0); "
                     "kept, but check the time origin.")
    valid["time"] = valid["time"].astype(float)
    valid["event"] = valid["event"].astype(int)
    return valid.reset_index(drop=True), problems, notes


def _aggregate_scores(
    ok: pd.DataFrame, aggregation: str, thresholds: tuple[float, float] | None
) -> tuple[pd.DataFrame, list[str]]:
    """One row per (cohort, patient_id): mean/max score, most severe group (or re-derived)."""
    notes: list[str] = []
    if ok.empty:
        return pd.DataFrame(columns=["cohort", "patient_id", "score", "n_slides", "risk_group"]), notes
    grouped = ok.groupby(["cohort", "patient_id"], sort=False)
    n_rows = grouped.size()
    multi = int((n_rows > 1).sum())
    agg = grouped["score"].agg(aggregation).rename("score").to_frame()
    if "n_slides" in ok.columns and multi == 0:
        agg["n_slides"] = pd.to_numeric(grouped["n_slides"].first(), errors="coerce").fillna(1).astype(int)
    else:
        agg["n_slides"] = n_rows
    if thresholds is not None:
        low, high = thresholds
        agg["risk_group"] = np.where(agg["score"] < low, "good", np.where(agg["score"] < high, "uncertain", "poor"))
        notes.append(f"risk groups re-derived from the patient score with thresholds low={fmt_threshold(low)}, "
                     f"high={fmt_threshold(high)}.")
    else:
        agg["risk_group"] = grouped["risk_group"].agg(
            lambda s: max(s, key=lambda g: _SEVERITY.get(g, -1))
        )
    if multi:
        notes.append(
            f"{multi} patient(s) had several ok score rows: patient score = {aggregation} of the slide scores"
            + ("" if thresholds is not None else "; risk group = the most severe slide group (thresholds not re-applied)")
            + "."
        )
    return agg.reset_index(), notes


def prepare(
    scores: pd.DataFrame,
    clinical: pd.DataFrame,
    *,
    aggregation: str = "mean",
    thresholds: tuple[float, float] | None = None,
) -> Prepared:
    """Check scores and clinical tables, aggregate to patients, join, and account for every patient.

    scores: scores.csv (slide level, with `status`) or patient_scores.csv; a table from another
        tool needs only patient_id, cohort, score and (unless `thresholds` is given) risk_group.
    clinical: patient_id, time, event and optional covariates.
    """
    _require(scores, SCORE_COLUMNS if thresholds is not None else SCORE_COLUMNS + ("risk_group",), "scores")
    _require(clinical, CLINICAL_COLUMNS, "clinical")
    if aggregation not in ("mean", "max"):
        raise ConfigurationError(f"analysis.patient_aggregation={aggregation!r}: use 'mean' or 'max'.")
    notes: list[str] = []
    input_level = "slide" if "slide_id" in scores.columns else "patient"
    s = scores.copy()
    s["patient_id"] = _clean_id(s["patient_id"])
    s["cohort"] = _clean_id(s["cohort"]).fillna("(no cohort)").replace("", "(no cohort)")
    blank = s["patient_id"].isna() | (s["patient_id"] == "")
    if blank.any():
        notes.append(f"scores: {int(blank.sum())} row(s) without patient_id ignored (cannot be matched).")
        s = s[~blank]
    if "risk_group" not in s.columns:
        s["risk_group"] = pd.NA
    s["risk_group"] = s["risk_group"].astype("string").str.strip().str.lower()
    status = s["status"].astype("string").str.strip().str.lower() if "status" in s.columns else pd.Series("ok", index=s.index)
    ok_mask = status.fillna("") == "ok"
    failed_slides = s[~ok_mask].groupby("cohort").size().astype(int).to_dict()
    s["score"] = pd.to_numeric(s["score"], errors="coerce")

    excluded: list[dict[str, str]] = []
    all_keys = s[["cohort", "patient_id"]].drop_duplicates()
    ok = s[ok_mask]
    no_ok = all_keys.merge(ok[["cohort", "patient_id"]].drop_duplicates(), how="left", indicator=True)
    for row in no_ok[no_ok["_merge"] == "left_only"].itertuples():
        excluded.append({"cohort": row.cohort, "patient_id": row.patient_id, "source": "scores",
                         "reason": "no slide with status ok (scoring failed)"})
    bad_score = ok["score"].isna() | ~np.isfinite(ok["score"].astype(float))
    bad_group = ~ok["risk_group"].isin(RISK_GROUPS).fillna(False) if thresholds is None else pd.Series(False, index=ok.index)
    bad_rows = ok[bad_score | bad_group]
    for (cohort, pid), rows in bad_rows.groupby(["cohort", "patient_id"], sort=False):
        group = rows["risk_group"].iloc[0]
        if bad_score.loc[rows.index].any():
            what = "score missing or not numeric"
        elif pd.isna(group) or group == "":
            what = ("risk_group empty (scores from an uncalibrated bundle?); "
                    "fix: calibrate, or set analysis.thresholds={low: L, high: H}")
        else:
            what = f"risk_group not good/uncertain/poor ({group!r})"
        excluded.append({"cohort": cohort, "patient_id": pid, "source": "scores", "reason": what})
    bad_keys = set(zip(bad_rows["cohort"], bad_rows["patient_id"]))
    ok = ok[np.array([k not in bad_keys for k in zip(ok["cohort"], ok["patient_id"])], dtype=bool)]
    patients, agg_notes = _aggregate_scores(ok, aggregation, thresholds)
    notes += agg_notes

    valid_clinical, problems, clinical_notes = _check_clinical(clinical)
    notes += clinical_notes
    clinical_ids = set(_clean_id(clinical["patient_id"]).dropna())
    score_ids = set(s["patient_id"])
    unmatched = [{"direction": "in_scores_not_clinical", "cohort": c, "patient_id": p}
                 for c, p in all_keys.itertuples(index=False) if p not in clinical_ids]
    unmatched += [{"direction": "in_clinical_not_scores", "cohort": None, "patient_id": p}
                  for p in sorted(clinical_ids - score_ids)]
    unmatched_keys = {(u["cohort"], u["patient_id"]) for u in unmatched if u["direction"] == "in_scores_not_clinical"}
    for row in patients.itertuples():
        if row.patient_id in problems:
            excluded.append({"cohort": row.cohort, "patient_id": row.patient_id, "source": "clinical",
                             "reason": problems[row.patient_id]})
    keep = np.array([(c, p) not in unmatched_keys and p not in problems
                     for c, p in zip(patients["cohort"], patients["patient_id"])], dtype=bool)
    patients = patients[keep].merge(valid_clinical, on="patient_id", how="inner", validate="many_to_one")
    # unmatched patients are reported in `unmatched`, not twice in `excluded`
    excluded = [e for e in excluded if (e["cohort"], e["patient_id"]) not in unmatched_keys]
    return Prepared(
        patients=patients.reset_index(drop=True),
        excluded=pd.DataFrame(excluded, columns=EXCLUDED_COLUMNS),
        unmatched=pd.DataFrame(unmatched, columns=UNMATCHED_COLUMNS),
        failed_slides={str(k): int(v) for k, v in failed_slides.items()},
        input_level=input_level,
        notes=notes,
    )
