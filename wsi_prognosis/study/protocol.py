"""The locked validation protocol: written before the external cohort is scored, verified by `analyze`.

A protocol (protocol.json) fixes the bundle (id and the sha256 of its bundle.json), the locked
thresholds, the endpoint, the one pre-defined primary analysis with its decision rule, the
secondary analyses, the exclusion rules and the whole analysis configuration `analyze` will use.
Its id is the sha256 of its canonical JSON (sorted keys, no whitespace, everything but "id"), so a
hand edit is detected; a changed plan is a new file with a new id.

`analyze ... protocol=FILE` calls `verify_protocol` (the id still matches), `verify_scores` (the
scores were written by `score` with the protocol's bundle and thresholds), `check_clinical`
(endpoint and covariates exist), `apply_protocol` (the locked configuration, plus whatever the run
sets differently, each listed as a deviation) and finally `protocol_summary` (summary.json's
"protocol" entry with the primary result and whether its decision rule was met).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wsi_prognosis.errors import ProtocolError
from wsi_prognosis.survival.config import config_from_dict

PROTOCOL_FORMAT = "wsi-prognosis-protocol/1"
KNOWN_COHORTS = ("training", "tuning", "test", "validation")
MEASURES = ("hr", "hr_adjusted", "c_index", "logrank_p")
COMPARISONS = ("poor_vs_good", "uncertain_vs_good")
# the analysis keys a protocol locks: a run that sets any of them differently deviates
LOCKED_KEYS = ("time_unit", "time_points", "endpoint", "covariates", "reference_marker", "reference_order",
               "patient_aggregation", "thresholds", "bootstrap", "confidence_bands", "alpha", "ph_alpha", "seed",
               "primary", "pool", "landmarks")


def exclusion_rules(patient_aggregation: str) -> list[str]:
    """The exclusion rules `analyze` applies (survival.inputs.prepare), as the protocol states them."""
    return [
        "slides whose scoring failed (status other than ok) are not used; a patient without an ok slide is excluded",
        "patients without a valid clinical record (time missing, non-numeric or negative; event not 0/1; "
        "conflicting duplicate rows) are excluded",
        "patients in the scores but not in the clinical table are listed as unmatched and not analysed",
        f"a patient's score is the {patient_aggregation} of their ok slide scores; the risk group is the locked "
        "thresholds applied to that score (score < low: good; low <= score < high: uncertain; score >= high: poor)",
    ]


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def protocol_id(record: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of everything but "id"."""
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "id"}).encode("utf-8")).hexdigest()


def decision_rule(measure: str, comparison: str, alpha: float) -> str:
    level = f"{100 * (1 - alpha):g} %"
    if measure in ("hr", "hr_adjusted"):
        what = "univariable" if measure == "hr" else "adjusted"
        return (f"HR {comparison.replace('_vs_', ' vs ')} ({what} Cox) > 1 and its two-sided {level} CI excludes 1 "
                f"(null hypothesis: HR = 1)")
    if measure == "c_index":
        return f"C-index > 0.5 and its two-sided {level} bootstrap CI excludes 0.5 (null hypothesis: C = 0.5)"
    return f"log-rank p < {alpha:g} across good / uncertain / poor (null hypothesis: equal survival)"


def _close(name: str, options: Sequence[str]) -> str:
    same_case = [o for o in options if o.lower() == name.lower()]
    match = same_case or difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _csv_header(path: Path) -> list[str]:
    import csv

    with open(path, newline="", encoding="utf-8-sig") as handle:
        return [c.strip() for c in next(csv.reader(handle), [])]


def _manifest_cohorts(path: Path) -> list[str]:
    import csv

    with open(path, newline="", encoding="utf-8-sig") as handle:
        return sorted({(row.get("cohort") or "").strip() for row in csv.DictReader(handle)} - {""})


