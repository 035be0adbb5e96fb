"""`analyze(scores, clinical, config) -> AnalysisResult`: the whole analysis as tidy tables + summary.

Per cohort: group shares, Kaplan–Meier tables, number at risk, log-rank (overall, pairwise), Cox
HRs for uncertain/poor vs good (univariable and adjusted), HR per SD of the score, C-index with a
bootstrap CI, the Schoenfeld PH check, reverse-KM median follow-up, and the same for a reference
marker (default `grade`, ordered by `survival.markers`) with the C-index difference score - marker.
Nothing here writes files (see `outputs.write_analysis`) or reads a Hydra config (see
`wsi_prognosis.stages.analyze`); the options are `survival.config.AnalysisConfig`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import pandas as pd

from wsi_prognosis.provenance import package_versions
from wsi_prognosis.survival.config import COMPARISONS, AnalysisConfig, PrimaryAnalysis
from wsi_prognosis.survival.concordance import concordance_ci, concordance_difference
from wsi_prognosis.survival.cox import concat, cox_groups, cox_per_sd
from wsi_prognosis.survival.evidence import extend_analysis
from wsi_prognosis.survival.followup import median_followup
from wsi_prognosis.survival.inputs import RISK_GROUPS, Prepared, prepare
from wsi_prognosis.survival.km import at_risk_table, km_table
from wsi_prognosis.survival.logrank import logrank_table
from wsi_prognosis.survival.markers import marker_levels, marker_strings, resolve_marker

COHORT_ORDER = ("training", "tuning", "test", "validation")
DEFAULT_COVARIATES = ("pT", "pN")


@dataclass
class AnalysisResult:
    """Tidy tables (one row per cohort x ... ) and the summary dict written as summary.json.

    patients: the analysed patients (cohort, patient_id, score, risk_group, time, event, ...).
    cohorts: cohort, n, events, median_followup, excluded, unmatched, failed_slides.
    groups: cohort, marker, group, n, events, share.
    km: cohort, marker, group, time, at_risk, events, censored, survival, ci_low, ci_high.
    at_risk: cohort, marker, group, time, at_risk, events (events in [time, next time)).
    cox: cohort, model, term, hr, ci_low, ci_high, p, n, events, estimable, reason, sd.
    logrank: cohort, marker, comparison, test_statistic, df, p, n, events, reason.
    concordance: cohort, marker, measure, value, ci_low, ci_high, n_boot, reason.
    ph: cohort, model, term, test_statistic, p, violated.
    excluded / unmatched: every patient not analysed, with the reason.
    """

    config: AnalysisConfig
    patients: pd.DataFrame
    cohorts: pd.DataFrame
    groups: pd.DataFrame
    km: pd.DataFrame
    at_risk: pd.DataFrame
    cox: pd.DataFrame
    logrank: pd.DataFrame
    concordance: pd.DataFrame
    ph: pd.DataFrame
    excluded: pd.DataFrame
    unmatched: pd.DataFrame
    summary: dict
    markers: dict[str, dict] = field(default_factory=dict)  # cohort -> {"column", "levels", "labels"}
    extra: dict[str, pd.DataFrame] = field(default_factory=dict)  # landmarks, discrimination, pooled (survival.evidence)


def cohort_order(names: Sequence[str]) -> list[str]:
    """training, tuning, test, validation first, then any other cohort alphabetically."""
    known = [c for c in COHORT_ORDER if c in names]
    return known + sorted(c for c in names if c not in COHORT_ORDER)


def _num(value) -> float | None:
    """A JSON-safe float: None for None/NaN/inf (never NaN in summary.json)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or pd.isna(value):
        return None
    return float(value)


def _hr_entry(table: pd.DataFrame, term: str) -> dict:
    rows = table[table["term"] == term]
    if rows.empty:
        return {"hr": None, "ci_low": None, "ci_high": None, "p": None, "reason": "not in the model"}
    r = rows.iloc[0]
    return {"hr": _num(r["hr"]), "ci_low": _num(r["ci_low"]), "ci_high": _num(r["ci_high"]), "p": _num(r["p"]),
            "reason": None if r["estimable"] else str(r["reason"])}


