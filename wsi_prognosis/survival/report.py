"""report.html: one self-contained page (figures as base64 PNG, inline CSS, no scripts or links).

It opens offline in any browser. Order: the pre-declared primary analysis, what was left out and
why, an overview across cohorts, then one section per cohort with its key numbers first.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from wsi_prognosis.survival.html_parts import escape as _e
from wsi_prognosis.survival.html_parts import figure_html as _img
from wsi_prognosis.survival.html_parts import fmt_p, p_text
from wsi_prognosis.survival.study_report import (cohort_label, landmarks_html, pooled_html, protocol_box_html,
                                                 section_note)

_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1100px;margin:24px auto;
 padding:0 16px;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:0} h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:2em}
h3{margin-bottom:.3em} .sub{color:#666;margin-top:.2em}
.primary{border:2px solid #2b83ba;background:#f0f7fc;padding:10px 16px;border-radius:6px}
.primary .big{font-size:1.35em;font-weight:600}
.warn{background:#fff4e5;border-left:4px solid #e6a100;padding:6px 12px;margin:8px 0}
.na{color:#a33;font-style:italic}
table{border-collapse:collapse;margin:6px 0 12px 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right} th{background:#f3f3f3}
td.l,th.l{text-align:left}
.figs{display:flex;flex-wrap:wrap;gap:12px} .figs figure{margin:0;flex:0 1 530px;max-width:540px}
.figs img{width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}
.kv span{display:inline-block;margin-right:22px} .kv b{font-size:1.1em}
details{margin:6px 0} summary{cursor:pointer;color:#2b5f8a}
footer{margin-top:3em;color:#777;font-size:.85em}
"""


def fmt_num(x, digits: int = 2) -> str:
    return "–" if x is None or pd.isna(x) else f"{x:.{digits}f}"


def fmt_share(share) -> str:
    return "–" if share is None else f"{100 * share:.0f} %"


def fmt_hr(entry: dict | None) -> str:
    """'3.84 (2.72–5.43), p < 0.0001' or the not-estimable reason."""
    if not entry or entry.get("hr") is None:
        reason = (entry or {}).get("reason") or "not estimable"
        return f'<span class="na">not estimable: {_e(reason)}</span>'
    return f"{entry['hr']:.2f} ({entry['ci_low']:.2f}–{entry['ci_high']:.2f}), {p_text(entry['p'])}"


def fmt_c(entry: dict | None) -> str:
    if not entry or entry.get("value") is None:
        return f'<span class="na">not estimable: {_e((entry or {}).get("reason") or "")}</span>'
    ci = (f" ({entry['ci_low']:.3f}–{entry['ci_high']:.3f})" if entry.get("ci_low") is not None
          else f' <span class="na">(no CI: {_e(entry.get("reason"))})</span>')
    return f"{entry['value']:.3f}{ci}"


def _table(df: pd.DataFrame, left: tuple[str, ...] = ()) -> str:
    if df.empty:
        return "<p><i>none</i></p>"
    head = "".join(f'<th class="{"l" if c in left else ""}">{_e(c)}</th>' for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f'<td class="{"l" if c in left else ""}">{_e("" if pd.isna(v) else v)}</td>'
                         for c, v in zip(df.columns, row)) + "</tr>"
        for row in df.itertuples(index=False))
    return f"<table><tr>{head}</tr>{body}</table>"


def _at_risk_html(at_risk: pd.DataFrame, labels: dict) -> str:
    if at_risk.empty:
        return ""
    times = sorted(at_risk["time"].unique())
    head = '<th class="l">Number at risk (events)</th>' + "".join(f"<th>{t:g}</th>" for t in times)
    rows = []
    for group, sub in at_risk.groupby("group", sort=False):
        cells = "".join(f"<td>{r.at_risk}{'' if pd.isna(r.events) else f' ({r.events})'}</td>"
                        for r in sub.sort_values("time").itertuples())
        rows.append(f'<tr><td class="l">{_e(labels.get(group, group))}</td>{cells}</tr>')
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _primary_html(summary: dict) -> str:
    p = summary["primary"]
    if p["result"] is None or p.get("reason"):
        value = f'<span class="na">not available: {_e(p.get("reason"))}</span>'
    elif p["measure"] in ("hr", "hr_adjusted"):
        value = fmt_hr(p["result"])
    elif p["measure"] == "c_index":
        value = fmt_c(p["result"])
    else:
        value = f"log-rank p = {fmt_p(p['result']['p'])}"
    names = {"hr": "HR (univariable)", "hr_adjusted": "HR (adjusted)", "c_index": "C-index", "logrank_p": "log-rank test"}
    what = names.get(p["measure"], p["measure"]) + (f" {p['comparison'].replace('_', ' ')}" if p["measure"].startswith("hr") else "")
    return (f'<div class="primary"><div>Pre-defined primary analysis: {_e(p["description"])}</div>'
            f'<div class="big">{_e(p["cohort"])} cohort — {_e(what)}: {value}</div></div>')


