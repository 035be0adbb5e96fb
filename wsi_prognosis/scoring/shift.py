"""The domain-shift check: each scored cohort against the tuning cohort's reference in the bundle.

A model whose thresholds were fitted on one lab's slides can move a whole cohort into one risk
group when the stain, the scanner or the focus differ. The check never refits anything: it
measures how far a cohort moved and says so (``shift.json``, ``shift.csv``, a warning per
flagged cohort); what to do about it is a person's decision.

Three pieces, one module each (every name is importable from here too):

- **tile statistics per slide** (`shift_stats`: `tile_stats`, `slide_tile_stats`): on a fixed,
  evenly spaced subsample of the slide's tiles at the bundle's coarsest resolution (10x), the mean optical
  density (OD = -ln((I + 1) / 256)) of haematoxylin and eosin over tissue pixels, from colour
  deconvolution with scikit-image's H&E(DAB) matrix (Ruifrok & Johnston), and the sharpness:
  the mean variance of the Laplacian of the gray tiles (`wsi_prognosis.tissue.blur_score`), and
  that divided per tile by the tile's gray variance (``sharpness_rel``), which a denser or paler
  stain leaves unchanged (the raw variance grows with stain contrast); the check compares the latter.
  `score` stores them in each slide's record (``slides/<id>.json``, key ``tile_stats``), so a
  resumed run keeps them; records written before the check existed are filled in on the next
  run (`backfill_tile_stats`).
- **the reference** (`shift_reference`: `build_reference`): written by `calibrate` into the new
  bundle's calibration record (``bundle.json`` -> ``calibration.reference``): the tuning scores the
  thresholds were fitted on (all of them up to `MAX_REFERENCE_SCORES`, enough for a two-sample
  KS test), their median and IQR, the tuning shares, and the mean and SD across tuning slides of
  each tile statistic. It lives in the calibration record because it describes the same fit;
  it is part of the bundle id like the rest of it.
- **the comparison** (`shift_compare`: `cohort_shift`; here: `shift_report`, `run_shift_check`):
  per cohort, at the reference's level (patient scores by default): the median score shift in
  tuning IQRs, the two-sample KS statistic and p (``scipy.stats.ks_2samp``) against the tuning
  scores, the shift of each stain's mean OD and of log10 sharpness in tuning between-slide SDs,
  and the shares. A cohort is flagged when one of them passes its limit (`ShiftLimits`,
  ``shift.*`` in score.yaml) and the move is also significant at ``shift.alpha`` (Mann-Whitney
  for the median, the KS p, a z test of the cohort's mean tile statistic), so a cohort of a few
  slides is not flagged on noise.

The cohorts the bundle's members were trained on (``data.train_cohort`` of their training
configs, "training" by default; `in_sample_cohorts`) are compared and reported like the others
but never flagged: their scores are in-sample, and the training cohort holds only the extremes
of survival, so they are expected to differ from tuning ("in-sample (training): not flagged,
expected to differ").

A bundle without a reference (calibrated before this check, or not calibrated) still scores;
shift.json then says "no reference in bundle" and flags nothing.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from wsi_prognosis.scoring.shift_compare import (COLOUR_SD_FLOOR_REL, SHARPNESS_SD_FLOOR_LOG10, ShiftLimits,
                                                 _cohort_tile_means, cohort_shift)
from wsi_prognosis.scoring.shift_reference import (COLOUR_KEYS, DEFAULT_TRAIN_COHORT, MAX_REFERENCE_SCORES, NO_REFERENCE,
                                                   REFERENCE_VERSION, RISK_GROUPS, build_reference, bundle_reference,
                                                   cohort_tile_stats, in_sample_cohorts, in_sample_note)
from wsi_prognosis.scoring.shift_stats import (STATS_TILES, TISSUE_OD, backfill_tile_stats, slide_tile_stats,
                                               stats_resolution, subsample_indices, tile_stats)

log = logging.getLogger(__name__)


def shift_report(bundle: Any, slides: Any, patients: Any, slide_records: Mapping[str, Mapping[str, Any]],
                 limits: ShiftLimits = ShiftLimits()) -> dict[str, Any]:
    """The content of shift.json: every cohort of `slides` (scores.csv) against the bundle's reference.

    `patients`: patient_scores.csv (used when the reference is patient-level); `slide_records`:
    slide_id -> record (for `tile_stats`). The cohorts the members were trained on
    (`in_sample_cohorts`) are compared and reported like any other, but never flagged: ``in_sample``
    is true, ``note`` says so, and ``reasons`` still lists every limit they passed.
    """
    reference = bundle_reference(bundle)
    in_sample = in_sample_cohorts(bundle)
    ok = slides[slides["status"] == "ok"]
    cohorts = sorted({str(c) for c in slides["cohort"]})
    bundle_id = bundle.get("id") if isinstance(bundle, Mapping) else getattr(bundle, "id", None)
    report: dict[str, Any] = {"version": REFERENCE_VERSION, "bundle_id": bundle_id,
                              "limits": asdict(limits), "in_sample_cohorts": in_sample}
    if reference is None:
        report["reference"] = {"available": False, "reason": NO_REFERENCE}
    else:
        report["reference"] = {"available": True, **{k: v for k, v in reference.items() if k != "scores"}}
    level = (reference or {}).get("level", "patient")
    table = patients if level == "patient" and patients is not None else ok
    report["cohorts"] = {}
    for cohort in cohorts:
        stats = [slide_records.get(sid, {}).get("tile_stats") or {} for sid in ok.loc[ok["cohort"].astype(str) == cohort, "slide_id"]]
        rows = table[table["cohort"].astype(str) == cohort]
        if reference is None:
            entry = {"n": int(len(rows)), "level": level, "tiles": _cohort_tile_means(stats), "flagged": False,
                     "reasons": [], "note": "no reference in bundle"}
        else:
            groups = rows["risk_group"].astype(str).tolist() if "risk_group" in rows else None
            entry = cohort_shift(reference, rows["score"].to_numpy(float), stats, limits, groups)
        entry["n_slides"] = int((ok["cohort"].astype(str) == cohort).sum())
        entry["in_sample"] = cohort in in_sample
        if entry["in_sample"]:  # trained on: its scores are expected to differ from tuning
            entry["flagged"] = False
            entry["note"] = "; ".join(filter(None, [in_sample_note(cohort), entry.get("note")]))
        report["cohorts"][cohort] = entry
    report["flagged"] = [c for c, e in report["cohorts"].items() if e["flagged"]]
    return report


CSV_COLUMNS = ("cohort", "n", "n_slides", "level", "median", "score_shift_iqr", "ks", "ks_p", "od_h_shift_sd",
               "od_e_shift_sd", "sharpness_shift_sd", "flagged", "reasons")


def _reasons_text(entry: Mapping[str, Any]) -> str:
    """shift.csv's `reasons`: why a cohort is flagged, or its note (an in-sample cohort: the note, then what moved)."""
    parts = ([entry["note"]] if entry.get("in_sample") and entry.get("note") else []) + list(entry.get("reasons") or [])
    return "; ".join(parts) or entry.get("note", "")