def _analyze_cohort(name: str, df: pd.DataFrame, config: AnalysisConfig, marker: str | None,
                    marker_reason: str | None, covariates: Sequence[str], seed: int) -> tuple[dict, dict]:
    """Summary entry and tidy pieces for one cohort."""
    levels = list(RISK_GROUPS)
    n, events = len(df), int(df["event"].sum())
    not_estimable: dict[str, str] = {}
    notes: list[str] = []
    pieces: dict[str, list[pd.DataFrame]] = {k: [] for k in ("groups", "km", "at_risk", "cox", "logrank", "concordance", "ph")}

    counts = {g: int((df["risk_group"] == g).sum()) for g in levels}
    group_events = {g: int(df.loc[df["risk_group"] == g, "event"].sum()) for g in levels}
    shares = {g: (counts[g] / n if n else None) for g in levels}
    if n == 0:
        not_estimable["shares"] = "no patients"
    pieces["groups"].append(pd.DataFrame({"marker": "risk_group", "group": levels, "n": [counts[g] for g in levels],
                                          "events": [group_events[g] for g in levels],
                                          "share": [shares[g] for g in levels]}))
    followup, reason = median_followup(df["time"], df["event"])
    if reason:
        not_estimable["median_followup"] = reason
    if events == 0:
        notes.append("no events in this cohort: hazard ratios, log-rank tests and C-indices are not estimable.")

    pieces["km"].append(km_table(df, "risk_group", levels=levels, alpha=config.alpha).assign(marker="risk_group"))
    pieces["at_risk"].append(at_risk_table(df, config.time_points, "risk_group", levels=levels).assign(marker="risk_group"))
    lr = logrank_table(df, "risk_group", levels=levels).assign(marker="risk_group")
    pieces["logrank"].append(lr)
    overall = lr.iloc[0]
    if overall["reason"]:
        not_estimable["logrank_p"] = str(overall["reason"])

    uni = cox_groups(df, "risk_group", levels=levels, reference="good", alpha=config.alpha, ph_alpha=config.ph_alpha)
    adj = cox_groups(df, "risk_group", levels=levels, reference="good", covariates=covariates,
                     alpha=config.alpha, ph_alpha=config.ph_alpha)
    per_sd = cox_per_sd(df, "score", alpha=config.alpha, ph_alpha=config.ph_alpha)
    notes += [f"univariable Cox: {x}" for x in uni.notes] + [f"adjusted Cox: {x}" for x in adj.notes if x not in uni.notes]
    notes += [f"score per SD Cox: {x}" for x in per_sd.notes]
    if not adj.adjusted_for:  # an "adjusted" model without covariates would repeat the univariable one
        adj_reason = "no usable covariates (see notes)" if covariates else "no covariates configured or present"
        fitted = adj.table["estimable"].astype(bool)
        adj.table.loc[fitted, ["hr", "ci_low", "ci_high", "p"]] = float("nan")
        adj.table.loc[fitted, "reason"] = adj_reason
        adj.table["estimable"] = False
        adj.ph = adj.ph.iloc[0:0]
    for model, result in (("univariable", uni), ("adjusted", adj), ("score_per_sd", per_sd)):
        pieces["cox"].append(result.table.assign(model=model))
        pieces["ph"].append(result.ph.assign(model=model))
    c = concordance_ci(df["time"], df["event"], df["score"], n_boot=config.n_bootstrap, seed=seed, alpha=config.alpha)
    pieces["concordance"].append(pd.DataFrame([{"marker": "score", "measure": "c_index", **c.as_dict()}]))

    ph_flags = [f"{m}: {t}" for m, res in (("univariable", uni), ("adjusted", adj), ("score_per_sd", per_sd))
                for t, v in zip(res.ph["term"], res.ph["violated"]) if bool(v)]
    entry = {
        "n": n,
        "events": events,
        "median_followup": _num(followup),
        "shares": shares,
        "counts": counts,
        "events_by_group": group_events,
        "hr": {k: _hr_entry(uni.table, k) for k in COMPARISONS},
        "hr_adjusted": {k: _hr_entry(adj.table, k) for k in COMPARISONS},
        "adjusted_for": adj.adjusted_for,
        "logrank_p": _num(overall["p"]),
        "logrank_pairwise": {r.comparison: {"p": _num(r.p), "reason": r.reason or None} for r in lr.iloc[1:].itertuples()},
        "hr_per_sd": {**_hr_entry(per_sd.table, "score_per_sd"), "sd": _num(per_sd.table["sd"].iloc[0])},
        "c_index": c.as_dict(),
        "ph_check": {"alpha": config.ph_alpha, "violated": ph_flags,
                     "ok": None if all(r.ph.empty for r in (uni, adj, per_sd)) else not ph_flags},
    }
    marker_info: dict = {}
    if marker is None:
        entry["reference_marker"] = {"name": None, "reason": marker_reason}
    else:
        entry["reference_marker"], marker_info = _analyze_marker(df, marker, config, pieces, seed)
    entry["not_estimable"] = not_estimable
    entry["notes"] = notes
    tidy = {k: concat([p for p in v if not p.empty]) if any(not p.empty for p in v) else pd.DataFrame()
            for k, v in pieces.items()}
    return entry, {"tidy": tidy, "marker": marker_info}


