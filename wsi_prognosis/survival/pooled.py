"""Pooled evidence across cohorts: random-effects meta-analysis of the log hazard ratios, forest plot.

Each cohort contributes its log HR (poor vs good; per SD of the score) with the standard error
recovered from its Wald CI, se = (ln ci_high - ln ci_low) / (2 z). The pooled estimate is
statsmodels' `combine_effects` with `method_re="dl"` (DerSimonian–Laird) and `"pm"`
(Paule–Mandel), the same estimators as R's `metafor::rma(method = "DL" / "PM")`.

Reported per method: the pooled HR with its (1 - alpha) CI (normal, as metafor's default
`test = "z"`), tau² (between-cohort variance of the log HR), I² (Higgins–Thompson,
(Q - df) / Q, floored at 0; for DL it equals metafor's I²; a negative DL τ², which
statsmodels does not truncate, is set to 0 as metafor does), Cochran's Q and its p (chi², k - 1
df), and the (1 - alpha) prediction interval of a new cohort's HR, exp(mu ± z sqrt(tau² + se(mu)²)),
as metafor's `predict(rma(...))` with its default `test = "z"`. With two or three cohorts the
heterogeneity estimates are very uncertain; the report says so.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

METHODS = ("dl", "pm")
MEASURES = {"poor_vs_good": "HR poor vs good", "per_sd": "HR per SD of the score"}
POOLED_COLUMNS = ["measure", "row", "method", "hr", "ci_low", "ci_high", "pi_low", "pi_high", "tau2", "i2",
                  "q", "q_p", "weight", "k"]


def se_from_ci(ci_low: float, ci_high: float, alpha: float = 0.05) -> float:
    """Standard error of a log HR from its Wald (1 - alpha) CI on the HR scale."""
    z = stats.norm.ppf(1 - alpha / 2)
    return (math.log(ci_high) - math.log(ci_low)) / (2 * z)


def random_effects(log_hr: Sequence[float], se: Sequence[float], names: Sequence[str], *,
                   method: str = "dl", alpha: float = 0.05) -> dict:
    """Pool log HRs with statsmodels' combine_effects; return the HR-scale summary of one method.

    Keys: hr, ci_low, ci_high, pi_low, pi_high, tau2, i2, q, q_p, k, weights ({name: relative
    random-effects weight}).
    """
    from statsmodels.stats.meta_analysis import combine_effects

    if method not in METHODS:
        raise ValueError(f"method={method!r}: one of {METHODS}")
    effect = np.asarray(log_hr, dtype=float)
    variance = np.asarray(se, dtype=float) ** 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = combine_effects(effect, variance, method_re=method, row_names=list(names), alpha=alpha)
    if float(res.tau2) < 0:
        # statsmodels' DL estimate is (Q - df) / c without truncation; a negative value means no
        # heterogeneity beyond chance: tau² = 0 and the random-effects estimate is the fixed-effect one
        # (what metafor's rma(method = "DL") reports). Its own RE weights would use the negative tau².
        mu, se_mu, weights = float(res.mean_effect_fe), float(res.sd_eff_w_fe), np.asarray(res.weights_rel_fe, float)
        tau2 = 0.0
    else:
        mu, se_mu, weights = float(res.mean_effect_re), float(res.sd_eff_w_re), np.asarray(res.weights_rel_re, float)
        tau2 = float(res.tau2)
    z = stats.norm.ppf(1 - alpha / 2)
    k = len(effect)
    q = float(res.q)
    pi_half = z * math.sqrt(tau2 + se_mu ** 2)
    return {
        "hr": math.exp(mu), "ci_low": math.exp(mu - z * se_mu), "ci_high": math.exp(mu + z * se_mu),
        "pi_low": math.exp(mu - pi_half), "pi_high": math.exp(mu + pi_half),
        "tau2": tau2, "i2": max(float(res.i2), 0.0), "q": q,
        "q_p": float(stats.chi2.sf(q, k - 1)) if k > 1 else None, "k": k,
        "log_hr": mu, "se": se_mu,
        "weights": {str(n): float(w) for n, w in zip(names, weights)},
    }


def _cohort_estimates(cohorts: dict, names: Sequence[str], measure: str, alpha: float) -> tuple[list[dict], list[str]]:
    rows, notes = [], []
    for name in names:
        c = cohorts.get(name)
        if c is None:
            notes.append(f"{name}: not in the scores; left out of the pooled {MEASURES[measure]}.")
            continue
        e = c["hr"]["poor_vs_good"] if measure == "poor_vs_good" else c["hr_per_sd"]
        if e.get("hr") is None or e.get("ci_low") is None or e.get("ci_high") is None or e["ci_low"] <= 0:
            notes.append(f"{name}: {MEASURES[measure]} not estimable ({e.get('reason')}); left out of the pooled estimate.")
            continue
        rows.append({"cohort": name, "hr": e["hr"], "ci_low": e["ci_low"], "ci_high": e["ci_high"],
                     "log_hr": math.log(e["hr"]), "se": se_from_ci(e["ci_low"], e["ci_high"], alpha),
                     "n": c["n"], "events": c["events"]})
    return rows, notes


def pooled_analysis(cohorts: dict, names: Sequence[str], *, alpha: float = 0.05) -> tuple[dict, pd.DataFrame]:
    """summary.json's "pooled" entry and a tidy table (POOLED_COLUMNS) from per-cohort summary entries.

    `cohorts`: summary["cohorts"] (each with hr.poor_vs_good and hr_per_sd); `names`: the cohorts
    to pool (analysis.pool). A measure with fewer than two estimable cohorts is not pooled (reason).
    """
    out: dict = {"cohorts": list(names), "alpha": alpha,
                 "method": "random effects (statsmodels combine_effects): DerSimonian-Laird and Paule-Mandel",
                 "prediction_interval": "exp(mu ± z·sqrt(tau² + se(mu)²)), as metafor's predict() with test='z'",
                 "notes": []}
    rows: list[dict] = []
    for measure in MEASURES:
        estimates, notes = _cohort_estimates(cohorts, names, measure, alpha)
        out["notes"] += notes
        others, _ = _cohort_estimates(cohorts, [c for c in cohorts if c not in names], measure, alpha)
        keys = ("cohort", "hr", "ci_low", "ci_high", "se", "n", "events")
        entry: dict = {"cohorts_used": [e["cohort"] for e in estimates],
                       "per_cohort": [{k: e[k] for k in keys} for e in estimates],
                       "not_pooled": [{k: e[k] for k in keys} for e in others]}  # shown in the forest plot, grey
        for e in estimates:
            rows.append({"measure": measure, "row": e["cohort"], "method": "cohort", "hr": e["hr"], "ci_low": e["ci_low"],
                         "ci_high": e["ci_high"], "k": 1})
        if len(estimates) < 2:
            entry["reason"] = f"{len(estimates)} cohort(s) with an estimable {MEASURES[measure]}; pooling needs at least 2"
            for method in METHODS:
                entry[method] = None
        else:
            entry["reason"] = None
            for method in METHODS:
                r = random_effects([e["log_hr"] for e in estimates], [e["se"] for e in estimates],
                                   [e["cohort"] for e in estimates], method=method, alpha=alpha)
                entry[method] = r
                rows.append({"measure": measure, "row": "pooled", "method": method,
                             **{k: r[k] for k in ("hr", "ci_low", "ci_high", "pi_low", "pi_high", "tau2", "i2", "q", "q_p", "k")}})
                for name, w in r["weights"].items():
                    for row in rows:
                        if row["measure"] == measure and row["row"] == name and row["method"] == "cohort":
                            row[f"weight_{method}"] = w
        out[measure] = entry
    table = pd.DataFrame(rows)
    return out, table.reindex(columns=POOLED_COLUMNS[:-2] + ["weight_dl", "weight_pm", "k"])


def plot_forest(pooled: dict, *, title: str | None = None):
    """Forest plot: one panel per measure (HR poor vs good, HR per SD), cohorts then DL/PM diamonds.

    Cohorts outside the pool are drawn in grey (open squares), below the pooled ones.

    Log HR axis, a line at HR 1, the prediction interval as a thin bar under each diamond.
    Returns the Figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = list(MEASURES)
    n_rows = max(len(pooled[m]["per_cohort"]) + len(pooled[m].get("not_pooled", [])) + 2 for m in measures)
    fig, axes = plt.subplots(1, len(measures), figsize=(11, 1.2 + 0.45 * n_rows), squeeze=False)
    for ax, measure in zip(axes[0], measures):
        entry = pooled[measure]
        labels, y = [], 0
        lows, highs = [], []

        def cohort_row(c, pooled_row):
            nonlocal y
            ax.errorbar(c["hr"], -y, xerr=[[c["hr"] - c["ci_low"]], [c["ci_high"] - c["hr"]]], fmt="s",
                        color="#333" if pooled_row else "#999", mfc="#333" if pooled_row else "white", ms=5, capsize=3, lw=1.2)
            labels.append(f"{c['cohort']} (n={c['n']}, {c['events']} ev.)" + ("" if pooled_row else ", not pooled"))
            lows.append(c["ci_low"])
            highs.append(c["ci_high"])
            y += 1

        for c in entry["per_cohort"]:
            cohort_row(c, True)
        for method, color in (("dl", "#2b83ba"), ("pm", "#d7191c")):
            r = entry.get(method)
            if not r:
                continue
            yy = -y
            ax.fill([r["ci_low"], r["hr"], r["ci_high"], r["hr"]], [yy, yy + 0.25, yy, yy - 0.25], color=color, alpha=0.85)
            ax.plot([r["pi_low"], r["pi_high"]], [yy - 0.32, yy - 0.32], color=color, lw=1.0)
            labels.append(f"pooled {method.upper()} (τ²={r['tau2']:.3f}, I²={100 * r['i2']:.0f} %)")
            lows.append(r["pi_low"])
            highs.append(r["pi_high"])
            y += 1
        for c in entry.get("not_pooled", []):  # the other cohorts, for comparison (grey, open squares)
            cohort_row(c, False)
        ax.axvline(1.0, color="0.5", lw=0.8, ls="--")
        ax.set_xscale("log")
        if lows:
            lo, hi = min(min(lows), 0.9), max(max(highs), 1.1)
            ax.set_xlim(lo / 1.15, hi * 1.15)
        ax.set_yticks([-i for i in range(len(labels))])
        ax.set_yticklabels(labels, fontsize=8.5)
        ax.set_ylim(-len(labels) + 0.4, 0.6)
        ax.set_xlabel(MEASURES[measure] + " (log scale)")
        lo_x, hi_x = ax.get_xlim()
        ticks = [t for t in (0.1, 0.2, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 10, 20, 50) if lo_x <= t <= hi_x]
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.spines[["top", "right"]].set_visible(False)
        if entry.get("reason"):
            ax.set_title(entry["reason"], fontsize=8, color="#a33", loc="left")
    if title:
        fig.suptitle(title, fontsize=11, x=0.01, ha="left")
    fig.tight_layout()
    return fig


__all__ = ["pooled_analysis", "random_effects", "se_from_ci", "plot_forest", "METHODS", "MEASURES"]
