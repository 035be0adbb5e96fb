"""The locked validation protocol: written before the external cohort is scored, verified by `analyze`.

A protocol (protocol.json) fixes the bundle (id and the sha256 of its bundle.json), the locked
thresholds, the endpoint, the one pre-defined primary analysis with its decision rule, the
secondary analyses, the exclusion rules and the whole analysis configuration `analyze` will use.
Its id is the sha256 of its canonical JSON (sorted keys, no whitespace, everything but "id"), so a
hand edit is detected; a changed plan is a new file with a new id.

Here: `build_protocol` (every check, then the record with its id) and `write_protocol`
(protocol.json and protocol.html, never replacing a file). The record's format, id and loading
live in `protocol_record`; what `analyze ... protocol=FILE` does with it (`load_protocol`: the id
still matches; `verify_scores`, `check_clinical`, `apply_protocol` with its deviations,
`protocol_summary`, all through `ProtocolRun`) in `protocol_apply`; protocol.html in
`protocol_html`. Every public name stays importable from here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wsi_prognosis.errors import ProtocolError
from wsi_prognosis.study.protocol_apply import (ProtocolRun, apply_protocol, check_clinical, protocol_summary, rule_met,
                                                verify_scores)
from wsi_prognosis.study.protocol_html import render_protocol
from wsi_prognosis.study.protocol_record import (COMPARISONS, KNOWN_COHORTS, LOCKED_KEYS, MEASURES, PROTOCOL_FORMAT,
                                                 canonical, close_match, decision_rule, exclusion_rules, load_protocol,
                                                 protocol_id)
from wsi_prognosis.survival.config import config_from_dict


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
            raise ProtocolError(f"{key}: cohort {name!r} is not among {source}{close_match(name, known)}. "
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
                raise ProtocolError(f"{key}: {name!r} is not a column of {clinical_source}{close_match(name, columns)} "
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


__all__ = ["ProtocolRun", "build_protocol", "write_protocol", "load_protocol", "verify_scores", "check_clinical", "apply_protocol",
           "protocol_summary", "protocol_id", "render_protocol", "rule_met", "exclusion_rules", "decision_rule", "canonical",
           "PROTOCOL_FORMAT", "KNOWN_COHORTS", "MEASURES", "COMPARISONS", "LOCKED_KEYS"]
