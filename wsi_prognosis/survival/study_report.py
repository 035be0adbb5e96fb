"""Report pieces of the validation study: the protocol box, pooled evidence, landmark lines, labels.

Called by `survival.report.render_report` (HTML) and `survival.outputs.write_analysis` (the forest
plot). Each returns "" (or nothing) when its part of the summary is absent, so a report without
`protocol=`, `analysis.pool` or `analysis.landmarks` is unchanged.
"""

from __future__ import annotations

import re
from pathlib import Path

from wsi_prognosis.survival.html_parts import escape as _e
from wsi_prognosis.survival.html_parts import figure_html, p_text
from wsi_prognosis.survival.landmarks import landmark_line

_LABEL_CSS = ("display:inline-block;font-size:.6em;font-weight:600;padding:1px 7px;border-radius:9px;"
              "vertical-align:middle;margin-left:8px;")
_LABEL_COLORS = {"primary": "#2b83ba", "secondary": "#5e3c99", "exploratory": "#777"}


def label(kind: str) -> str:
    """A small coloured tag: primary | secondary | exploratory."""
    return f'<span style="{_LABEL_CSS}color:#fff;background:{_LABEL_COLORS[kind]}">{_e(kind)}</span>'


def cohort_label(name: str, summary: dict) -> str:
    """The tag of a cohort section under a protocol: primary cohort, pooled (secondary) or exploratory."""
    protocol = summary.get("protocol")
    if not protocol:
        return ""
    if name == protocol["primary"]["cohort"]:
        return label("primary")
    if name in (protocol.get("secondary_cohorts") or []):
        return label("secondary")
    return label("exploratory")


