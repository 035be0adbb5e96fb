"""plan.html (self-contained, opens offline) and the two figures of `wsi-prognosis plan`."""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path

import pandas as pd

_CSS = """body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1000px;margin:24px auto;
padding:0 16px;color:#222;line-height:1.4} h2{border-bottom:2px solid #ddd;padding-bottom:4px}
.head{border:2px solid #2b83ba;background:#f0f7fc;padding:10px 16px;border-radius:6px;font-size:1.2em;font-weight:600}
table{border-collapse:collapse;margin:6px 0 12px 0;font-size:.92em} th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left} img{max-width:100%;border:1px solid #eee}
.sub{color:#666} .warn{background:#fff4e5;border-left:4px solid #e6a100;padding:6px 12px;margin:8px 0}"""


def _e(v) -> str:
    return html.escape(str(v))


def plot_power_curve(curve: pd.DataFrame, plan: dict):
    """Empirical power per cohort size, with the Schoenfeld prediction for the reference HR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.plot(curve["n"], curve["power"], "o-", color="#2b83ba", label="resampled reference cohort")
    if plan.get("schoenfeld_curve"):
        sc = pd.DataFrame(plan["schoenfeld_curve"])
        ax.plot(sc["n"], sc["power"], "--", color="0.4", label=f"Schoenfeld at the reference HR {plan['reference']['hr']:.2f}")
    ax.axhline(plan["power"], color="#d7191c", lw=0.8, ls=":", label=f"target power {100 * plan['power']:.0f} %")
    ax.set_xlabel("patients in the cohort")
    ax.set_ylabel("share of resamples whose 95 % CI excludes HR 1")
    ax.set_ylim(0, 1.02)
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    ax.set_title("Power of the primary analysis by cohort size", fontsize=10, loc="left")
    fig.tight_layout()
    return fig


def plot_ci_widths(curve: pd.DataFrame):
    """Median width of the HR 95 % CI and of the C-index range, per cohort size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.plot(curve["n"], curve["hr_ci_width"], "o-", color="#d7191c", label="HR poor vs good: median 95 % CI width")
    ax.set_xlabel("patients in the cohort")
    ax.set_ylabel("HR CI width", color="#d7191c")
    ax.set_yscale("log")
    ax2 = ax.twinx()
    ax2.plot(curve["n"], curve["c_ci_width"], "s-", color="#1a9641", label="C-index: 95 % range width")
    ax2.set_ylabel("C-index CI width", color="#1a9641")
    ax.spines[["top"]].set_visible(False)
    ax2.spines[["top"]].set_visible(False)
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(lines, [line.get_label() for line in lines], frameon=False, fontsize=8, loc="upper right")
    ax.set_title("Precision by cohort size", fontsize=10, loc="left")
    fig.tight_layout()
    return fig


def _img(path: Path, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'


def render_plan(plan: dict, curve: pd.DataFrame, figures: list[tuple[Path, str]]) -> str:
    """The HTML text of plan.html."""
    s = plan["shares"]
    rows = [("hazard ratio to detect", f"{plan['hr']:g}"), ("two-sided α", f"{plan['alpha']:g}"),
            ("power", f"{100 * plan['power']:.0f} %"),
            ("shares good / uncertain / poor (" + _e(plan["shares_source"]) + ")",
             " / ".join(f"{100 * s[g]:.0f} %" for g in ("good", "uncertain", "poor"))),
            ("share of the poor group among the compared patients (p)", f"{plan['p']:.3f}"),
            (f"event probability by {plan['horizon']:g} {_e(plan['time_unit'])} in the compared groups "
             f"({_e(plan['event_probability_source'])})", f"{100 * plan['event_probability']:.1f} %"),
            ("events needed (Schoenfeld)", f"<b>{plan['events_needed']}</b>"),
            ("patients in the compared groups", f"{plan['patients_needed_compared']}"),
            ("patients needed (all groups)", f"<b>{plan['patients_needed']}</b>")]
    g = plan.get("given_cohort")
    if g:
        rows += [(f"given cohort: {g['n'] if g.get('n') is not None else '–'} patients, {g['events']:.0f} events",
                  f"power {100 * g['power']:.0f} %; smallest detectable HR {g['detectable_hr']:.2f}")]
    c = plan["cohorts"]
    rows += [("between-cohort τ² (" + _e(c.get("tau2_source") or "not given") + ")",
              "–" if c.get("tau2") is None else f"{c['tau2']:.4f}"),
             ("per-cohort SE of ln HR at the planned size", f"{c['se_cohort']:.3f}"),
             ("external cohorts needed (95 % prediction interval excludes HR 1)",
              f"<b>{plan['cohorts_needed']}</b>" if plan["cohorts_needed"] is not None else f'<i>{_e(c["reason"])}</i>')]
    table = "".join(f'<tr><td class="l">{k}</td><td>{v}</td></tr>' for k, v in rows)
    curve_tbl = curve.copy()
    for col in ("power", "hr_ci_width", "c_ci_width", "median_hr", "median_c"):
        curve_tbl[col] = curve_tbl[col].map(lambda v: "–" if v is None or pd.isna(v) else f"{v:.3f}")
    head = "".join(f"<th>{_e(col)}</th>" for col in curve_tbl.columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in r) + "</tr>" for r in curve_tbl.itertuples(index=False))
    ref = plan["reference"]
    notes = "".join(f'<div class="warn">{_e(n)}</div>' for n in plan.get("notes", []))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>wsi-prognosis plan</title>'
            f"<style>{_CSS}</style></head><body><h1>Sample-size plan for the external validation</h1>"
            f'<p class="sub">Bundle {_e(plan["bundle_id"])}; primary comparison {_e(plan["comparison"].replace("_", " "))}; '
            f'generated {time.strftime("%Y-%m-%d %H:%M")}.</p><div class="head">{_e(plan["headline"])}</div>{notes}'
            f"<h2>Closed-form plan</h2><table>{table}</table>"
            "<p class='sub'>Events: Schoenfeld, D = (z<sub>1−α/2</sub> + z<sub>1−β</sub>)² / (p q (ln HR)²). Patients: D ÷ event "
            "probability ÷ share of patients in the compared groups (assumes follow-up to the horizon). Cohorts: smallest k ≥ 3 "
            "with ln HR − t<sub>k−2</sub>·√(τ² + (SE² + τ²)/k) &gt; 0 (Higgins et al. 2009).</p>"
            f"<h2>Empirical power curve</h2><p>{plan['n_resamples']} resamples per size of the reference cohort "
            f"({_e(ref['source'])}: {ref['n']} patients, {ref['events']} events, HR poor vs good {ref['hr']:.2f}), "
            f"locked thresholds applied, primary Cox model fitted to each (seed {plan['seed']}).</p>"
            f"<table><tr>{head}</tr>{body}</table>"
            + "".join(_img(p, cap) for p, cap in figures)
            + "<p class='sub'>power: share of resamples whose 95 % CI of the HR excludes 1. hr_ci_width: median width of that CI. "
            "c_ci_width: width of the central 95 % range of the resampled C-index of the score.</p></body></html>\n")


__all__ = ["render_plan", "plot_power_curve", "plot_ci_widths"]
