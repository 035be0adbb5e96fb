"""The domain-shift check in the analysis: each cohort's shares, with 95 % CIs, next to the tuning shares.

`score` compares every cohort's score distribution and tile colour / sharpness with the tuning
reference recorded in the calibrated bundle and writes ``shift.json`` (`wsi_prognosis.scoring.shift`).
Here, per cohort of the analysis: the share of good / uncertain / poor with its Wilson 95 % CI
(``scipy.stats.binomtest(...).proportion_ci(method="wilson")``), the tuning share, the change, and a
flag when a share moved by more than ``shift.max_share_change`` (default 0.10, i.e. 10 percentage
points) beyond sampling noise (the tuning share outside the cohort's CI; ``shift.require_outside_ci``),
or when `score` flagged the cohort's score distribution, colour or sharpness. Nothing is refitted:
a flagged cohort is reported (summary.json ``cohorts.<name>.shift``, a warning box in report.html).
The cohorts the bundle was trained on (``data.train_cohort``, "training" by default; as recorded
in shift.json or read from the bundle) are in-sample: their numbers are shown, marked "in-sample
(training): not flagged, expected to differ", and they never enter ``shift.flagged``.

The tuning shares come from ``shift.json`` beside the scores table, or from ``bundle=DIR``
(``bundle.json`` -> ``calibration.reference``; read as JSON, no weights are loaded).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsi_prognosis.errors import ConfigurationError
from wsi_prognosis.scoring.shift_reference import DEFAULT_TRAIN_COHORT, in_sample_cohorts, in_sample_note

RISK_GROUPS = ("good", "uncertain", "poor")


@dataclass(frozen=True)
class ShareShiftConfig:
    """analyze.yaml ``shift.*``."""

    max_share_change: float = 0.10     # flag a share that moved more than this (0.10 = 10 percentage points) ...
    require_outside_ci: bool = True    # ... and whose tuning value lies outside the cohort's 95 % CI

    def __post_init__(self) -> None:
        if not 0 < self.max_share_change < 1:
            raise ConfigurationError(f"shift.max_share_change={self.max_share_change!r}: must lie in (0, 1), e.g. 0.10.")

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any] | None) -> ShareShiftConfig:
        section = dict(section or {})
        known = set(cls.__dataclass_fields__)
        if set(section) - known:
            raise ConfigurationError(f"shift: unknown key(s) {sorted(set(section) - known)}; known: {sorted(known)}.")
        try:
            return cls(max_share_change=float(section.get("max_share_change", 0.10)),
                       require_outside_ci=bool(section.get("require_outside_ci", True)))
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"shift: {exc}") from exc


def share_ci(k: int, n: int, alpha: float = 0.05) -> tuple[float | None, float | None]:
    """Wilson score interval of the share k / n at level 1 - alpha; (None, None) for n = 0.

    >>> tuple(round(v, 3) for v in share_ci(60, 100))
    (0.502, 0.691)
    """
    from scipy.stats import binomtest

    if n <= 0:
        return None, None
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=1 - alpha, method="wilson")
    return float(ci.low), float(ci.high)


def load_shift_reference(scores: str | Path, bundle: str | Path | None = None) -> dict[str, Any]:
    """Where the tuning shares (and score's per-cohort check) come from.

    Returns ``{"source", "reference" (dict with "shares", "level", ... or None), "score_check"
    ({cohort: shift.json entry}), "in_sample_cohorts" (never flagged), "reason" (why there is no
    reference, else None)}``. A shift.json written before in-sample cohorts were recorded, or no
    source at all, means ``["training"]``.
    """
    shift_path = Path(scores).parent / "shift.json"
    shift: dict[str, Any] | None = None
    if shift_path.is_file():
        try:
            shift = json.loads(shift_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            shift = None
    score_check = dict((shift or {}).get("cohorts") or {})
    in_sample = list((shift or {}).get("in_sample_cohorts") or [DEFAULT_TRAIN_COHORT])
    if bundle is not None:
        path = Path(bundle) / "bundle.json"
        if not path.is_file():
            raise ConfigurationError(f"bundle={bundle}: no bundle.json there. Fix: the calibrated bundle's folder, or omit bundle=.")
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"{path}: unreadable ({exc}).") from exc
        reference = ((record.get("calibration") or {}).get("reference"))
        source = f"bundle {record.get('id')} ({path})"
        if shift is not None and shift.get("bundle_id") not in (None, record.get("id")):
            score_check = {}  # scored with another bundle: its distribution check does not apply
        in_sample = in_sample_cohorts(record)
        if not reference:
            return {"source": source, "reference": None, "score_check": score_check, "in_sample_cohorts": in_sample,
                    "reason": "no reference in bundle (calibrated before the domain-shift check existed, or not calibrated)"}
        return {"source": source, "reference": {k: v for k, v in reference.items() if k != "scores"},
                "score_check": score_check, "in_sample_cohorts": in_sample, "reason": None}
    if shift is None:
        return {"source": None, "reference": None, "score_check": {}, "in_sample_cohorts": in_sample,
                "reason": f"no shift.json beside {scores} and no bundle= given"}
    ref = shift.get("reference") or {}
    if not ref.get("available"):
        return {"source": str(shift_path), "reference": None, "score_check": score_check, "in_sample_cohorts": in_sample,
                "reason": ref.get("reason") or "no reference in bundle"}
    return {"source": str(shift_path), "reference": ref, "score_check": score_check, "in_sample_cohorts": in_sample,
            "reason": None}


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else round(float(x), digits)


def cohort_share_shift(counts: Mapping[str, int], n: int, tuning: Mapping[str, float] | None,
                       config: ShareShiftConfig, alpha: float = 0.05) -> dict[str, Any]:
    """Shares with CIs, change against the tuning shares, and the share-move reasons of one cohort."""
    shares = {g: (counts.get(g, 0) / n if n else None) for g in RISK_GROUPS}
    ci = {g: [_r(v) for v in share_ci(counts.get(g, 0), n, alpha)] for g in RISK_GROUPS}
    entry: dict[str, Any] = {"n": int(n), "shares": {g: _r(v) for g, v in shares.items()}, "shares_ci": ci,
                             "tuning_shares": None, "share_change": None, "reasons": []}
    if tuning:
        entry["tuning_shares"] = {g: _r(tuning.get(g)) for g in RISK_GROUPS}
    if not tuning or n == 0:
        return entry
    change = {g: (shares[g] - float(tuning[g])) if tuning.get(g) is not None else None for g in RISK_GROUPS}
    entry["share_change"] = {g: _r(v) for g, v in change.items()}
    for g in RISK_GROUPS:
        d = change[g]
        if d is None or abs(d) <= config.max_share_change:
            continue
        lo, hi = ci[g]
        outside = lo is not None and not (lo <= float(tuning[g]) <= hi)
        if config.require_outside_ci and not outside:
            continue
        entry["reasons"].append(f"{g} share {100 * shares[g]:.0f} % vs {100 * float(tuning[g]):.0f} % on tuning "
                                f"({100 * d:+.0f} points; limit ±{100 * config.max_share_change:.0f})")
    return entry


def attach_shift(summary: dict[str, Any], loaded: Mapping[str, Any], config: ShareShiftConfig = ShareShiftConfig(),
                 alpha: float = 0.05) -> dict[str, Any]:
    """Add ``shift`` to every cohort of the analysis summary and a top-level ``shift`` block; returns the latter.

    An in-sample cohort (``loaded["in_sample_cohorts"]``, default ``["training"]``) keeps its
    numbers and the reasons it would have been flagged for, with ``in_sample`` true, a ``note``,
    and ``flagged`` false; it is not listed in the block's ``flagged``.
    """
    reference = loaded.get("reference")
    tuning = (reference or {}).get("shares")
    in_sample = [str(c) for c in (loaded.get("in_sample_cohorts") or [DEFAULT_TRAIN_COHORT])]
    flagged = []
    for name, c in summary["cohorts"].items():
        entry = cohort_share_shift(c.get("counts") or {}, int(c.get("n") or 0), tuning, config, alpha)
        check = (loaded.get("score_check") or {}).get(name)
        if check is not None:
            tiles = check.get("tiles") or {}
            entry["score_check"] = {
                "flagged": bool(check.get("flagged")), "reasons": list(check.get("reasons") or []),
                "n": check.get("n"), "score_shift_iqr": check.get("score_shift_iqr"), "ks": check.get("ks"),
                "ks_p": check.get("ks_p"),
                **{f"{k}_shift_sd": (tiles.get(k) or {}).get("shift_sd") for k in ("od_h", "od_e", "log10_sharpness")},
            }
            entry["reasons"] += [f"score check: {r}" for r in check.get("reasons") or []]
        entry["in_sample"] = name in in_sample
        if entry["in_sample"]:
            entry["note"] = in_sample_note(name)
        entry["flagged"] = bool(entry["reasons"]) and not entry["in_sample"]
        if entry["flagged"]:
            flagged.append(name)
        c["shift"] = entry
    block = {"source": loaded.get("source"), "available": reference is not None, "reason": loaded.get("reason"),
             "reference_level": (reference or {}).get("level"), "tuning_shares": tuning,
             "max_share_change": config.max_share_change, "require_outside_ci": config.require_outside_ci,
             "confidence_level": 1 - alpha, "ci_method": "wilson", "flagged": flagged,
             "in_sample_cohorts": [c for c in in_sample if c in summary["cohorts"]],
             "rule": "never refitted: a flagged cohort keeps the locked thresholds and is reported"}
    summary["shift"] = block
    return block


# --------------------------------------------------------------------------- report.html

_ALERT = 'style="background:#fdecea;border-left:4px solid #c0392b;padding:6px 12px;margin:8px 0"'
_NOTE = 'style="background:#f3f3f3;border-left:4px solid #999;padding:6px 12px;margin:8px 0"'


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f} %"


def _ci(ci: list[float | None]) -> str:
    return "–" if ci[0] is None else f"{100 * ci[0]:.0f}–{100 * ci[1]:.0f} %"


def shift_overview_html(summary: Mapping[str, Any]) -> str:
    """A warning box naming every flagged cohort (empty when the check did not run or flagged nothing)."""
    block = summary.get("shift")
    if not block:
        return ""
    if not block.get("available"):
        return (f'<p class="na">Domain-shift check: no tuning reference ({html.escape(str(block.get("reason")))}); '
                "shares are shown with their 95 % CIs only.</p>")
    in_sample = block.get("in_sample_cohorts") or []
    quiet = (f'<p class="sub">Not flagged, in-sample: {html.escape(", ".join(in_sample))} (the members were trained on '
             "it, so its scores are expected to differ from tuning; its numbers are shown in its section).</p>"
             if in_sample else "")
    if not block["flagged"]:
        return (f"<p>Domain-shift check: no cohort moved beyond the limits (shares ±{100 * block['max_share_change']:.0f} "
                "points of the tuning shares; score distribution, colour and sharpness as checked by <code>score</code>)"
                f"{'; in-sample cohorts are not flagged' if in_sample else ''}.</p>{quiet}")
    items = "".join(f"<li><b>{html.escape(name)}</b>: {html.escape('; '.join(summary['cohorts'][name]['shift']['reasons']))}</li>"
                    for name in block["flagged"])
    return (f'<div class="shift-alert" {_ALERT}><b>Domain shift:</b> these cohorts moved away from the tuning cohort. '
            "The thresholds were not refitted; their risk groups may not mean what they mean on the tuning cohort."
            f"<ul>{items}</ul></div>{quiet}")


def cohort_shift_html(entry: Mapping[str, Any] | None) -> str:
    """Shares (95 % CI) next to the tuning shares, and a warning box when the cohort is flagged."""
    if not entry:
        return ""
    tuning, change = entry.get("tuning_shares") or {}, entry.get("share_change") or {}
    rows = "".join(
        f'<tr><td class="l">{g}</td><td>{_pct(entry["shares"][g])}</td>'
        f'<td>{_ci(entry["shares_ci"][g])}</td>'
        f"<td>{_pct(tuning.get(g))}</td><td>{'–' if change.get(g) is None else f'{100 * change[g]:+.0f}'}</td></tr>"
        for g in RISK_GROUPS)
    table = ('<table><tr><th class="l">group</th><th>share</th><th>95 % CI (Wilson)</th><th>tuning share</th>'
             f"<th>change (points)</th></tr>{rows}</table>")
    check = entry.get("score_check")
    extra = ""
    if check and check.get("ks") is not None:
        extra = (f"<p>Score distribution against tuning: median shift {check.get('score_shift_iqr')} tuning IQRs, "
                 f"KS D = {check.get('ks')} (p = {check.get('ks_p')}); colour shift H {check.get('od_h_shift_sd')}, "
                 f"E {check.get('od_e_shift_sd')}, sharpness {check.get('log10_sharpness_shift_sd')} tuning SDs.</p>")
    box = ""
    if entry.get("in_sample"):
        moved = f": {html.escape('; '.join(entry['reasons']))}" if entry.get("reasons") else ""
        box = f'<div class="shift-in-sample" {_NOTE}><b>Domain-shift check</b>: {html.escape(entry["note"])}{moved}</div>'
    elif entry.get("flagged"):
        box = (f'<div class="shift-alert" {_ALERT}><b>Domain shift flagged</b> (thresholds not refitted): '
               f"{html.escape('; '.join(entry['reasons']))}</div>")
    return box + table + extra
