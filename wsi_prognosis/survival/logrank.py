"""Log-rank tests between groups (overall and pairwise) as tidy rows with explicit "not estimable"."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import pandas as pd
from lifelines.statistics import logrank_test, multivariate_logrank_test

LOGRANK_COLUMNS = ["comparison", "test_statistic", "df", "p", "n", "events", "reason"]


def logrank_table(
    df: pd.DataFrame, group: str = "risk_group", *, levels: Sequence | None = None,
    time: str = "time", event: str = "event",
) -> pd.DataFrame:
    """Overall log-rank test across the non-empty levels, then every pair ("poor_vs_good", ...).

    Pairs are named "<later level>_vs_<earlier level>" in `levels` order, matching the Cox terms.
    """
    levels = list(levels) if levels is not None else sorted(df[group].dropna().unique().tolist())
    present = [lv for lv in levels if (df[group] == lv).any()]
    rows = []

    def row(name, sub, result=None, reason=None, dof=None):
        return {"comparison": name, "test_statistic": None if result is None else float(result.test_statistic),
                "df": dof, "p": None if result is None else float(result.p_value),
                "n": len(sub), "events": int(sub[event].sum()), "reason": reason}

    sub = df[df[group].isin(present)]
    if len(present) < 2:
        rows.append(row("overall", sub, reason=f"fewer than two non-empty groups ({present})"))
    elif sub[event].sum() == 0:
        rows.append(row("overall", sub, reason="no events"))
    else:
        rows.append(row("overall", sub, multivariate_logrank_test(sub[time], sub[group], sub[event]), dof=len(present) - 1))
    for a, b in combinations(levels, 2):
        name = f"{b}_vs_{a}"
        pa, pb = df[df[group] == a], df[df[group] == b]
        pair = pd.concat([pa, pb])
        if pa.empty or pb.empty:
            rows.append(row(name, pair, reason=f"no patients in group {a if pa.empty else b!r}"))
        elif pair[event].sum() == 0:
            rows.append(row(name, pair, reason="no events"))
        else:
            rows.append(row(name, pair, logrank_test(pa[time], pb[time], pa[event], pb[event]), dof=1))
    return pd.DataFrame(rows, columns=LOGRANK_COLUMNS)