def _accounting_html(result) -> str:
    s = result.summary
    parts = [f"<p>{s['n_analysed']} patient(s) analysed (input: {_e(s['input_level'])}-level scores). "
             f"{s['excluded']['n']} excluded, {s['unmatched']['in_scores_not_clinical']} in scores but not in clinical, "
             f"{s['unmatched']['in_clinical_not_scores']} in clinical but not in scores, "
             f"{s['failed_slides']} slide(s) with failed scoring.</p>"]
    if s["excluded"]["n"] or s["unmatched"]["in_scores_not_clinical"]:
        parts.append('<div class="warn">Some patients in the scores were not analysed; they are listed below '
                     "(and in excluded.csv / unmatched.csv).</div>")
    parts.append(f"<details><summary>Excluded patients ({len(result.excluded)})</summary>"
                 f"{_table(result.excluded, ('cohort', 'patient_id', 'source', 'reason'))}</details>")
    parts.append(f"<details><summary>Unmatched patients ({len(result.unmatched)})</summary>"
                 f"{_table(result.unmatched.fillna(''), ('direction', 'cohort', 'patient_id'))}</details>")
    for note in s["notes"]:
        parts.append(f'<div class="warn">{_e(note)}</div>')
    return "".join(parts)


def _overview_html(summary: dict) -> str:
    unit = summary["time_unit"]
    rows = []
    for name, c in summary["cohorts"].items():
        shares = " / ".join(fmt_share(c["shares"][g]) for g in ("good", "uncertain", "poor"))
        rows.append(f'<tr><td class="l">{_e(name)}</td><td>{c["n"]}</td><td>{c["events"]}</td>'
                    f'<td>{fmt_num(c["median_followup"], 1)}</td><td>{shares}</td>'
                    f'<td class="l">{fmt_hr(c["hr"]["poor_vs_good"])}</td><td class="l">{fmt_c(c["c_index"])}</td></tr>')
    return (f'<table><tr><th class="l">cohort</th><th>n</th><th>events</th><th>median follow-up ({_e(unit)})</th>'
            '<th>good / uncertain / poor</th><th class="l">HR poor vs good (95 % CI)</th>'
            f'<th class="l">C-index (95 % CI)</th></tr>{"".join(rows)}</table>') + _shift_overview(summary)


def _shift_overview(summary: dict) -> str:
    from wsi_prognosis.survival.shift_report import shift_overview_html

    return shift_overview_html(summary)


