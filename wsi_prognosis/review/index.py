"""The scored batch as the review server sees it: one `SlideEntry` per row of scores.csv.

Built once at start-up from what `score` wrote (scores.csv, slides/<id>.json records,
slides/<id>.npz tile scores, heatmaps/<id>.png, run_score.json) and, per slide, from its tile
store (QC, fingerprint) and slide file (fingerprint). The URL never reaches the file system:
every path the server opens comes from an entry here, looked up by slide id in a dict.

Filtering, sorting and paging are pure functions on the entries (`select`), shared by the batch
page and the viewer's previous / next links, so both agree on "the current filter".
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsi_prognosis.review.errors import ReviewInputError

log = logging.getLogger(__name__)

GROUPS = ("good", "uncertain", "poor")
SORT_KEYS = ("slide_id", "patient_id", "cohort", "score", "risk_group", "n_tiles_10x", "n_tiles_40x", "spread",
             "status", "qc")


@dataclass(frozen=True)
class QcThresholds:
    """When a slide gets a QC flag (the tile store's QC values against these)."""

    blur_below: float = 300.0          # tissue.BLUR_WARNING_THRESHOLD: variance of the Laplacian
    pen_above: float = 0.05            # tiling.pipeline.PEN_WARNING_FRACTION: share of tissue area
    little_tissue_mm2: float = 0.1     # real resections have tens to hundreds of mm²


@dataclass
class SlideEntry:
    """One scored slide. `available` / `reason` say whether its pixels may be served."""

    slide_id: str
    patient_id: str
    cohort: str
    score: float | None
    risk_group: str
    n_tiles: dict[str, int]
    status: str
    error: str
    members: dict[str, float]
    path: Path | None = None
    tile_store: Path | None = None
    heatmap: Path | None = None
    tile_scores: Path | None = None
    mpp: float | None = None
    dimensions: tuple[int, int] | None = None   # level-0 width, height (from the tile store)
    qc: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    available: bool = False
    reason: str = "not checked yet"
    checked: bool = False
    notes: list[str] = field(default_factory=list)
    expected_fingerprint: str | None = None

    @property
    def spread(self) -> float | None:
        """Member disagreement: max - min of the member slide scores (None with < 2 members)."""
        values = [v for v in self.members.values() if v is not None and not math.isnan(v)]
        return max(values) - min(values) if len(values) >= 2 else None

    def sort_value(self, key: str) -> Any:
        if key == "spread":
            return self.spread
        if key == "qc":
            return len(self.flags)
        if key in ("n_tiles_10x", "n_tiles_40x"):
            return self.n_tiles.get(key.rsplit("_", 1)[1], 0)
        return getattr(self, key)

    def summary(self) -> dict[str, Any]:
        """What a page may show: no file paths, except inside `reason` where the fix needs one."""
        return {
            "slide_id": self.slide_id, "patient_id": self.patient_id, "cohort": self.cohort, "score": self.score,
            "risk_group": self.risk_group, "n_tiles_10x": self.n_tiles.get("10x", 0),
            "n_tiles_40x": self.n_tiles.get("40x", 0), "status": self.status, "error": self.error,
            "members": self.members, "spread": self.spread, "flags": list(self.flags), "available": self.available,
            "reason": self.reason, "checked": self.checked, "notes": list(self.notes),
            "has_tile_scores": self.tile_scores is not None, "has_heatmap": self.heatmap is not None,
        }


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def qc_flags(qc: Mapping[str, Any], thresholds: QcThresholds) -> list[str]:
    """`blur`, `pen`, `little tissue` from a tile store's QC record (missing values raise no flag)."""
    flags = []
    blur = _float(qc.get("blur"))
    if blur is not None and blur < thresholds.blur_below:
        flags.append("blur")
    pen = _float(qc.get("pen_fraction"))
    if pen is not None and pen > thresholds.pen_above:
        flags.append("pen")
    tissue = _float(qc.get("tissue_mm2"))
    if tissue is not None and tissue < thresholds.little_tissue_mm2:
        flags.append("little tissue")
    return flags


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
                    entry.flags = qc_flags(entry.qc, qc_thresholds)
                entry.expected_fingerprint = store.fingerprint
                entry.dimensions = (int(store.dimensions[0]), int(store.dimensions[1]))
                if entry.mpp is None:
                    entry.mpp = store.mpp
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
            entry.flags = qc_flags(entry.qc, qc_thresholds)
    return BatchIndex(scores_dir, entries, thresholds, qc_thresholds, bundle_id=run.get("bundle_id"))


def _safe_id(slide_id: str) -> bool:
    """A slide id that is a plain file name (the manifest guarantees it; scores.csv is checked again)."""
    return bool(slide_id) and slide_id not in {".", ".."} and not any(c in slide_id for c in "/\\\0")


# -------------------------------------------------------------------- filter, sort, page


@dataclass(frozen=True)
class Query:
    """The batch page's current view: filters, sort and page (all from the query string)."""

    group: str = ""
    cohort: str = ""
    status: str = ""
    q: str = ""
    sort: str = ""
    desc: bool = False
    page: int = 1
    per_page: int = 100

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> Query:
        """Unknown or malformed values fall back to the defaults (a query string never raises)."""
        def text(key: str) -> str:
            return str(params.get(key, "") or "")[:200]

        sort = text("sort")
        try:
            page = max(1, min(int(text("page") or 1), 1_000_000))
        except ValueError:
            page = 1
        try:
            per_page = max(10, min(int(text("per_page") or 100), 1000))
        except ValueError:
            per_page = 100
        return cls(group=text("group"), cohort=text("cohort"), status=text("status"), q=text("q").strip(),
                   sort=sort if sort in SORT_KEYS else "", desc=text("desc") in {"1", "true", "yes"}, page=page,
                   per_page=per_page)

    def params(self, **changes: Any) -> dict[str, str]:
        """Query-string parameters of this view (defaults left out), with `changes` applied."""
        values = {"group": self.group, "cohort": self.cohort, "status": self.status, "q": self.q, "sort": self.sort,
                  "desc": "1" if self.desc else "", "page": "" if self.page == 1 else str(self.page),
                  "per_page": "" if self.per_page == 100 else str(self.per_page)}
        values.update({k: ("" if v is None else str(v)) for k, v in changes.items()})
        return {k: v for k, v in values.items() if v}

    def filters(self) -> dict[str, str]:
        """Only the filter and sort parameters (what the viewer's previous / next follow)."""
        return {k: v for k, v in self.params(page="", per_page="").items()}


def select(entries: Sequence[SlideEntry], query: Query) -> list[SlideEntry]:
    """Entries passing the filters, sorted (missing values last either way; ties keep scores.csv order)."""
    needle = query.q.lower()
    out = []
    for e in entries:
        if query.group and (e.risk_group or "none") != query.group:
            continue
        if query.cohort and e.cohort != query.cohort:
            continue
        if query.status and e.status != query.status:
            continue
        if needle and not any(needle in s.lower() for s in (e.slide_id, e.patient_id, e.cohort, e.error)):
            continue
        out.append(e)
    if query.sort:
        present = [e for e in out if e.sort_value(query.sort) is not None]
        absent = [e for e in out if e.sort_value(query.sort) is None]
        present.sort(key=lambda e: e.sort_value(query.sort), reverse=query.desc)
        out = present + absent
    return out


def page_of(selected: Sequence[SlideEntry], query: Query) -> tuple[list[SlideEntry], int, int]:
    """(rows of the query's page, that page number clamped to the range, number of pages)."""
    pages = max(1, -(-len(selected) // query.per_page))
    page = min(query.page, pages)
    start = (page - 1) * query.per_page
    return list(selected[start:start + query.per_page]), page, pages


def neighbours(selected: Sequence[SlideEntry], slide_id: str) -> tuple[SlideEntry | None, SlideEntry | None, int]:
    """(previous, next, 1-based position) of `slide_id` in the selection; position 0 when not in it."""
    for i, e in enumerate(selected):
        if e.slide_id == slide_id:
            return (selected[i - 1] if i > 0 else None, selected[i + 1] if i + 1 < len(selected) else None, i + 1)
    return None, None, 0
