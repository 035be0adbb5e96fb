"""Join sharded `score` runs into one scores.csv / patient_scores.csv (same bytes as one run).

Each shard leaves `run_score.shard-<i>-of-<n>.json` (bundle id, manifest path and hash,
thresholds, patient aggregation) next to its per-slide records. `merge_shards` checks that
the shards belong together and cover the manifest, copies their per-slide outputs into
`out`, and rebuilds the tables from the records with the same function a single run uses.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from wsi_prognosis.errors import ConfigurationError, ManifestError
from wsi_prognosis.scoring import records
from wsi_prognosis.scoring.aggregate import patient_table, slide_table, write_table
from wsi_prognosis.scoring.shard import Shard, select_shard

log = logging.getLogger(__name__)

SHARD_RECORD = re.compile(r"^run_score\.shard-(\d+)-of-(\d+)\.json$")
EXPORT_DIRS = ("heatmaps", "geojson")


def load_score_manifest(manifest: str | Path, cohort: str | None) -> pd.DataFrame:
    """A manifest CSV or a folder of slides (one patient per slide), optionally one cohort's rows."""
    from wsi_prognosis.cohort import manifest_from_folder, read_manifest

    path = Path(manifest)
    table = manifest_from_folder(path) if path.is_dir() else read_manifest(path)
    if cohort is not None:
        table = table[table["cohort"] == cohort].reset_index(drop=True)
        if table.empty:
            raise ManifestError(f"{path}: no rows with cohort={cohort!r}. Fix: check the cohort name or drop cohort=.")
    return table


@dataclass(frozen=True)
class ShardRun:
    folder: Path
    shard: Shard
    record: dict[str, Any]


def find_shard_runs(folders: Sequence[Path]) -> list[ShardRun]:
    runs = []
    for folder in folders:
        for path in sorted(Path(folder).glob("run_score.shard-*-of-*.json")):
            match = SHARD_RECORD.match(path.name)
            if not match:
                continue
            record = json.loads(path.read_text(encoding="utf-8"))
            runs.append(ShardRun(Path(folder), Shard(int(match.group(1)), int(match.group(2))), record))
    return runs


def _same(runs: Sequence[ShardRun], key: str) -> Any:
    values = {json.dumps(r.record.get(key), sort_keys=True) for r in runs}
    if len(values) != 1:
        found = sorted({f"{r.folder}/{r.shard.label}: {r.record.get(key)}" for r in runs})
        raise ConfigurationError(f"the shards disagree on {key}: {found[:4]}. Fix: merge only shards of one score run.")
    return runs[0].record.get(key)


def _copy_slide_outputs(src: Path, out: Path, slide_id: str) -> None:
    if src.resolve() == out.resolve():
        return
    for path in (records.record_path(src, slide_id), records.tile_scores_path(src, slide_id),
                 src / "heatmaps" / f"{slide_id}.png", src / "geojson" / f"{slide_id}.geojson"):
        if path.is_file():
            target = out / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.name.endswith(".json"):
                continue  # records last, below
            shutil.copyfile(path, target)
    record = records.record_path(src, slide_id)
    if record.is_file():
        shutil.copyfile(record, records.record_path(out, slide_id))


def merge_shards(folders: Sequence[str | Path], out: str | Path, *, allow_incomplete: bool = False) -> dict[str, Any]:
    """Merge the shard runs found in `folders` into `out`; return a summary for the run record."""
    out = Path(out)
    folders = [Path(f) for f in folders]
    runs = find_shard_runs(folders)
    if not runs:
        raise ConfigurationError(
            f"no shard run records (run_score.shard-I-of-N.json) in {[str(f) for f in folders]}. "
            "Fix: point inputs= at the out= folders of `score shard=I/N` runs."
        )
    counts = sorted({r.shard.count for r in runs})
    if len(counts) != 1:
        raise ConfigurationError(f"the shard runs were split {counts} ways. Fix: merge only shards of one score run.")
    count = counts[0]
    bundle_id = _same(runs, "bundle_id")
    thresholds = _same(runs, "thresholds")
    aggregation = _same(runs, "patient_aggregation")
    members = _same(runs, "members")
    cohort = _same(runs, "cohort")
    manifest_path = _same(runs, "manifest")
    manifest_sha = _same(runs, "manifest_sha256")
    by_index: dict[int, ShardRun] = {}
    for run in runs:
        by_index.setdefault(run.shard.index, run)
    missing = sorted(set(range(count)) - set(by_index))
    if missing and not allow_incomplete:
        raise ConfigurationError(
            f"shard(s) {missing} of {count} have no run record in {[str(f) for f in folders]}. "
            "Fix: run them (score shard=I/N with the same out=) or pass allow_incomplete=true."
        )
    from wsi_prognosis.provenance import file_sha256

    if Path(manifest_path).is_file() and manifest_sha and file_sha256(manifest_path) != manifest_sha:
        raise ManifestError(f"{manifest_path}: changed since the shards were scored. Fix: rerun the shards.")
    manifest = load_score_manifest(manifest_path, cohort)
    found: dict[str, dict[str, Any]] = {}
    for index, run in sorted(by_index.items()):
        for slide_id in select_shard(manifest, Shard(index, count))["slide_id"]:
            if records.read_record(run.folder, slide_id) is None:
                continue
            _copy_slide_outputs(run.folder, out, slide_id)
            rec = records.read_record(out, slide_id)
            if rec is not None:
                found[slide_id] = rec
    slides = slide_table(manifest, found, members, thresholds)
    write_table(slides, out / "scores.csv")
    patients = patient_table(slides, aggregation, thresholds)
    write_table(patients, out / "patient_scores.csv")
    n_failed = int((slides["status"] != "ok").sum())
    log.info("merged %d shard(s): %d slides, %d failed", len(by_index), len(slides), n_failed)
    return {"bundle_id": bundle_id, "shards": count, "shards_found": sorted(by_index), "slides": len(slides),
            "failed": n_failed, "manifest": manifest_path}