def _cohort_html(name: str, c: dict, result, figures: dict, primary: bool) -> str:
    unit = result.summary["time_unit"]
    out = [f'<h2 id="{_e(name)}">{_e(name)} cohort{" (primary)" if primary else ""}{cohort_label(name, result.summary)}</h2>',
           section_note(name, result.summary)]
    fu = f"{c['median_followup']:.1f} {unit}" if c["median_followup"] is not None else \
        f'<span class="na">{_e(c["not_estimable"].get("median_followup", ""))}</span>'
    shares = ", ".join(f"{g} {c['counts'][g]} ({fmt_share(c['shares'][g])})" for g in ("good", "uncertain", "poor"))
    out.append(f'<div class="kv"><span>n <b>{c["n"]}</b></span><span>events <b>{c["events"]}</b></span>'
               f"<span>median follow-up (reverse KM) <b>{fu}</b></span></div><p>{shares}</p>")
    if c.get("shift"):  # the domain-shift check: shares with CIs next to the tuning shares
        from wsi_prognosis.survival.shift_report import cohort_shift_html

        out.append(cohort_shift_html(c["shift"]))
    if c["excluded"] or c["unmatched"] or c["failed_slides"]:
        out.append(f'<div class="warn">Not analysed here: {c["excluded"]} excluded, {c["unmatched"]} without clinical data, '
                   f'{c["failed_slides"]} failed slide(s).</div>')
    adj = ", ".join(c["adjusted_for"])
    lr = fmt_p(c["logrank_p"]) if c["logrank_p"] is not None else \
        f'<span class="na">not estimable: {_e(c["not_estimable"].get("logrank_p", ""))}</span>'
    out.append('<table><tr><th class="l">comparison</th><th class="l">HR (95 % CI), univariable</th>'
               f'<th class="l">HR (95 % CI), adjusted{" for " + _e(adj) if adj else ""}</th><th>log-rank p</th></tr>')
    for k in ("uncertain_vs_good", "poor_vs_good"):
        out.append(f'<tr><td class="l">{k.replace("_", " ")}</td><td class="l">{fmt_hr(c["hr"][k])}</td>'
                   f'<td class="l">{fmt_hr(c["hr_adjusted"][k])}</td><td>{fmt_p(c["logrank_pairwise"][k]["p"])}</td></tr>')
    out.append(f'<tr><td class="l">overall (3 groups)</td><td></td><td></td><td>{lr}</td></tr></table>')
    sd = c["hr_per_sd"].get("sd")
    out.append(f'<p>Score, HR per SD{"" if sd is None else f" (SD {sd:.3f})"}: {fmt_hr(c["hr_per_sd"])}. '
               f'C-index of the score (higher score = worse): {fmt_c(c["c_index"])}.</p>')
    out.append(landmarks_html(c, unit, result.summary["endpoint"]))
    if c["ph_check"]["violated"]:
        out.append(f'<div class="warn">Proportional-hazards check (Schoenfeld, p &lt; {c["ph_check"]["alpha"]}) flags: '
                   f'{_e("; ".join(c["ph_check"]["violated"]))}. Interpret these hazard ratios as averages over time.</div>')
    elif c["ph_check"]["ok"]:
        out.append(f'<p>Proportional-hazards check (Schoenfeld residuals): no term with p &lt; {c["ph_check"]["alpha"]}.</p>')
    m = c["reference_marker"]
    if m.get("name") and m.get("reason") is None:
        out.append(f'<h3>Reference marker: {_e(m["name"])}</h3><p>C-index {fmt_c(m["c_index"])}; '
                   f'difference score − {_e(m["name"])}: {fmt_c(m["c_index_difference"])} '
                   f'(same {m["n"]} patients; {m["missing"]} without {_e(m["name"])}). Log-rank p = {fmt_p(m["logrank_p"])}.</p>')
        out.append("<table><tr><th class='l'>comparison</th><th class='l'>HR (95 % CI)</th></tr>" + "".join(
            f'<tr><td class="l">{_e(t.replace("_", " "))}</td><td class="l">{fmt_hr(h)}</td></tr>' for t, h in m["hr"].items()
        ) + "</table>")
    elif m.get("name") or (m.get("reason") and m["reason"] != "no reference marker configured"):
        out.append(f'<p class="na">Reference marker {_e(m.get("name") or "")} not analysed: {_e(m.get("reason"))}</p>')
    figs = [_img(p, cap) for p, cap in figures.get(name, [])]
    if figs:
        out.append(f'<div class="figs">{"".join(figs)}</div>')
    labels = {"good": "Good prognosis", "uncertain": "Uncertain prognosis", "poor": "Poor prognosis"}
    ar = result.at_risk[(result.at_risk["cohort"] == name) & (result.at_risk["marker"] == "risk_group")]
    out.append(_at_risk_html(ar, labels))
    notes = c["notes"] + (m.get("notes") or [])
    if notes:
        out.append("<details><summary>Notes</summary><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul></details>")
    cox = result.cox[result.cox["cohort"] == name].drop(columns=["cohort"])
    out.append(f"<details><summary>All Cox terms</summary>{_table(cox.round(4), ('model', 'term', 'reason'))}</details>")
    return "".join(out)


def render_report(result, figures: dict[str, list[tuple[Path, str]]], title: str = "wsi-prognosis survival analysis") -> str:
    """The HTML text. `figures`: cohort -> [(png path, caption)] embedded as base64."""
    s = result.summary
    primary = s["primary"]["cohort"]
    order = ([primary] if primary in s["cohorts"] else []) + [c for c in s["cohorts"] if c != primary]
    body = [f"<h1>{_e(title)}</h1>",
            f'<p class="sub">Endpoint: {_e(s["endpoint"])}; time in {_e(s["time_unit"])}; '
            f'{100 * s["confidence_level"]:.0f} % confidence intervals; C-index CIs from {s["bootstrap"]["n"]} bootstrap samples '
            f'(seed {s["bootstrap"]["seed"]}). Generated {time.strftime("%Y-%m-%d %H:%M")}.</p>',
            protocol_box_html(s) or _primary_html(s), "<h2>Overview</h2>", _overview_html(s),
            pooled_html(s, figures), "<h2>Patients analysed</h2>", _accounting_html(result)]
    body += [_cohort_html(name, s["cohorts"][name], result, figures, name == primary) for name in order]
    versions = ", ".join(f"{k} {v}" for k, v in s["versions"].items())
    body.append(f"<footer>{_e(versions)}</footer>")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")
