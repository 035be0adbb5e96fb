"""Cox proportional-hazards models as tidy tables, with explicit "not estimable" rows.

A hazard ratio that the data cannot support (empty group, a group or reference without events,
a cohort without events, a model that does not converge) is reported as a row with
`estimable=False` and a `reason`, never as a number. The proportional-hazards assumption is
checked with lifelines' Schoenfeld-residual test (rank time transform); terms with p < ph_alpha
are flagged.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter
from lifelines.exceptions import ConvergenceError
from lifelines.statistics import proportional_hazard_test

COX_COLUMNS = ["term", "hr", "ci_low", "ci_high", "p", "n", "events", "estimable", "reason"]
PH_COLUMNS = ["term", "test_statistic", "p", "violated"]


@dataclass
class CoxResult:
    """table: one row per reported term (COX_COLUMNS); ph: Schoenfeld test per term (PH_COLUMNS);
    adjusted_for: covariates actually in the model; notes: what was dropped and why."""

    table: pd.DataFrame
    ph: pd.DataFrame
    adjusted_for: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def concat(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """pd.concat of tidy pieces whose all-missing columns (not-estimable rows) are expected."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return pd.concat(frames, ignore_index=True)


def _not_estimable(terms: Sequence[str], reason: str, n: int = 0, events: int = 0) -> pd.DataFrame:
    return pd.DataFrame([{"term": t, "hr": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan, "n": n,
                          "events": events, "estimable": False, "reason": reason} for t in terms],
                        columns=COX_COLUMNS)


def _covariate_columns(data: pd.DataFrame, covariates: Sequence[str]) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Numeric covariates enter linearly; text ones as indicators vs their most frequent level.

    Returns (design columns, covariates used, notes). Rows with a missing covariate are dropped
    by the caller (their count is reported).
    """
    cols: dict[str, pd.Series] = {}
    used, notes = [], []
    for name in covariates:
        if name not in data.columns:
            notes.append(f"covariate {name!r} is not a column of clinical.csv; not adjusted for.")
            continue
        raw = data[name]
        values = raw.dropna()
        if values.nunique() < 2:
            notes.append(f"covariate {name!r} has a single value here ({values.unique().tolist()[:1]}); "
                         "not adjusted for (its effect is not estimable).")
            continue
        numeric = pd.to_numeric(raw, errors="coerce")
        if numeric.notna().sum() == raw.notna().sum():
            cols[name] = numeric
        else:
            levels = values.astype(str).value_counts()
            reference = levels.index[0]
            for level in sorted(levels.index[1:]):
                cols[f"{name}={level}"] = (raw.astype(str) == level).astype(float).where(raw.notna())
            notes.append(f"covariate {name!r} is categorical; reference level {reference!r}.")
        used.append(name)
    return pd.DataFrame(cols, index=data.index), used, notes


def _fit(design: pd.DataFrame, alpha: float, terms: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Fit a Cox model on `design` (time, event, covariates); tidy rows for `terms` and the PH test."""
    n, events = len(design), int(design["event"].sum())
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            cph = CoxPHFitter(alpha=alpha).fit(design, "time", "event")
        except (ConvergenceError, np.linalg.LinAlgError, ValueError, ZeroDivisionError) as exc:
            reason = f"model did not converge ({str(exc).splitlines()[0][:120]})"
            return _not_estimable(terms, reason, n, events), pd.DataFrame(columns=PH_COLUMNS), [reason]
    notes += sorted({str(w.message).splitlines()[0][:160] for w in caught
                     if "ConvergenceWarning" in type(w.message).__name__ or "variance" in str(w.message)})
    s = cph.summary
    lower = next(c for c in s.columns if c.startswith("exp(coef) lower"))
    upper = next(c for c in s.columns if c.startswith("exp(coef) upper"))
    rows = []
    for term in terms:
        hr, lo, hi, p = (float(s.loc[term, c]) for c in ("exp(coef)", lower, upper, "p"))
        finite = all(np.isfinite(v) for v in (hr, lo, hi, p)) and float(s.loc[term, "se(coef)"]) < 15
        rows.append({"term": term, "hr": hr if finite else np.nan, "ci_low": lo if finite else np.nan,
                     "ci_high": hi if finite else np.nan, "p": p if finite else np.nan, "n": n, "events": events,
                     "estimable": finite, "reason": None if finite else "estimate diverged (separation)"})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            test = proportional_hazard_test(cph, design, time_transform="rank").summary
        ph = pd.DataFrame({"term": test.index.astype(str), "test_statistic": test["test_statistic"].to_numpy(),
                           "p": test["p"].to_numpy()})
    except Exception as exc:  # the PH check is advisory; its failure must not hide the HRs
        notes.append(f"Schoenfeld test failed: {exc}")
        ph = pd.DataFrame(columns=["term", "test_statistic", "p"])
    return pd.DataFrame(rows, columns=COX_COLUMNS), ph, notes