def _analyze_marker(df: pd.DataFrame, marker: str, config: AnalysisConfig, pieces: dict, seed: int) -> tuple[dict, dict]:
    """The reference marker's own curves, log-rank, Cox and C-index, and C(score) - C(marker)."""
    values = marker_strings(df[marker])
    levels, reason = marker_levels(values, config.reference_order)
    if levels is None:
        return {"name": marker, "n": int(values.notna().sum()), "missing": int(values.isna().sum()), "reason": reason}, {}
    outside = sorted(set(values.dropna()) - set(levels))
    values = values.where(values.isin(levels))
    entry: dict = {"name": marker, "n": int(values.notna().sum()), "missing": int(values.isna().sum())}
    if outside:
        entry["not_in_order"] = outside
    sub = df.assign(**{marker: values})[values.notna()]
    rank = sub[marker].map({lv: i for i, lv in enumerate(levels)}).astype(float)
    labels = {lv: f"{marker} {lv}" for lv in levels}
    pieces["groups"].append(pd.DataFrame({"marker": marker, "group": levels,
                                          "n": [int((sub[marker] == lv).sum()) for lv in levels],
                                          "events": [int(sub.loc[sub[marker] == lv, "event"].sum()) for lv in levels],
                                          "share": [(sub[marker] == lv).mean() if len(sub) else None for lv in levels]}))
    pieces["km"].append(km_table(sub, marker, levels=levels, alpha=config.alpha).assign(marker=marker))
    pieces["at_risk"].append(at_risk_table(sub, config.time_points, marker, levels=levels).assign(marker=marker))
    lr = logrank_table(sub, marker, levels=levels).assign(marker=marker)
    pieces["logrank"].append(lr)
    cox = cox_groups(sub, marker, levels=levels, reference=levels[0], alpha=config.alpha, ph_alpha=config.ph_alpha)
    pieces["cox"].append(cox.table.assign(model=f"marker:{marker}"))
    pieces["ph"].append(cox.ph.assign(model=f"marker:{marker}"))
    c_marker = concordance_ci(sub["time"], sub["event"], rank, n_boot=config.n_bootstrap, seed=seed, alpha=config.alpha)
    diff = concordance_difference(sub["time"], sub["event"], sub["score"], rank, n_boot=config.n_bootstrap,
                                  seed=seed, alpha=config.alpha)
    pieces["concordance"].append(pd.DataFrame([
        {"marker": marker, "measure": "c_index", **c_marker.as_dict()},
        {"marker": f"score-{marker}", "measure": "c_index_difference", **diff.as_dict()},
    ]))
    entry.update({
        "levels": [str(lv) for lv in levels],
        "counts": {str(lv): int((sub[marker] == lv).sum()) for lv in levels},
        "hr": {t: _hr_entry(cox.table, t) for t in cox.table["term"]},
        "logrank_p": _num(lr.iloc[0]["p"]),
        "c_index": c_marker.as_dict(),
        "c_index_difference": diff.as_dict(),
        "reason": None,
        "notes": cox.notes,
    })
    return entry, {"column": marker, "levels": levels, "labels": labels}


def _primary(summary_cohorts: dict, primary: PrimaryAnalysis) -> dict:
    out = asdict(primary)
    cohort = summary_cohorts.get(primary.cohort)
    if cohort is None:
        out.update(result=None, reason=f"cohort {primary.cohort!r} is not in the scores (cohorts: {list(summary_cohorts)})")
        return out
    if primary.measure in ("hr", "hr_adjusted"):
        result = cohort[primary.measure][primary.comparison]
        reason = result.get("reason")
    elif primary.measure == "c_index":
        result = cohort["c_index"]
        reason = result.get("reason") if result.get("value") is None else None
    else:
        result = {"p": cohort["logrank_p"]}
        reason = cohort["not_estimable"].get("logrank_p")
    out.update(result=result, reason=reason)
    return out


