"""protocol.html: the locked protocol for people, written beside protocol.json (self-contained, offline)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from wsi_prognosis.survival.html_parts import THRESHOLD_DECIMALS, fmt_threshold


def render_protocol(record: Mapping[str, Any]) -> str:
    """protocol.html: the locked protocol for people (self-contained, opens offline)."""
    import html

    def e(v: Any) -> str:
        return html.escape(str(v))

    pr = record["primary"]
    rows = [("Protocol id", f"<code>{e(record['id'])}</code>"), ("Locked at (UTC)", e(record["locked_at"])),
            ("Bundle", f"<code>{e(record['bundle']['id'])}</code> (bundle.json sha256 <code>{e(record['bundle']['bundle_json_sha256'][:16])}…</code>)"),
            ("Locked thresholds", f"good: score &lt; {fmt_threshold(record['bundle']['thresholds']['low'])}; poor: "
                                  f"score &ge; {fmt_threshold(record['bundle']['thresholds']['high'])}; uncertain between "
                                  "(exact values in protocol.json)"),
            ("Endpoint", f"{e(record['endpoint']['name'])} (time in {e(record['endpoint']['time_unit'])}; "
                         f"event: {e(record['endpoint']['event_coding'])})")]
    primary = [("Cohort", e(pr["cohort"])), ("Measure", f"{e(pr['measure'])} — {e(pr['comparison'].replace('_', ' '))}"),
               ("Model", e(pr["model"])), ("Two-sided α", f"{pr['alpha']:g}"), ("Null hypothesis", e(pr["null"])),
               ("Decision rule", f"<b>{e(pr['decision_rule'])}</b>"), ("As written", e(pr["description"]))]
    exp = record.get("expected")
    expected = (f"<p>Expected effect HR {exp['hr']:g}, power {100 * exp['power']:.0f} % at α {exp['alpha']:g}: "
                f"{exp['events_needed']} events, about {exp['patients_needed']} patients ({e(exp.get('headline') or '')})</p>"
                if exp else "<p><i>No sample-size plan attached (plan=PLAN.json).</i></p>")

    def table(items):
        return "<table>" + "".join(f'<tr><th class="l">{k}</th><td class="l">{v}</td></tr>' for k, v in items) + "</table>"

    shown = dict(record["analysis"])  # for people: thresholds rounded (protocol.json keeps them exact)
    if isinstance(shown.get("thresholds"), Mapping):
        shown["thresholds"] = {k: round(float(v), THRESHOLD_DECIMALS) for k, v in shown["thresholds"].items()}
    analysis = html.escape(json.dumps(shown, indent=2))
    versions = ", ".join(f"{k} {v}" for k, v in record["versions"].items())
    css = ("body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:950px;margin:24px auto;padding:0 16px;"
           "color:#222;line-height:1.45}table{border-collapse:collapse;margin:6px 0 14px}th,td{border:1px solid #ccc;padding:4px 9px;"
           "vertical-align:top}th{background:#f3f3f3;text-align:left;width:220px}.box{border:2px solid #2b83ba;background:#f0f7fc;"
           "padding:8px 14px;border-radius:6px}pre{background:#f7f7f7;padding:8px;font-size:.85em}footer{color:#777;font-size:.85em}")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{e(record["title"])}</title><style>{css}</style>'
            f'</head><body><h1>{e(record["title"])}</h1><div class="box">Validation protocol, locked before the external cohort '
            f"was scored. It is never edited: a changed plan is a new protocol with a new id.</div>"
            f"<h2>Bundle and endpoint</h2>{table(rows)}<h2>Pre-defined primary analysis</h2>{table(primary)}"
            f"<h2>Expected effect and power</h2>{expected}"
            f"<h2>Secondary analyses</h2><ul>{''.join(f'<li>{e(s)}</li>' for s in record['secondary'])}</ul>"
            "<p>Every other analysis in the report is exploratory.</p>"
            f"<h2>Exclusion rules</h2><ul>{''.join(f'<li>{e(s)}</li>' for s in record['exclusions']['rules'] + record['exclusions']['additional'])}</ul>"
            f"<h2>Analysis configuration used by <code>analyze</code></h2><pre>{analysis}</pre>"
            f"<p class='sub'>Thresholds are shown with {THRESHOLD_DECIMALS} decimals; protocol.json holds the exact values.</p>"
            f"<footer>{e(versions)}</footer></body></html>\n")


__all__ = ["render_protocol"]