def build_protocol(bundle_dir: str | Path, *, primary: Mapping[str, Any], secondary: Mapping[str, Any],
                   analysis: Mapping[str, Any], endpoint: Mapping[str, Any], landmarks: Sequence[float] = (5,),
                   title: str = "", clinical: str | Path | None = None, manifest: str | Path | None = None,
                   cohorts: Sequence[str] = KNOWN_COHORTS, plan: str | Path | None = None,
                   exclusions: Sequence[str] = ()) -> dict[str, Any]:
    """The protocol record (with its id), after every check; nothing is written here.

    Raises ProtocolError for a bundle without thresholds, an unknown cohort or covariate name,
    alpha outside (0, 0.5), a plan made for another bundle; BundleError for a bundle whose hashes fail.
    """
    from wsi_prognosis.ensemble import load_bundle
    from wsi_prognosis.provenance import TRACKED_PACKAGES, file_sha256, package_versions

    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir)  # verifies bundle.json's id and every weights file's sha256
    if not bundle.thresholds:
        raise ProtocolError(f"{bundle_dir / 'bundle.json'}: the bundle has no thresholds, so nothing is locked. "
                            "Fix: calibrate it first (`wsi-prognosis calibrate`) and lock the calibrated bundle.")
    thresholds = {"low": float(bundle.thresholds["low"]), "high": float(bundle.thresholds["high"])}
    alpha = float(primary.get("alpha", 0.05))
    if not 0 < alpha < 0.5:
        raise ProtocolError(f"primary.alpha={alpha}: a two-sided significance level must lie in (0, 0.5). Fix: e.g. primary.alpha=0.05.")
    measure = str(primary.get("measure", "hr"))
    comparison = str(primary.get("comparison", "poor_vs_good"))
    if measure not in MEASURES:
        raise ProtocolError(f"primary.measure={measure!r}: one of {list(MEASURES)}.")
    if comparison not in COMPARISONS:
        raise ProtocolError(f"primary.comparison={comparison!r}: one of {list(COMPARISONS)}.")
    known = _manifest_cohorts(Path(manifest)) if manifest is not None else list(cohorts)
    source = f"the cohorts of {manifest}" if manifest is not None else f"the known cohorts {list(known)} (cohorts=[...] adds others)"
    cohort = str(primary.get("cohort", "validation"))
    pool = [str(c) for c in (secondary.get("pool") or [])]
    for name, key in [(cohort, "primary.cohort")] + [(c, "secondary.pool") for c in pool]:
        if name not in known:
            raise ProtocolError(f"{key}: cohort {name!r} is not among {source}{_close(name, known)}. "
                                "Fix: spell the cohort as in the manifest.")
    covariates = [str(c) for c in (secondary.get("covariates") or [])]
    marker = secondary.get("reference_marker")
    marker = None if marker in (None, "", "none", "null") else str(marker)
    columns: list[str] | None = None
    clinical_source = None
    cal_inputs = (bundle.calibration or {}).get("inputs") or {}
    for candidate in (clinical, cal_inputs.get("clinical")):
        if candidate is not None and Path(candidate).is_file():
            columns, clinical_source = _csv_header(Path(candidate)), str(candidate)
            break
    if columns is not None:
        for name, key in [(c, "secondary.covariates") for c in covariates] + ([(marker, "secondary.reference_marker")] if marker else []):
            if name not in columns:
                raise ProtocolError(f"{key}: {name!r} is not a column of {clinical_source}{_close(name, columns)} "
                                    f"(columns: {columns}). Fix: spell it as in the clinical table.")
        missing = [c for c in ("patient_id", "time", "event") if c not in columns]
        if missing:
            raise ProtocolError(f"{clinical_source}: no {missing} column(s); the endpoint needs patient_id, time, event.")
    planned = None
    if plan is not None:
        plan_path = Path(plan)
        if not plan_path.is_file():
            raise ProtocolError(f"plan={plan_path}: not found. Fix: the plan.json written by `wsi-prognosis plan`.")
        p = json.loads(plan_path.read_text(encoding="utf-8"))
        if p.get("bundle_id") != bundle.id:
            raise ProtocolError(f"plan={plan_path}: planned for bundle {p.get('bundle_id')}, not {bundle.id}. "
                                "Fix: rerun `wsi-prognosis plan` with this bundle.")
        planned = {"file": str(plan_path), "sha256": file_sha256(plan_path),
                   **{k: p.get(k) for k in ("hr", "alpha", "power", "events_needed", "patients_needed", "event_probability",
                                            "horizon", "cohorts_needed", "headline", "comparison")}}
    aggregation = str(analysis.get("patient_aggregation") or bundle.aggregation.get("patient") or "mean")
    description = primary.get("description") or (
        f"{endpoint.get('name', 'Cancer-specific survival')}, {comparison.replace('_vs_', ' vs ')} prognosis, "
        f"{'univariable Cox HR' if measure == 'hr' else 'Cox HR adjusted for ' + ', '.join(covariates) if measure == 'hr_adjusted' else measure} "
        f"in the {cohort} cohort")
    analysis_block = {
        "time_unit": str(endpoint.get("time_unit", "years")),
        "time_points": [float(t) for t in analysis.get("time_points", (0, 2, 4, 6, 8))],
        "endpoint": str(endpoint.get("name", "Cancer-specific survival")),
        "covariates": covariates,
        "reference_marker": marker,
        "reference_order": None if analysis.get("reference_order") is None else [str(v) for v in analysis["reference_order"]],
        "patient_aggregation": aggregation,
        "thresholds": thresholds,
        "bootstrap": {"n": int((analysis.get("bootstrap") or {}).get("n", 1000))},
        "confidence_bands": bool(analysis.get("confidence_bands", False)),
        "alpha": alpha,
        "ph_alpha": float(analysis.get("ph_alpha", 0.05)),
        "seed": int(analysis.get("seed", 0)),
        "primary": {"cohort": cohort, "measure": measure, "comparison": comparison, "description": str(description)},
        "pool": pool,
        "landmarks": [float(t) for t in landmarks],
    }
    config_from_dict(analysis_block)  # the locked configuration must be one analyze accepts
    secondary_list = []
    if covariates:
        secondary_list.append(f"Cox HR poor vs good and uncertain vs good adjusted for {', '.join(covariates)} ({cohort} cohort)")
    if secondary.get("c_index", True):
        secondary_list.append(f"C-index of the score with a {analysis_block['bootstrap']['n']}-sample bootstrap CI ({cohort} cohort)")
    if marker:
        secondary_list.append(f"reference marker {marker}: its C-index and the difference C(score) - C({marker}) ({cohort} cohort)")
    if pool:
        secondary_list.append(f"pooled analysis of {', '.join(pool)}: random-effects HR (DerSimonian-Laird, Paule-Mandel) "
                              "with prediction interval")
    if landmarks:
        secondary_list.append(f"Kaplan-Meier survival per risk group at {', '.join(f'{t:g}' for t in landmarks)} "
                              f"{analysis_block['time_unit']} ({cohort} cohort)")
    record: dict[str, Any] = {
        "format": PROTOCOL_FORMAT,
        "title": title or f"External validation of bundle {bundle.id}",
        "bundle": {"id": bundle.id, "bundle_json_sha256": file_sha256(bundle_dir / "bundle.json"),
                   "dir": str(bundle_dir.resolve()), "thresholds": thresholds,
                   "calibration": {k: (bundle.calibration or {}).get(k) for k in ("method", "cohort", "level", "shares")}},
        "endpoint": {"name": analysis_block["endpoint"], "time_unit": analysis_block["time_unit"],
                     "event_coding": str(endpoint.get("event_coding", "1 = endpoint (cancer-specific death), 0 = censored"))},
        "primary": {"cohort": cohort, "measure": measure, "comparison": comparison,
                    "model": ("univariable Cox proportional hazards, risk group (good = reference)" if measure == "hr" else
                              f"Cox proportional hazards, risk group adjusted for {', '.join(covariates)}" if measure == "hr_adjusted"
                              else measure),
                    "alpha": alpha, "sides": 2, "null": ("HR = 1" if measure.startswith("hr") else
                                                         "C = 0.5" if measure == "c_index" else "equal survival"),
                    "decision_rule": decision_rule(measure, comparison, alpha), "description": str(description)},
        "expected": planned,
        "secondary": secondary_list,
        "secondary_cohorts": [c for c in pool if c != cohort],
        "exclusions": {"rules": exclusion_rules(aggregation), "additional": [str(e) for e in exclusions]},
        "analysis": analysis_block,
        "checked_against": {"cohorts": source, "clinical": clinical_source},
        "versions": package_versions(TRACKED_PACKAGES + ("statsmodels", "scikit-survival", "scipy", "matplotlib")),
        "locked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    record = json.loads(canonical(record))  # exactly what is written and hashed
    record["id"] = protocol_id(record)
    return record


def write_protocol(record: Mapping[str, Any], out: str | Path) -> tuple[Path, Path]:
    """protocol.json and protocol.html beside it; refuses to replace an existing file."""
    from wsi_prognosis.atomic import write_text_atomic

    out = Path(out)
    html_path = out.with_suffix(".html")
    for path in (out, html_path):
        if path.exists():
            raise ProtocolError(f"{path}: already exists. A protocol is never edited or replaced: a changed plan is a new "
                                "file with a new id. Fix: choose another out= (the old protocol stays valid as history).")
    write_text_atomic(out, json.dumps(record, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    write_text_atomic(html_path, render_protocol(record))
    return out, html_path


def load_protocol(path: str | Path) -> dict[str, Any]:
    """Read protocol.json and verify that its content still matches its id (ProtocolError otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise ProtocolError(f"protocol={path}: not found. Fix: the protocol.json written by `wsi-prognosis protocol`.")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ProtocolError(f"{path}: not readable as JSON ({exc}). Fix: restore the protocol file as locked.") from exc
    if not isinstance(record, dict) or record.get("format") != PROTOCOL_FORMAT:
        raise ProtocolError(f"{path}: not a {PROTOCOL_FORMAT} file. Fix: pass the protocol.json written by `wsi-prognosis protocol`.")
    if record.get("id") != protocol_id(record):
        raise ProtocolError(
            f"{path}: its content no longer matches its id {str(record.get('id'))[:16]}…: the protocol was edited after it "
            "was locked. Fix: restore the original file; a changed plan needs a new protocol (`wsi-prognosis protocol`), "
            "locked before the external cohort is scored.")
    return record


def _run_records(scores: Path) -> list[Path]:
    return [p for p in (scores.parent / "run_score.json", scores.parent / "run_merge.json") if p.is_file()]


def verify_scores(protocol: Mapping[str, Any], scores: str | Path) -> dict[str, Any]:
    """The scores must come from the protocol's bundle with its thresholds (run_score.json / run_merge.json beside them)."""
    scores = Path(scores)
    records = _run_records(scores)
    expected = protocol["bundle"]["id"]
    if not records:
        raise ProtocolError(
            f"{scores}: no run_score.json or run_merge.json beside it, so nothing shows which bundle produced these scores. "
            f"Fix: analyse the scores.csv written by `wsi-prognosis score bundle=<bundle {expected}>`, or drop protocol= "
            "for an exploratory analysis.")
    record_path = records[0]
    run = json.loads(record_path.read_text(encoding="utf-8"))
    if run.get("bundle_id") != expected:
        raise ProtocolError(
            f"{scores}: scored with bundle {run.get('bundle_id')} ({record_path.name}), but the protocol locks bundle "
            f"{expected}. Fix: score the cohort with the protocol's bundle ({protocol['bundle'].get('dir')}).")
    locked = protocol["bundle"]["thresholds"]
    used = run.get("thresholds")
    if used is not None and ({k: float(v) for k, v in used.items()} != {k: float(v) for k, v in locked.items()}):
        raise ProtocolError(f"{scores}: scored with thresholds {used}, but the protocol locks {locked}. "
                            "Fix: score with the protocol's bundle.")
    return {"record": str(record_path), "bundle_id": run.get("bundle_id")}


def check_clinical(protocol: Mapping[str, Any], columns: Sequence[str], path: str | Path, analysis: Mapping[str, Any]) -> None:
    """The endpoint (time, event) and the covariates / marker of the analysis exist in the clinical table."""
    needed = ["patient_id", "time", "event"] + list(analysis.get("covariates") or [])
    if analysis.get("reference_marker") not in (None, "auto"):
        needed.append(str(analysis["reference_marker"]))
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ProtocolError(
            f"{path}: the protocol's endpoint and covariates need column(s) {missing}; found {list(columns)}"
            f"{_close(missing[0], columns)}. Fix: a clinical table with these columns (renaming a column is fine; "
            "changing what it measures is a deviation to report).")


def _normalise(value: Any) -> Any:
    """Values compared for deviations: tuples as lists, ints as floats where a float is meant."""
    if isinstance(value, Mapping):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return value


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and k in ("primary", "bootstrap", "thresholds"):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def apply_protocol(protocol: Mapping[str, Any], run_analysis: Mapping[str, Any],
                   defaults: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The analysis block to use and the deviations.

    `run_analysis` is the run's `analysis:` block, `defaults` the packaged analyze.yaml's. A key the
    run sets to something other than the packaged default is the run's choice: where it differs
    from the protocol it is applied and listed as a deviation; every other key takes the
    protocol's locked value.
    """
    locked = _flatten(protocol["analysis"])
    run = _flatten(run_analysis)
    default = _flatten(defaults)
    effective = dict(locked)
    deviations: list[str] = []
    for key, value in run.items():
        if key in default and _normalise(value) == _normalise(default[key]):
            continue  # not set by this run: the protocol's value applies
        if key.split(".")[0] not in LOCKED_KEYS:
            effective[key] = value
            continue
        if key == "primary.description":
            continue  # wording only
        if _normalise(locked.get(key)) != _normalise(value):
            deviations.append(f"analysis.{key}: the protocol locks {locked.get(key)!r}, this run uses {value!r}")
            effective[key] = value
    out: dict[str, Any] = {}
    for key, value in effective.items():
        parts = key.split(".")
        target = out
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    current = exclusion_rules(str(out.get("patient_aggregation") or "mean"))
    if protocol["exclusions"]["rules"] != current:
        changed = [r for r in current if r not in protocol["exclusions"]["rules"]]
        deviations.append("exclusion rules differ from the protocol's: " + "; ".join(changed))
    return out, deviations


def _primary_value(summary: Mapping[str, Any]) -> dict[str, Any]:
    p = summary["primary"]
    result = p.get("result") or {}
    if p["measure"] in ("hr", "hr_adjusted"):
        return {"value": result.get("hr"), "ci_low": result.get("ci_low"), "ci_high": result.get("ci_high"), "p": result.get("p")}
    if p["measure"] == "c_index":
        return {"value": result.get("value"), "ci_low": result.get("ci_low"), "ci_high": result.get("ci_high"), "p": None}
    return {"value": result.get("p"), "ci_low": None, "ci_high": None, "p": result.get("p")}


def rule_met(measure: str, value: Mapping[str, Any], alpha: float) -> bool | None:
    """Whether the decision rule holds for a primary result; None when the result is not available."""
    if measure in ("hr", "hr_adjusted"):
        if value["value"] is None or value["ci_low"] is None:
            return None
        return bool(value["value"] > 1 and value["ci_low"] > 1)
    if measure == "c_index":
        if value["value"] is None or value["ci_low"] is None:
            return None
        return bool(value["value"] > 0.5 and value["ci_low"] > 0.5)
    return None if value["p"] is None else bool(value["p"] < alpha)


def protocol_summary(protocol: Mapping[str, Any], summary: Mapping[str, Any], deviations: Sequence[str],
                     path: str | Path, scores_check: Mapping[str, Any]) -> dict[str, Any]:
    """summary.json's "protocol" entry: id, lock date, the primary result, met, deviations."""
    p = summary["primary"]
    value = _primary_value(summary)
    alpha = 1.0 - float(summary["confidence_level"])
    met = rule_met(p["measure"], value, alpha)
    return {
        "id": protocol["id"],
        "locked_at": protocol["locked_at"],
        "file": str(path),
        "title": protocol.get("title"),
        "bundle_id": protocol["bundle"]["id"],
        "scores_verified_by": scores_check.get("record"),
        "primary": {"cohort": p["cohort"], "measure": p["measure"], "comparison": p.get("comparison"), **value,
                    "met": met, "status": "deviates_from_protocol" if deviations else "as_planned",
                    "decision_rule": protocol["primary"]["decision_rule"],
                    "description": protocol["primary"]["description"], "reason": p.get("reason")},
        "deviations": list(deviations),
        "secondary": list(protocol.get("secondary") or []),
        "secondary_cohorts": list(protocol.get("secondary_cohorts") or []),
        "expected": protocol.get("expected"),
    }


class ProtocolRun:
    """`analyze ... protocol=FILE`: everything verified before any computation, then the summary entry."""

    def __init__(self, path: str | Path, scores: str | Path, run_analysis: Mapping[str, Any]):
        from importlib.resources import files

        from omegaconf import OmegaConf

        self.path = Path(path)
        self.protocol = load_protocol(self.path)             # refuses a hand-edited protocol
        self.scores_check = verify_scores(self.protocol, scores)  # refuses scores of another bundle
        packaged = OmegaConf.load(str(files("wsi_prognosis.configs") / "analyze.yaml"))
        defaults = OmegaConf.to_container(packaged.get("analysis") or {}, resolve=True)
        self.analysis, self.deviations = apply_protocol(self.protocol, run_analysis, defaults)
        self.config = config_from_dict(self.analysis)

    def check_clinical(self, clinical_columns: Sequence[str], path: str | Path) -> None:
        check_clinical(self.protocol, clinical_columns, path, self.analysis)

    def summary(self, summary: Mapping[str, Any]) -> dict[str, Any]:
        return protocol_summary(self.protocol, summary, self.deviations, self.path, self.scores_check)


def render_protocol(record: Mapping[str, Any]) -> str:
    """protocol.html: the locked protocol for people (self-contained, opens offline)."""
    import html

    def e(v: Any) -> str:
        return html.escape(str(v))

    pr = record["primary"]
    rows = [("Protocol id", f"<code>{e(record['id'])}</code>"), ("Locked at (UTC)", e(record["locked_at"])),
            ("Bundle", f"<code>{e(record['bundle']['id'])}</code> (bundle.json sha256 <code>{e(record['bundle']['bundle_json_sha256'][:16])}…</code>)"),
            ("Locked thresholds", f"good: score &lt; {record['bundle']['thresholds']['low']:.4f}; poor: score &ge; "
                                  f"{record['bundle']['thresholds']['high']:.4f}; uncertain between"),
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

    analysis = html.escape(json.dumps(record["analysis"], indent=2))
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
            f"<footer>{e(versions)}</footer></body></html>\n")


__all__ = ["ProtocolRun", "build_protocol", "write_protocol", "load_protocol", "verify_scores", "check_clinical", "apply_protocol",
           "protocol_summary", "protocol_id", "render_protocol", "rule_met", "exclusion_rules", "PROTOCOL_FORMAT"]