def _num(x, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


_MEASURE_NAMES = {"hr": "HR (univariable)", "hr_adjusted": "HR (adjusted)", "c_index": "C-index", "logrank_p": "log-rank test"}


def protocol_box_html(summary: dict) -> str:
    """The box the report opens with under a protocol: id, lock date, primary as written, result, met."""
    p = summary.get("protocol")
    if not p:
        return ""
    pr = p["primary"]
    if pr.get("value") is None:
        result = f'<span class="na">not available: {_e(pr.get("reason") or "")}</span>'
    elif pr["measure"] == "logrank_p":
        result = f"log-rank {p_text(pr['p'])}"
    else:
        digits = 3 if pr["measure"] == "c_index" else 2
        result = f"{_num(pr['value'], digits)} ({_num(pr['ci_low'], digits)}–{_num(pr['ci_high'], digits)})"
        if pr.get("p") is not None:
            result += f", {p_text(pr['p'])}"
    if p["deviations"]:
        verdict = ('<span style="color:#a33;font-weight:700">deviates from protocol</span> — this is not the '
                   "pre-defined primary result; decision rule on this run: " + ("met" if pr.get("met") else "not met"))
    elif pr.get("met") is None:
        verdict = '<span class="na">decision rule not evaluable</span>'
    else:
        verdict = ('<span style="color:#1a7f37;font-weight:700">decision rule met</span>' if pr["met"]
                   else '<span style="color:#a33;font-weight:700">decision rule not met</span>')
    devs = ""
    if p["deviations"]:
        devs = ('<div class="warn"><b>Deviations from the protocol</b><ul>'
                + "".join(f"<li>{_e(d)}</li>" for d in p["deviations"]) + "</ul></div>")
    secondary = "".join(f"<li>{_e(s)}</li>" for s in p.get("secondary") or [])
    planned = ""
    exp, cohort = p.get("expected"), summary["cohorts"].get(pr["cohort"])
    if exp and exp.get("events_needed") is not None:
        planned = (f'<div class="sub">Planned: {exp["events_needed"]} events for {100 * exp["power"]:.0f} % power to detect '
                   f'HR {exp["hr"]:g} at α = {exp["alpha"]:g}')
        if cohort and pr.get("comparison"):
            target = pr["comparison"].split("_vs_")[0]
            observed = cohort["events_by_group"].get("good", 0) + cohort["events_by_group"].get(target, 0)
            planned += f"; the {_e(pr['cohort'])} cohort has {observed} events in the compared groups"
        planned += ".</div>"
    return (f'<div class="primary"><div>{label("primary")} Pre-registered protocol <code>{_e(p["id"][:16])}</code>, '
            f'locked {_e(p["locked_at"])} (bundle <code>{_e(p.get("bundle_id", ""))}</code>)</div>'
            f'<div>Primary analysis as written: {_e(pr.get("description", ""))}. '
            f'Decision rule: {_e(pr.get("decision_rule", ""))}.</div>'
            f'<div class="big">{_e(pr["cohort"])} cohort — {_e(_MEASURE_NAMES.get(pr["measure"], pr["measure"]))}'
            f'{" " + _e(pr["comparison"].replace("_", " ")) if pr.get("comparison") and pr["measure"].startswith("hr") else ""}: '
            f'{result} — {verdict}</div>{planned}{devs}'
            + (f'<details><summary>Secondary analyses (protocol)</summary><ul>{secondary}</ul></details>' if secondary else "")
            + '<div class="sub">Everything not named in the protocol is exploratory.</div></div>')


def section_note(name: str, summary: dict) -> str:
    """Under a protocol, what in a cohort's section is primary, secondary or exploratory."""
    protocol = summary.get("protocol")
    if not protocol:
        return ""
    pr = protocol["primary"]
    if name == pr["cohort"]:
        what = _MEASURE_NAMES.get(pr["measure"], pr["measure"]) + (
            f" {pr['comparison'].replace('_', ' ')}" if pr["measure"].startswith("hr") and pr.get("comparison") else "")
        return (f'<p class="sub">{label("primary")} {_e(what)} &nbsp; {label("secondary")} the analyses the protocol '
                f'lists (adjusted HRs, C-index, reference marker, landmark survival) &nbsp; {label("exploratory")} '
                "everything else in this section</p>")
    if name in (protocol.get("secondary_cohorts") or []):
        return (f'<p class="sub">{label("secondary")} this cohort enters the pooled analysis; its own results are '
                "exploratory</p>")
    return f'<p class="sub">{label("exploratory")} not named in the protocol</p>'


def landmarks_html(c: dict, unit: str, endpoint: str) -> str:
    """The landmark lines and Uno's C / AUC of one cohort section."""
    lm = c.get("landmarks")
    if not lm:
        return ""
    words = [w for w in re.split(r"[\s-]+", endpoint) if w]
    short = "".join(w[0] for w in words).upper() if len(words) > 1 else endpoint  # Cancer-specific survival: CSS
    lines = [f"<li>{_e(landmark_line(lm, key, short, unit))} (Kaplan–Meier, log-log 95 % CI; "
             + ", ".join(f"{g} at risk {lm[key][g]['at_risk']}" for g in lm[key]) + ")</li>" for key in lm]
    uno = c.get("c_index_uno") or {}
    disc = (f"Uno's C (IPCW, τ = {uno.get('tau', 0):g} {_e(unit)}): "
            + (f"{uno['value']:.3f}" if uno.get("value") is not None else f'<span class="na">{_e(uno.get("reason"))}</span>'))
    for key, a in (c.get("auc") or {}).items():
        disc += f"; AUC at {_e(key)} {_e(unit)}: " + (f"{a['value']:.3f}" if a.get("value") is not None
                                                      else f'<span class="na">{_e(a.get("reason"))}</span>')
    return f"<ul>{''.join(lines)}</ul><p>{disc}. Harrell's C above.</p>"


def pooled_html(summary: dict, figures: dict) -> str:
    """The pooled-evidence section: forest plot and the DL / PM table."""
    pooled = summary.get("pooled")
    if not pooled:
        return ""
    protocol = summary.get("protocol")
    tag = label("secondary") if protocol and "pooled" in " ".join(protocol.get("secondary") or []) else (
        label("exploratory") if protocol else "")
    out = [f"<h2>Pooled evidence across cohorts{tag}</h2>",
           f"<p>Random-effects meta-analysis of {_e(', '.join(pooled['cohorts']))} (statsmodels combine_effects; "
           "DerSimonian–Laird and Paule–Mandel). Prediction interval: the range expected for a new cohort's HR.</p>"]
    for path, caption in figures.get("_pooled", []):
        out.append(f'<div class="figs">{figure_html(path, caption)}</div>')
    rows = []
    for measure, title in (("poor_vs_good", "HR poor vs good"), ("per_sd", "HR per SD")):
        entry = pooled.get(measure) or {}
        for method in ("dl", "pm"):
            r = entry.get(method)
            if not r:
                rows.append(f'<tr><td class="l">{title}</td><td class="l">{method.upper()}</td>'
                            f'<td class="l" colspan="5"><span class="na">{_e(entry.get("reason"))}</span></td></tr>')
                continue
            q_p = "–" if r["q_p"] is None else f"{r['q_p']:.3g}"
            rows.append(f'<tr><td class="l">{title}</td><td class="l">{method.upper()}</td>'
                        f'<td>{r["hr"]:.2f} ({r["ci_low"]:.2f}–{r["ci_high"]:.2f})</td>'
                        f'<td>{r["pi_low"]:.2f}–{r["pi_high"]:.2f}</td><td>{r["tau2"]:.4f}</td>'
                        f'<td>{100 * r["i2"]:.0f} %</td><td>{q_p}</td></tr>')
    out.append('<table><tr><th class="l">measure</th><th class="l">method</th><th>pooled HR (95 % CI)</th>'
               '<th>95 % prediction interval</th><th>τ²</th><th>I²</th><th>Cochran Q p</th></tr>' + "".join(rows) + "</table>")
    if len(pooled["cohorts"]) < 4:
        out.append('<p class="sub">With fewer than four cohorts τ² and I² are very uncertain; '
                   "read the prediction interval as indicative.</p>")
    for note in pooled.get("notes") or []:
        out.append(f'<div class="warn">{_e(note)}</div>')
    return "".join(out)


def write_study_figures(result, out_dir: Path) -> dict[str, list[tuple[Path, str]]]:
    """figures/forest.png|pdf when the summary has a pooled analysis; {"_pooled": [(png, caption)]}."""
    pooled = result.summary.get("pooled")
    if not pooled or not any(pooled[m]["per_cohort"] for m in ("poor_vs_good", "per_sd")):
        return {}
    from wsi_prognosis.survival.km import save_figure
    from wsi_prognosis.survival.pooled import plot_forest

    fig = plot_forest(pooled, title=f"{result.summary['endpoint']}: hazard ratios per cohort and pooled")
    stem = Path(out_dir) / "figures" / "forest"
    save_figure(fig, stem)
    return {"_pooled": [(Path(f"{stem}.png"), "Forest plot: HR per cohort, pooled DL / PM (diamonds) with prediction interval")]}


__all__ = ["section_note", "protocol_box_html", "pooled_html", "landmarks_html", "cohort_label", "write_study_figures", "label"]