def shift_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """shift.csv rows: one per cohort."""
    rows = []
    for cohort, e in report["cohorts"].items():
        tiles = e.get("tiles") or {}
        rows.append({
            "cohort": cohort, "n": e.get("n"), "n_slides": e.get("n_slides"), "level": e.get("level"),
            "median": e.get("median"), "score_shift_iqr": e.get("score_shift_iqr"), "ks": e.get("ks"),
            "ks_p": e.get("ks_p"), "od_h_shift_sd": (tiles.get("od_h") or {}).get("shift_sd"),
            "od_e_shift_sd": (tiles.get("od_e") or {}).get("shift_sd"),
            "sharpness_shift_sd": (tiles.get("log10_sharpness") or {}).get("shift_sd"),
            "flagged": bool(e.get("flagged")), "reasons": _reasons_text(e),
        })
    return rows


def _json_safe(value: Any) -> Any:
    """NaN / inf -> None, numpy scalars -> Python, recursively (shift.json is strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_shift_report(out: Path, report: Mapping[str, Any]) -> tuple[Path, Path]:
    """shift.json and shift.csv in `out`, atomically; a warning per flagged cohort."""
    import csv
    import io

    from wsi_prognosis.atomic import write_text_atomic

    out = Path(out)
    json_path, csv_path = out / "shift.json", out / "shift.csv"
    write_text_atomic(json_path, json.dumps(_json_safe(report), indent=1, allow_nan=False) + "\n")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in shift_rows(report):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    write_text_atomic(csv_path, buffer.getvalue())
    if not report["reference"]["available"]:
        log.warning("domain-shift check: %s", report["reference"]["reason"])
    for cohort in report["flagged"]:
        log.warning("domain shift: cohort %r moved away from the tuning cohort: %s. The thresholds are NOT refitted; "
                    "read its risk groups with care (shift.json).", cohort, "; ".join(report["cohorts"][cohort]["reasons"]))
    for cohort, entry in report["cohorts"].items():
        if entry.get("in_sample") and entry.get("reasons"):
            log.info("%s: %s", entry["note"], "; ".join(entry["reasons"]))
    return json_path, csv_path


def run_shift_check(bundle: Any, out: Path, slides: Any, patients: Any, limits: ShiftLimits | None = None) -> dict[str, Any]:
    """Read the records of `slides` in `out` (filling in missing tile statistics), build and write the report."""
    from wsi_prognosis.scoring import records

    limits = limits or ShiftLimits()
    try:
        recs: dict[str, dict[str, Any]] = {}
        for sid in slides.loc[slides["status"] == "ok", "slide_id"]:
            rec = records.read_record(out, str(sid))
            if rec is not None:
                recs[str(sid)] = backfill_tile_stats(out, rec)
        report = shift_report(bundle, slides, patients, recs, limits)
    except Exception as exc:  # noqa: BLE001 - the scores are written; a failed check is reported, not fatal
        log.exception("domain-shift check failed")
        report = {"version": REFERENCE_VERSION, "error": f"{type(exc).__name__}: {exc}", "limits": asdict(limits),
                  "in_sample_cohorts": [], "reference": {"available": False, "reason": f"the check failed: {exc}"},
                  "cohorts": {}, "flagged": []}
    write_shift_report(out, report)
    return report


def merged_shift_check(folders: Sequence[str | Path], out: Path) -> dict[str, Any] | None:
    """The check after `merge`: the bundle (as recorded by the shard runs) against the merged tables."""
    import pandas as pd

    from wsi_prognosis.scoring.merge import find_shard_runs

    runs = find_shard_runs([Path(f) for f in folders])
    if not runs:
        return None
    run = runs[0].record
    bundle: dict[str, Any] = {"id": run.get("bundle_id"), "calibration": None}
    path = Path(str(run.get("bundle_dir", ""))) / "bundle.json"
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
        if recorded.get("id") == run.get("bundle_id"):
            bundle = recorded
        else:
            log.warning("%s: not the bundle the shards were scored with; the shift check runs without a reference", path)
    except (OSError, ValueError) as exc:
        log.warning("bundle of the shard runs unreadable (%s); the shift check runs without a reference", exc)
    limits = ShiftLimits.from_mapping(((run.get("config") or {}).get("shift")))
    dtypes = {"slide_id": str, "patient_id": str, "cohort": str}
    slides = pd.read_csv(Path(out) / "scores.csv", dtype=dtypes, float_precision="round_trip")
    patients = pd.read_csv(Path(out) / "patient_scores.csv", dtype=dtypes, float_precision="round_trip")
    return run_shift_check(bundle, Path(out), slides, patients, limits)


__all__ = ["run_shift_check", "merged_shift_check", "shift_report", "shift_rows", "write_shift_report", "CSV_COLUMNS",
           "ShiftLimits", "cohort_shift", "build_reference", "bundle_reference", "in_sample_cohorts", "in_sample_note",
           "DEFAULT_TRAIN_COHORT", "cohort_tile_stats", "tile_stats",
           "slide_tile_stats", "backfill_tile_stats", "subsample_indices", "stats_resolution", "STATS_TILES", "TISSUE_OD",
           "REFERENCE_VERSION", "MAX_REFERENCE_SCORES", "COLOUR_KEYS", "RISK_GROUPS", "NO_REFERENCE",
           "COLOUR_SD_FLOOR_REL", "SHARPNESS_SD_FLOOR_LOG10"]
