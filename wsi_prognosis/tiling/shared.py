"""The `tile` batch as one of several workers sharing an output folder (`claims.enabled`).

Each worker claims a slide before tiling it (`wsi_prognosis.claims`) and skips slides that others
hold; finished stores are skipped as in a single run. Each slide handled (tiled, found current or
failed) leaves its summary row in `<out>/.summary/<slide_id>.json`, saved atomically before its
claim is released. A worker with nothing left to claim waits for the slides others hold, taking
over those of a worker that died. `summary.csv` is written once, atomically, from the saved rows,
by the worker that finds every slide of the manifest handled since it started; a rerun with
nothing left to do rebuilds it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wsi_prognosis.atomic import write_text_atomic
from wsi_prognosis.claims import Claimer, ClaimSettings, check_claims_dir, claimed
from wsi_prognosis.tiling.config import TilingConfig
from wsi_prognosis.tiling.pipeline import (
    _Batch,
    _Progress,
    _remove_stale_temporaries,
    _write_summary,
    summary_columns,
)

log = logging.getLogger("wsi_prognosis.tiling.pipeline")  # the stage's lines under one logger

ROWS_DIR = ".summary"            # `<out>/.summary/<slide_id>.json`: each slide's summary row
SUMMARY_TASK = "@summary.csv"    # the claim under which one worker writes summary.csv ("@": never a slide id)


def row_path(out_dir: Path, slide_id: str) -> Path:
    return out_dir / ROWS_DIR / f"{slide_id}.json"


def save_row(out_dir: Path, result: Mapping[str, Any]) -> None:
    """The slide's summary row for the workers sharing `out_dir`, saved atomically once it is handled."""
    payload = {"row": dict(result), "finished": time.time(), "pid": os.getpid()}
    text = json.dumps(payload, default=lambda v: v.item() if hasattr(v, "item") else str(v))
    write_text_atomic(row_path(out_dir, str(result["slide_id"])), text)


def load_row(out_dir: Path, slide_id: str) -> dict[str, Any] | None:
    try:
        payload = json.loads(row_path(out_dir, slide_id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) and isinstance(payload.get("row"), dict) else None


def tile_shared(rows: list[dict[str, Any]], out_dir: Path, config: TilingConfig, workers: int,
                claims: ClaimSettings) -> list[dict[str, Any]]:
    """`tiling.pipeline.tile_rows` as one of several workers on `out_dir`; returns the whole batch's rows."""
    check_claims_dir(out_dir)  # before any work: a read-only folder or one without hard links stops here
    _remove_stale_temporaries(out_dir, claims.stale_s, out_dir / ROWS_DIR)
    started = time.time()
    ids = [str(row["slide_id"]) for row in rows]
    columns = summary_columns(config)

    def handled(saved: dict[str, Any] | None) -> bool:  # in this batch, by any worker
        return saved is not None and float(saved.get("finished") or 0) >= started

    with Claimer.from_settings(out_dir, claims, stage="tile") as claimer, \
            _Progress(len(rows), config, claimer) as progress:
        def done(slide_id: str) -> bool:
            if not handled(load_row(out_dir, slide_id)):
                return False
            progress.advance(slide_id)
            return True

        def on_result(result: dict[str, Any]) -> None:
            claimer.release(str(result["slide_id"]))  # its row is saved: the others see it done
            progress.add(result)

        with _Batch(out_dir, config, workers, on_result, shared=True) as batch:
            for row in claimed(claimer, rows, key=lambda r: str(r["slide_id"]), done=done, idle=batch.idle):
                batch.submit(row)
            batch.drain()
        saved = {slide_id: load_row(out_dir, slide_id) for slide_id in ids}
        missing = [slide_id for slide_id, s in saved.items() if not handled(s)]
        summary = [{c: s["row"].get(c) for c in columns} if s is not None and slide_id not in missing else
                   {"slide_id": slide_id, "status": "failed", "error": "no worker finished it: run the stage again"}
                   for slide_id, s in saved.items()]
        if missing:
            log.warning("%d slide(s) not finished by any worker (%s); summary.csv not written: run the stage again",
                        len(missing), ", ".join(missing[:5]))
        else:
            _publish_summary(claimer, out_dir, summary, columns, ids)
        counts = claimer.counts()
    log.info("this worker handled %d of %d slide(s) (%d tiled, %d already current, %d failed; %d tiles in %.1f s); "
             "%d held by other workers, %d taken over from stopped workers", progress.handled, len(ids),
             progress.handled - progress.reused - progress.failed, progress.reused, progress.failed, progress.tiles,
             progress.elapsed, counts["held_by_others"], counts["taken_over"])
    return summary


def _publish_summary(claimer: Claimer, out_dir: Path, rows: list[dict[str, Any]], columns: list[str],
                     ids: list[str]) -> None:
    """summary.csv for the whole batch, written once: by this worker, unless another is writing it or
    has written it after the last slide row was saved."""
    path = out_dir / "summary.csv"
    with claimer.exclusive(SUMMARY_TASK) as mine:
        if not mine:
            log.info("summary.csv: another worker is writing it")
            return
        newest = max((row_path(out_dir, slide_id).stat().st_mtime_ns for slide_id in ids), default=0)
        if path.is_file() and path.stat().st_mtime_ns > newest:
            log.info("summary.csv: already written for this batch by another worker")
            return
        _write_summary(path, rows, columns)
        log.info("summary.csv: written for all %d slide(s)", len(rows))
