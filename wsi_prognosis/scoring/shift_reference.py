"""The tuning reference of the domain-shift check, recorded by `calibrate` in the calibrated bundle.

``bundle.json`` -> ``calibration.reference``: the tuning scores the thresholds were fitted on,
their median and IQR, the fitted shares, and the mean and SD across tuning slides of each tile
statistic (`shift_stats`). It lives in the calibration record because it describes the same fit.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wsi_prognosis.scoring.shift_stats import STATS_TILES

REFERENCE_VERSION = 1
#: tuning scores kept in the reference; above this, evenly spaced order statistics (quantiles)
MAX_REFERENCE_SCORES = 5000
#: colour statistics compared in tuning SDs (each stain's mean OD over tissue pixels)
COLOUR_KEYS = ("od_h", "od_e")
RISK_GROUPS = ("good", "uncertain", "poor")
#: the training cohort's name when a bundle records none (data.train_cohort's default)
DEFAULT_TRAIN_COHORT = "training"
NO_REFERENCE = ("no reference in bundle (calibrated before the domain-shift check existed, or not calibrated); "
                "Fix: calibrate again with this version to record the tuning reference")


def _finite(values: Iterable[Any]) -> np.ndarray:
    a = np.asarray([float(v) for v in values if v is not None], dtype=np.float64)
    return a[np.isfinite(a)]


def _stat_values(slide_stats: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    source = "sharpness_rel" if key == "sharpness" else key  # compared: the contrast-free sharpness
    values = _finite(s.get(source) for s in slide_stats if not s.get("error"))
    if key == "sharpness":
        values = np.log10(values[values > 0])
    return values


def build_reference(scores: Iterable[float], *, level: str, shares: Mapping[str, float], cohort: str,
                    slide_stats: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The tuning reference recorded in the calibrated bundle (``calibration.reference``).

    `scores`: the scores the thresholds were fitted on (at `level`: patient or slide); `shares`:
    the fitted shares of good / uncertain / poor; `slide_stats`: the `tile_stats` of the tuning
    slides (slides without them are left out of the tile reference, which is None without any).
    """
    s = np.sort(_finite(scores))
    if len(s) == 0:
        raise ValueError("no finite tuning scores for the reference")
    q1, median, q3 = (float(v) for v in np.percentile(s, [25, 50, 75]))
    stored = s if len(s) <= MAX_REFERENCE_SCORES else np.quantile(s, np.linspace(0, 1, MAX_REFERENCE_SCORES))
    tiles: dict[str, Any] | None = None
    usable = [st for st in slide_stats if st and not st.get("error")]
    if usable:
        stats = {}
        for key in (*COLOUR_KEYS, "od_mean", "sharpness"):
            v = _stat_values(usable, key)
            if len(v):
                stats["log10_sharpness" if key == "sharpness" else key] = {
                    "mean": round(float(v.mean()), 6), "sd": round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 6),
                    "n": int(len(v))}
        first = usable[0]
        tiles = {"n_slides": len(usable), "resolution": first.get("resolution"), "mpp": first.get("mpp"),
                 "tiles_per_slide": STATS_TILES, "stats": stats}
    return {
        "version": REFERENCE_VERSION, "cohort": cohort, "level": level, "n": int(len(s)),
        "scores": [round(float(v), 7) for v in stored], "scores_are_quantiles": bool(len(s) > MAX_REFERENCE_SCORES),
        "median": median, "q1": q1, "q3": q3, "iqr": q3 - q1,
        "shares": {g: (None if shares.get(g) is None else float(shares[g])) for g in RISK_GROUPS},
        "tiles": tiles,
    }


def bundle_reference(bundle: Any) -> dict[str, Any] | None:
    """The reference of a loaded bundle (or a bundle.json dict), None for bundles without one."""
    calibration = bundle.get("calibration") if isinstance(bundle, Mapping) else getattr(bundle, "calibration", None)
    reference = (calibration or {}).get("reference")
    return reference if isinstance(reference, Mapping) and reference.get("scores") else None


def in_sample_cohorts(bundle: Any) -> list[str]:
    """The cohorts the bundle's members were trained on: never flagged by the check, only reported.

    Their scores are in-sample (the training cohort also holds only the extremes of survival), so
    they are expected to differ from tuning. Read from each member's training config
    (``training_configs.<member>.data.train_cohort``, a loaded bundle or a bundle.json dict);
    ``["training"]`` when none is recorded.
    """
    configs = bundle.get("training_configs") if isinstance(bundle, Mapping) else getattr(bundle, "training_configs", None)
    names = set()
    for config in (configs or {}).values():
        data = config.get("data") if isinstance(config, Mapping) else None
        name = data.get("train_cohort") if isinstance(data, Mapping) else None
        if name:
            names.add(str(name))
    return sorted(names) or [DEFAULT_TRAIN_COHORT]


def in_sample_note(cohort: str) -> str:
    """What shift.json, shift.csv and report.html say about an in-sample cohort instead of a flag."""
    return f"in-sample ({cohort}): not flagged, expected to differ"


def cohort_tile_stats(records_dir: Path, cohort: str, patient_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """`tile_stats` of the ok slides of `cohort` (optionally only these patients) in a score out= folder."""
    wanted = None if patient_ids is None else {str(p) for p in patient_ids}
    found = []
    for path in sorted((Path(records_dir) / "slides").glob("*.json")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if rec.get("status") != "ok" or str(rec.get("cohort")) != cohort or not rec.get("tile_stats"):
            continue
        if wanted is not None and str(rec.get("patient_id")) not in wanted:
            continue
        found.append(rec["tile_stats"])
    return found


__all__ = ["REFERENCE_VERSION", "MAX_REFERENCE_SCORES", "COLOUR_KEYS", "RISK_GROUPS", "NO_REFERENCE",
           "DEFAULT_TRAIN_COHORT", "build_reference", "bundle_reference", "in_sample_cohorts", "in_sample_note",
           "cohort_tile_stats"]
