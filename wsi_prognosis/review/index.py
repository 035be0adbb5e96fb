"""The scored batch as the review server sees it: one `SlideEntry` per row of scores.csv.

Built once at start-up from what `score` wrote (scores.csv, slides/<id>.json records,
slides/<id>.npz tile scores, heatmaps/<id>.png, run_score.json) and, per slide, from its tile
store (QC, fingerprint) and slide file (fingerprint). The URL never reaches the file system:
every path the server opens comes from an entry here, looked up by slide id in a dict.

One slide is a `SlideEntry` (`review.entry`, with its QC flags); filtering, sorting and paging
are pure functions on the entries (`review.query`). Their names are re-exported here.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from wsi_prognosis.review.entry import GROUPS, QcThresholds, SlideEntry, _float, _text, qc_flags, slide_area_mm2
from wsi_prognosis.review.errors import ReviewInputError
from wsi_prognosis.review.query import SORT_KEYS, Query, neighbours, page_of, select

log = logging.getLogger(__name__)


class BatchIndex:
    """All slides of one scored folder, by id, in scores.csv order."""

    def __init__(self, scores_dir: Path, entries: Sequence[SlideEntry], thresholds: Mapping[str, Any] | None,
                 qc_thresholds: QcThresholds, bundle_id: str | None = None) -> None:
        self.scores_dir = scores_dir
        self.entries = list(entries)
        self.by_id = {e.slide_id: e for e in self.entries}
        self.thresholds = dict(thresholds) if thresholds else None
        self.qc_thresholds = qc_thresholds
        self.bundle_id = bundle_id
        self.cohorts = sorted({e.cohort for e in self.entries})
        self.statuses = sorted({e.status for e in self.entries})
        self._lock = threading.Lock()
        self._checker: threading.Thread | None = None
        self._stop = threading.Event()

    def get(self, slide_id: str) -> SlideEntry | None:
        """The entry for an id from a URL, or None: the only way a URL picks a slide."""
        return self.by_id.get(slide_id) if isinstance(slide_id, str) else None

    # ---------------------------------------------------------------- availability
    def check(self, entry: SlideEntry) -> SlideEntry:
        """Read the tile store's QC and fingerprint and compare the slide file's fingerprint (once)."""
        with self._lock:
            if entry.checked:
                return entry
            _check_entry(entry, self.qc_thresholds)
            return entry

    def check_all_in_background(self) -> None:
        """Check every slide on a daemon thread, in order, so the batch page fills in QC and availability."""
        if self._checker is not None:
            return

        def work() -> None:
            for entry in self.entries:
                if self._stop.is_set():
                    return
                try:
                    self.check(entry)
                except Exception:  # a checker must never die on one slide; the entry says why
                    log.exception("%s: checking the slide failed", entry.slide_id)

        self._checker = threading.Thread(target=work, name="review-check", daemon=True)
        self._checker.start()

    def wait_checked(self, timeout: float | None = None) -> bool:
        if self._checker is not None:
            self._checker.join(timeout)
        return all(e.checked for e in self.entries)

    def stop(self) -> None:
        self._stop.set()


def _check_entry(entry: SlideEntry, qc_thresholds: QcThresholds) -> None:
    from wsi_prognosis.errors import WsiPrognosisError

    notes = list(entry.notes)
    if entry.tile_store is not None and entry.tile_store.is_file():
        try:
            from wsi_prognosis.tiling import open_tile_store

            with open_tile_store(entry.tile_store) as store:
                if not entry.qc:
                    entry.qc = dict(store.qc)
                entry.expected_fingerprint = store.fingerprint
                entry.dimensions = (int(store.dimensions[0]), int(store.dimensions[1]))
                if entry.mpp is None:
                    entry.mpp = store.mpp
                entry.flags = qc_flags(entry.qc, qc_thresholds, slide_area_mm2(entry.dimensions, store.mpp))
        except WsiPrognosisError as exc:
            notes.append(f"tile store unreadable ({exc}): QC and the slide's fingerprint are unknown")
    elif entry.tile_store is not None:
        notes.append(f"tile store {entry.tile_store.name} not found: the slide cannot be checked against what was scored")
    if entry.path is None:
        entry.available, entry.reason = False, "no slide path in the score record or the manifest"
    elif not entry.path.is_file():
        entry.available, entry.reason = False, (
            f"slide file not found at {entry.path} (moved or deleted since scoring). "
            "Fix: put it back, or pass manifest=CSV with its new path.")
    else:
        try:
            from wsi_prognosis.slides import slide_fingerprint

            current = slide_fingerprint(entry.path)
        except (WsiPrognosisError, OSError) as exc:
            entry.available, entry.reason = False, f"slide file cannot be read ({exc})"
        else:
            if entry.expected_fingerprint is not None and current != entry.expected_fingerprint:
                entry.available, entry.reason = False, (
                    f"slide file {entry.path.name} changed since it was scored: the scores are not about these "
                    f"pixels. Fix: score it again. (fingerprint now {current}, when tiled {entry.expected_fingerprint})")
            else:
                entry.available, entry.reason = True, ""
    entry.notes = notes
    entry.checked = True


# -------------------------------------------------------------------- building the index


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _qc_from_summaries(folders: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """QC per slide id from the `tile` summaries (summary.csv) beside the tile stores: one read per folder."""
    import pandas as pd

    out: dict[str, dict[str, Any]] = {}
    for folder in folders:
        path = folder / "summary.csv"
        if not path.is_file():
            continue
        try:
            table = pd.read_csv(path, dtype={"slide_id": str})
        except (OSError, ValueError, pd.errors.ParserError):
            continue
        keep = [c for c in ("tissue_mm2", "pen_fraction", "blur", "warnings") if c in table.columns]
        for row in table[["slide_id", *keep]].to_dict("records"):
            out[str(row["slide_id"])] = {k: (None if isinstance(row[k], float) and math.isnan(row[k]) else row[k])
                                         for k in keep}
    return out


def build_index(scores_dir: str | Path, manifest: str | Path | None = None,
                qc_thresholds: QcThresholds = QcThresholds()) -> BatchIndex:
    """Index a score output folder. `manifest` (optional) supplies slide paths that moved since scoring.

    Raises `ReviewInputError` when the folder has no readable scores.csv.
    """
    import pandas as pd

    scores_dir = Path(scores_dir)
    csv = scores_dir / "scores.csv"
    if not scores_dir.is_dir():
        raise ReviewInputError(f"scores={scores_dir}: not a folder. Fix: the out= folder of `wsi-prognosis score`.")
    if not csv.is_file():
        raise ReviewInputError(f"{csv}: not found. Fix: scores= must be the out= folder of a finished "
                               "`wsi-prognosis score` run (or `merge` the shards first).")
    try:
        table = pd.read_csv(csv, dtype={"slide_id": str, "patient_id": str, "cohort": str, "error": str,
                                        "risk_group": str, "status": str}, keep_default_na=False, na_values=[""])
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ReviewInputError(f"{csv}: unreadable ({exc}). Fix: rerun `wsi-prognosis score`.") from exc
    missing = {"slide_id", "score", "status"} - set(table.columns)
    if missing:
        raise ReviewInputError(f"{csv}: missing column(s) {sorted(missing)}: not a scores.csv of this project. "
                               "Fix: point scores= at the out= folder of `wsi-prognosis score`.")
    run = _read_json(scores_dir / "run_score.json") or {}
    thresholds = run.get("thresholds")
    manifest_paths: dict[str, Path] = {}
    if manifest is not None:
        from wsi_prognosis.cohort import read_manifest_rows

        manifest_paths = {str(r["slide_id"]): Path(r["path"]) for r in read_manifest_rows(manifest)}
    member_cols = [c for c in table.columns if c.startswith("member_")]

    entries: list[SlideEntry] = []
    store_folders: set[Path] = set()
    seen: set[str] = set()
    for row in table.to_dict("records"):
        slide_id = _text(row["slide_id"])
        if not slide_id or slide_id in seen:  # a duplicate row would make two pages for one id
            continue
        seen.add(slide_id)
        record = _read_json(scores_dir / "slides" / f"{slide_id}.json") if _safe_id(slide_id) else None
        record = record or {}
        members = {c[len("member_"):]: v for c in member_cols if (v := _float(row.get(c))) is not None}
        score = _float(row.get("score"))
        entry = SlideEntry(
            slide_id=slide_id, patient_id=_text(row.get("patient_id")), cohort=_text(row.get("cohort")),
            score=score, risk_group=_text(row.get("risk_group")),
            n_tiles={"10x": int(_float(row.get("n_tiles_10x")) or 0), "40x": int(_float(row.get("n_tiles_40x")) or 0)},
            status=_text(row.get("status")) or "unknown", error=_text(row.get("error")), members=members,
            mpp=_float(record.get("mpp")),
        )
        if slide_id in manifest_paths:
            entry.path = manifest_paths[slide_id]
        elif record.get("path"):
            entry.path = Path(str(record["path"]))
            if not entry.path.is_absolute():
                entry.path = (scores_dir / entry.path).resolve()
        if record.get("tile_store"):
            entry.tile_store = Path(str(record["tile_store"]))
            store_folders.add(entry.tile_store.parent)
        else:
            default_store = scores_dir / "tiles" / f"{slide_id}.h5"
            if default_store.is_file():
                entry.tile_store = default_store
                store_folders.add(default_store.parent)
        if _safe_id(slide_id):
            heatmap = scores_dir / "heatmaps" / f"{slide_id}.png"
            entry.heatmap = heatmap if heatmap.is_file() else None
            npz = scores_dir / "slides" / f"{slide_id}.npz"
            entry.tile_scores = npz if npz.is_file() else None
        if entry.tile_scores is None:
            entry.notes.append("no tile scores for this slide"
                               + (f" (scoring failed: {entry.error})" if entry.status != "ok" and entry.error else
                                  " (slides/<id>.npz missing)") + ": the viewer shows the slide without the heatmap")
        entries.append(entry)
    qc = _qc_from_summaries(store_folders)
    for entry in entries:
        if entry.slide_id in qc:
            entry.qc = qc[entry.slide_id]
            entry.flags = _flags(entry, qc_thresholds)
    return BatchIndex(scores_dir, entries, thresholds, qc_thresholds, bundle_id=run.get("bundle_id"))


def _flags(entry: SlideEntry, thresholds: QcThresholds) -> list[str]:
    """QC flags of an entry at start-up; the slide's area is read from its tile store only when the
    tissue is below the absolute "little tissue" area (the only case it can change the flag)."""
    tissue = _float(entry.qc.get("tissue_mm2"))
    if tissue is None or tissue >= thresholds.little_tissue_mm2:
        return qc_flags(entry.qc, thresholds)
    return qc_flags(entry.qc, thresholds, _store_area_mm2(entry))


def _store_area_mm2(entry: SlideEntry) -> float | None:
    """The slide's scanned area from its tile store's level-0 size and µm/px (None when unreadable)."""
    from wsi_prognosis.errors import WsiPrognosisError
    from wsi_prognosis.tiling import open_tile_store

    if entry.tile_store is None or not entry.tile_store.is_file():
        return None
    try:
        with open_tile_store(entry.tile_store) as store:
            entry.dimensions = (int(store.dimensions[0]), int(store.dimensions[1]))
            mpp = float(store.mpp)
    except (WsiPrognosisError, OSError, KeyError, ValueError):
        return None
    return slide_area_mm2(entry.dimensions, mpp)


def _safe_id(slide_id: str) -> bool:
    """A slide id that is a plain file name (the manifest guarantees it; scores.csv is checked again)."""
    return bool(slide_id) and slide_id not in {".", ".."} and not any(c in slide_id for c in "/\\\0")


__all__ = ["BatchIndex", "build_index", "GROUPS", "SORT_KEYS", "QcThresholds", "SlideEntry", "qc_flags", "Query", "select",
           "page_of", "neighbours"]