def _fit_pairwise(design: pd.DataFrame, terms: Sequence[str], covariate_columns: Sequence[str],
                  alpha: float) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Fit `term` vs reference on the reference + that group only, one model per term."""
    tables, phs, notes = [], [], []
    for term in terms:
        others = [t for t in terms if t != term]
        sub = design[(design[others] == 0).all(axis=1)].drop(columns=others)
        table, ph, fit_notes = _fit(sub, alpha, [term, *covariate_columns])
        tables.append(table[table["term"] == term])
        phs.append(ph[ph["term"] == term])
        notes += [f"{term}: {n}" for n in fit_notes]
    return concat(tables), concat(phs), notes


def cox_groups(
    df: pd.DataFrame,
    group: str = "risk_group",
    *,
    levels: Sequence | None = None,
    reference=None,
    covariates: Sequence[str] = (),
    time: str = "time",
    event: str = "event",
    alpha: float = 0.05,
    ph_alpha: float = 0.05,
) -> CoxResult:
    """HR of each group level vs `reference` (default: the first level), optionally adjusted.

    Terms are named "<level>_vs_<reference>" (e.g. "poor_vs_good"); covariate terms keep their
    names and are reported too. A level with no members or no events is not estimable and its
    patients are left out of the model (so they cannot distort the other comparisons).
    """
    if levels is None:
        levels = sorted(df[group].dropna().unique().tolist())
    levels = list(levels)
    reference = levels[0] if reference is None else reference
    others = [lv for lv in levels if lv != reference]
    terms = [f"{lv}_vs_{reference}" for lv in others]
    data = df[df[group].isin(levels)].rename(columns={time: "time", event: "event"})
    n_all, events_all = len(data), int(data["event"].sum())
    empty_ph = pd.DataFrame(columns=PH_COLUMNS)
    if n_all == 0:
        return CoxResult(_not_estimable(terms, "no patients in this cohort"), empty_ph)
    if events_all == 0:
        return CoxResult(_not_estimable(terms, "no events in this cohort", n_all, 0), empty_ph)
    ref_rows = data[group] == reference
    if not ref_rows.any():
        return CoxResult(_not_estimable(terms, f"no patients in the reference group {reference!r}", n_all, events_all), empty_ph)
    if data.loc[ref_rows, "event"].sum() == 0:
        return CoxResult(_not_estimable(terms, f"no events in the reference group {reference!r}: HR infinite",
                                        n_all, events_all), empty_ph)
    skipped: dict[str, str] = {}
    for lv in others:
        rows = data[group] == lv
        if not rows.any():
            skipped[f"{lv}_vs_{reference}"] = f"no patients in group {lv!r}"
        elif data.loc[rows, "event"].sum() == 0:
            skipped[f"{lv}_vs_{reference}"] = f"no events in group {lv!r}: HR would be 0"
    fit_levels = [lv for lv in others if f"{lv}_vs_{reference}" not in skipped]
    notes = [f"{t}: not estimable ({r}); its patients are left out of this model." for t, r in skipped.items()]
    data = data[data[group].isin([reference, *fit_levels])]
    design = pd.DataFrame({"time": data["time"].astype(float), "event": data["event"].astype(int)}, index=data.index)
    for lv in fit_levels:
        design[f"{lv}_vs_{reference}"] = (data[group] == lv).astype(float)
    cov_cols, used, cov_notes = _covariate_columns(data, covariates)
    notes += cov_notes
    design = design.join(cov_cols)
    missing = design.isna().any(axis=1)
    if missing.any():
        notes.append(f"{int(missing.sum())} patient(s) with a missing covariate left out of the adjusted model.")
        design = design[~missing]
    fit_terms = [f"{lv}_vs_{reference}" for lv in fit_levels]
    if not fit_terms:
        table = _not_estimable([], "")
        ph = empty_ph
    else:
        table, ph, fit_notes = _fit(design, alpha, fit_terms + list(cov_cols.columns))
        notes += fit_notes
        if len(fit_terms) > 1 and not table["estimable"].any():
            # one sparse group (e.g. a single patient whose death comes first: HR -> infinity) can stop
            # the joint fit; each comparison alone (reference + that group) is still a valid model
            table, ph, fallback_notes = _fit_pairwise(design, fit_terms, list(cov_cols.columns), alpha)
            notes += [f"joint model did not converge; each group fitted against {reference!r} alone."] + fallback_notes
    rows = [table] + [_not_estimable([t], r, len(design), int(design["event"].sum())) for t, r in skipped.items()]
    table = concat([r for r in rows if not r.empty]) if any(not r.empty for r in rows) else _not_estimable([], "")
    order = {t: i for i, t in enumerate(terms)}
    table = table.sort_values("term", key=lambda s: s.map(lambda t: order.get(t, len(order)))).reset_index(drop=True)
    if not ph.empty:
        ph["violated"] = ph["p"] < ph_alpha
    return CoxResult(table, ph.reindex(columns=PH_COLUMNS), used, notes)


def cox_table(df: pd.DataFrame, group: str = "risk_group", **kwargs) -> pd.DataFrame:
    """Tidy HR table (COX_COLUMNS) of `cox_groups`; risk groups default to good as reference."""
    if group == "risk_group":
        kwargs.setdefault("levels", ["good", "uncertain", "poor"])
        kwargs.setdefault("reference", "good")
    return cox_groups(df, group, **kwargs).table


def cox_per_sd(
    df: pd.DataFrame, score: str = "score", *, time: str = "time", event: str = "event",
    alpha: float = 0.05, ph_alpha: float = 0.05,
) -> CoxResult:
    """HR per standard deviation of a continuous score (term "score_per_sd"; table adds column `sd`)."""
    data = df[[time, event, score]].dropna()
    n, events = len(data), int(data[event].sum())
    sd = float(data[score].std(ddof=1)) if n > 1 else float("nan")
    term = f"{score}_per_sd"
    if n == 0 or events == 0:
        result = CoxResult(_not_estimable([term], f"no {'patients' if n == 0 else 'events'} in this cohort", n, 0),
                           pd.DataFrame(columns=PH_COLUMNS))
    elif not np.isfinite(sd) or sd == 0:
        result = CoxResult(_not_estimable([term], "score has a single value (SD 0)", n, events), pd.DataFrame(columns=PH_COLUMNS))
    else:
        design = pd.DataFrame({"time": data[time].astype(float), "event": data[event].astype(int),
                               term: (data[score] - data[score].mean()) / sd})
        table, ph, notes = _fit(design, alpha, [term])
        if not ph.empty:
            ph["violated"] = ph["p"] < ph_alpha
        result = CoxResult(table, ph.reindex(columns=PH_COLUMNS), [], notes)
    result.table["sd"] = sd if np.isfinite(sd) else None
    return result