def analyze(scores: pd.DataFrame, clinical: pd.DataFrame, config: AnalysisConfig | None = None) -> AnalysisResult:
    """Run every per-cohort analysis; see AnalysisResult for the tables.

    scores: scores.csv (slide level) or patient_scores.csv as a DataFrame (a table from another tool
        needs patient_id, cohort, score, risk_group); only status == "ok" rows are analysed.
    clinical: patient_id, time (in config.time_unit), event (1 = endpoint) and optional covariates.
    Bad rows never raise: they are listed in `excluded` / `unmatched` with a reason.
    """
    config = config or AnalysisConfig()
    prepared: Prepared = prepare(scores, clinical, aggregation=config.patient_aggregation, thresholds=config.thresholds)
    patients = prepared.patients
    marker, marker_reason = resolve_marker(config.reference_marker, list(clinical.columns))
    if config.covariates is None:
        covariates = [c for c in DEFAULT_COVARIATES if c in clinical.columns]
    else:
        covariates = list(config.covariates)
    names = cohort_order(sorted(set(patients["cohort"]) | set(prepared.excluded["cohort"].dropna())
                                | set(prepared.failed_slides)
                                | set(prepared.unmatched["cohort"].dropna())))
    cohorts_summary: dict[str, dict] = {}
    tidy: dict[str, list[pd.DataFrame]] = {}
    markers: dict[str, dict] = {}
    cohort_rows = []
    for i, name in enumerate(names):
        df = patients[patients["cohort"] == name].reset_index(drop=True)
        entry, extra = _analyze_cohort(name, df, config, marker, marker_reason, covariates, config.seed + i)
        excluded_n = int((prepared.excluded["cohort"] == name).sum())
        unmatched_n = int(((prepared.unmatched["cohort"] == name)
                           & (prepared.unmatched["direction"] == "in_scores_not_clinical")).sum())
        entry.update(excluded=excluded_n, unmatched=unmatched_n, failed_slides=prepared.failed_slides.get(name, 0))
        cohorts_summary[name] = entry
        markers[name] = extra["marker"]
        for key, table in extra["tidy"].items():
            if not table.empty:
                tidy.setdefault(key, []).append(table.assign(cohort=name))
        cohort_rows.append({"cohort": name, "n": entry["n"], "events": entry["events"],
                            "median_followup": entry["median_followup"], "excluded": excluded_n,
                            "unmatched": unmatched_n, "failed_slides": entry["failed_slides"]})

    def table(key: str, first: Sequence[str]) -> pd.DataFrame:
        if key not in tidy:
            return pd.DataFrame(columns=list(first))
        out = concat(tidy[key])
        return out[list(first) + [c for c in out.columns if c not in first]]

    pooled, extra = extend_analysis(patients, cohorts_summary, config)  # landmarks, Uno's C, pooled
    excluded, unmatched = prepared.excluded, prepared.unmatched
    summary = {
        "cohorts": cohorts_summary,
        "time_unit": config.time_unit,
        "time_points": [float(t) for t in config.time_points],
        "endpoint": config.endpoint,
        "primary": _primary(cohorts_summary, config.primary),
        "input_level": prepared.input_level,
        "n_analysed": int(len(patients)),
        "excluded": {"n": int(len(excluded)), "by_reason": {str(k): int(v) for k, v in excluded["reason"].value_counts().items()}},
        "unmatched": {"in_scores_not_clinical": int((unmatched["direction"] == "in_scores_not_clinical").sum()),
                      "in_clinical_not_scores": int((unmatched["direction"] == "in_clinical_not_scores").sum())},
        "failed_slides": int(sum(prepared.failed_slides.values())),
        "covariates": covariates,
        "reference_marker": marker,
        "bootstrap": {"n": config.n_bootstrap, "seed": config.seed},
        "confidence_level": 1 - config.alpha,
        "notes": prepared.notes,
        "versions": package_versions(("lifelines", "pandas", "numpy", "scipy", "matplotlib", "statsmodels", "scikit-survival")),
    }
    if pooled is not None:
        summary["pooled"] = pooled
    return AnalysisResult(
        config=config,
        patients=patients,
        cohorts=pd.DataFrame(cohort_rows, columns=["cohort", "n", "events", "median_followup", "excluded", "unmatched", "failed_slides"]),
        groups=table("groups", ["cohort", "marker", "group"]),
        km=table("km", ["cohort", "marker", "group"]),
        at_risk=table("at_risk", ["cohort", "marker", "group", "time", "at_risk", "events"]),
        cox=table("cox", ["cohort", "model", "term"]),
        logrank=table("logrank", ["cohort", "marker", "comparison"]),
        concordance=table("concordance", ["cohort", "marker", "measure"]),
        ph=table("ph", ["cohort", "model", "term"]),
        excluded=excluded,
        unmatched=unmatched,
        summary=summary,
        markers=markers,
        extra=extra,
    )


__all__ = ["AnalysisConfig", "AnalysisResult", "PrimaryAnalysis", "analyze", "marker_levels", "cohort_order"]
