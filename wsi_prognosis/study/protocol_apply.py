"""A locked protocol at analysis time (`analyze ... protocol=FILE`): verify, apply, summarise.

`verify_scores` (the scores were written by `score` with the protocol's bundle and thresholds),
`check_clinical` (endpoint and covariates exist), `apply_protocol` (the locked configuration, plus
whatever the run sets differently, each listed as a deviation) and `protocol_summary`
(summary.json's "protocol" entry with the primary result and whether its decision rule was met);
`ProtocolRun` does them in that order for the `analyze` stage.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wsi_prognosis.errors import ProtocolError
from wsi_prognosis.study.protocol_record import LOCKED_KEYS, close_match, exclusion_rules, load_protocol
from wsi_prognosis.survival.config import config_from_dict
from wsi_prognosis.survival.html_parts import fmt_threshold

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
            f"{close_match(missing[0], columns)}. Fix: a clinical table with these columns (renaming a column is fine; "
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


def _shown(key: str, locked: Any, used: Any) -> tuple[str, str]:
    """A deviation's two values as text: thresholds with 4 decimals (protocol.json keeps them exact),
    unless that would print two different values alike; anything else as its repr."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if key.startswith("thresholds.") and number(locked) and number(used):
        pair = fmt_threshold(locked), fmt_threshold(used)
        if pair[0] != pair[1]:
            return pair
    return repr(locked), repr(used)


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
            shown = _shown(key, locked.get(key), value)
            deviations.append(f"analysis.{key}: the protocol locks {shown[0]}, this run uses {shown[1]}")
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


__all__ = ["ProtocolRun", "verify_scores", "check_clinical", "apply_protocol", "protocol_summary", "rule_met"]
