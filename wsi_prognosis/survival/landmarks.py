"""Landmark survival per risk group and time-dependent discrimination (Uno's C, cumulative/dynamic AUC).

`landmark_table` reads the Kaplan–Meier estimate of each group at fixed times — the "5-year CSS:
good 87 % (84–90), poor 55 % (…)" line of every prognosis paper — with the log-log
(exponential Greenwood) 95 % interval that lifelines computes, which is R's
`survfit(..., conf.type = "log-log")` (R's own default is `conf.type = "log"`; the log-log
interval stays inside [0, 1] and is the one most survival papers print).

`time_dependent_discrimination` adds Uno's IPCW C-index (truncated at the last landmark) and the
cumulative/dynamic AUC at each landmark from scikit-survival (`concordance_index_ipcw`,
`cumulative_dynamic_auc`); the censoring distribution is estimated on the cohort itself.
Harrell's C stays in `wsi_prognosis.survival.concordance`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from lifelines import KaplanMeierFitter

from wsi_prognosis.survival.inputs import RISK_GROUPS

LANDMARK_COLUMNS = ["landmark", "group", "survival", "ci_low", "ci_high", "at_risk", "reason"]
DISCRIMINATION_COLUMNS = ["measure", "time", "value", "reason"]


def landmark_key(t: float) -> str:
    """The landmark as written in the config: 5 -> "5", 2.5 -> "2.5" (summary.json key)."""
    return f"{float(t):g}"


def km_at(time, event, t: float, *, alpha: float = 0.05) -> dict:
    """Kaplan–Meier S(t) with its log-log (1 - alpha) CI and the number at risk at t.

    Returns {"survival", "ci_low", "ci_high", "at_risk", "reason"}; survival is None (with a
    reason) for an empty group or when nobody was followed up to t while S(t) > 0.
    """
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=int)
    at_risk = int((time >= t).sum())
    if len(time) == 0:
        return {"survival": None, "ci_low": None, "ci_high": None, "at_risk": 0, "reason": "no patients"}
    kmf = KaplanMeierFitter(alpha=alpha).fit(time, event)
    sf = kmf.survival_function_.iloc[:, 0]
    ci = kmf.confidence_interval_survival_function_
    idx = int(np.searchsorted(sf.index.to_numpy(dtype=float), t, side="right")) - 1  # last step at or before t
    s = float(sf.iloc[idx])
    if time.max() < t and s > 0:
        return {"survival": None, "ci_low": None, "ci_high": None, "at_risk": 0,
                "reason": f"no follow-up to {t:g} (longest {time.max():.2f})"}
    low, high = float(ci.iloc[idx, 0]), float(ci.iloc[idx, 1])
    if not np.isfinite(low) or not np.isfinite(high):  # S = 1 before the first event, or S = 0
        low = high = s
    return {"survival": s, "ci_low": low, "ci_high": high, "at_risk": at_risk, "reason": None}


def landmark_table(df: pd.DataFrame, landmarks: Sequence[float], group: str = "risk_group", *,
                   levels: Sequence = RISK_GROUPS, alpha: float = 0.05) -> pd.DataFrame:
    """Tidy LANDMARK_COLUMNS: one row per landmark x group (every group, also an empty one)."""
    rows = []
    for t in landmarks:
        for level in levels:
            sub = df[df[group] == level]
            rows.append({"landmark": float(t), "group": level, **km_at(sub["time"], sub["event"], float(t), alpha=alpha)})
    return pd.DataFrame(rows, columns=LANDMARK_COLUMNS)


def landmark_summary(table: pd.DataFrame) -> dict:
    """{"5": {"good": {"survival", "ci_low", "ci_high", "at_risk"[, "reason"]}, ...}} from landmark_table."""
    out: dict = {}
    for row in table.itertuples(index=False):
        entry = {"survival": row.survival, "ci_low": row.ci_low, "ci_high": row.ci_high, "at_risk": int(row.at_risk)}
        if row.reason:
            entry["reason"] = row.reason
        out.setdefault(landmark_key(row.landmark), {})[str(row.group)] = entry
    return out


def _surv(time, event):
    from sksurv.util import Surv

    return Surv.from_arrays(event=np.asarray(event, dtype=bool), time=np.asarray(time, dtype=float))


def time_dependent_discrimination(time, event, risk, landmarks: Sequence[float]) -> pd.DataFrame:
    """Uno's C (tau = the last landmark) and the cumulative/dynamic AUC at each landmark.

    `risk`: higher = worse (the model score). Rows DISCRIMINATION_COLUMNS with measure "uno_c"
    or "auc"; a value scikit-survival cannot give (no events, a landmark outside the follow-up,
    a censoring distribution that reaches 0) is None with the reason.
    """
    from sksurv.metrics import concordance_index_ipcw, cumulative_dynamic_auc

    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=int)
    risk = np.asarray(risk, dtype=float)
    rows: list[dict] = []
    landmarks = [float(t) for t in landmarks]
    if len(time) < 2 or event.sum() == 0:
        reason = "no events in this cohort" if len(time) else "no patients"
        rows.append({"measure": "uno_c", "time": max(landmarks), "value": None, "reason": reason})
        rows += [{"measure": "auc", "time": t, "value": None, "reason": reason} for t in landmarks]
        return pd.DataFrame(rows, columns=DISCRIMINATION_COLUMNS)
    y = _surv(time, event)
    tau = max(landmarks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            rows.append({"measure": "uno_c", "time": tau,
                         "value": float(concordance_index_ipcw(y, y, risk, tau=tau)[0]), "reason": None})
        except (ValueError, ZeroDivisionError) as exc:
            rows.append({"measure": "uno_c", "time": tau, "value": None, "reason": str(exc).splitlines()[0][:160]})
        for t in landmarks:
            if not (time.min() <= t < time.max()):
                rows.append({"measure": "auc", "time": t, "value": None,
                             "reason": f"{t:g} is outside the follow-up [{time.min():.2f}, {time.max():.2f})"})
                continue
            if not ((time <= t) & (event == 1)).any():
                rows.append({"measure": "auc", "time": t, "value": None, "reason": f"no events by {t:g}"})
                continue
            try:
                auc, _ = cumulative_dynamic_auc(y, y, risk, [t])
                rows.append({"measure": "auc", "time": t, "value": float(auc[0]), "reason": None})
            except (ValueError, ZeroDivisionError) as exc:
                rows.append({"measure": "auc", "time": t, "value": None, "reason": str(exc).splitlines()[0][:160]})
    return pd.DataFrame(rows, columns=DISCRIMINATION_COLUMNS)


def discrimination_summary(table: pd.DataFrame) -> tuple[dict, dict]:
    """({"value", "tau", "reason"} of Uno's C, {"5": {"value", "reason"}} of the AUCs)."""
    uno = table[table["measure"] == "uno_c"].iloc[0]
    auc = {landmark_key(r.time): {"value": r.value, "reason": r.reason}
           for r in table[table["measure"] == "auc"].itertuples(index=False)}
    value = None if uno["value"] is None or pd.isna(uno["value"]) else float(uno["value"])
    return {"value": value, "tau": float(uno["time"]), "reason": uno["reason"]}, auc


def landmark_line(landmarks: dict, key: str, endpoint_short: str = "survival", unit: str = "years") -> str:
    """'5-year survival: good 87 % (84–90), uncertain …, poor 55 % (50–60)' from a landmark summary entry."""
    parts = []
    for group in RISK_GROUPS:
        e = landmarks.get(key, {}).get(group)
        if not e:
            continue
        if e.get("survival") is None:
            parts.append(f"{group} –")
        else:
            parts.append(f"{group} {100 * e['survival']:.0f} % ({100 * e['ci_low']:.0f}–{100 * e['ci_high']:.0f})")
    singular = unit[:-1] if unit.endswith("s") else unit
    return f"{key}-{singular} {endpoint_short}: " + ", ".join(parts)


__all__ = ["km_at", "landmark_table", "landmark_summary", "landmark_key", "time_dependent_discrimination",
           "discrimination_summary", "landmark_line"]
