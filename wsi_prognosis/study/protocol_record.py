"""The protocol record itself: its format, its id (sha256 of its canonical JSON), loading with that check,
and the wording of its exclusion and decision rules.

Shared by writing a protocol (`study.protocol.build_protocol`) and applying one at analysis
time (`study.protocol_apply`), so neither imports the other.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wsi_prognosis.errors import ProtocolError

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


def close_match(name: str, options: Sequence[str]) -> str:
    same_case = [o for o in options if o.lower() == name.lower()]
    match = same_case or difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


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


__all__ = ["PROTOCOL_FORMAT", "KNOWN_COHORTS", "MEASURES", "COMPARISONS", "LOCKED_KEYS", "exclusion_rules", "canonical",
           "protocol_id", "decision_rule", "close_match", "load_protocol"]
