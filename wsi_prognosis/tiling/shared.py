"""The `tile` batch as one of several workers sharing an output folder (`claims.enabled`).

Each worker claims a slide before tiling it (`wsi_prognosis.claims`) and skips slides that others
hold; finished stores are skipped as in a single run. Each slide handled (tiled, found current or
failed) leaves its summary row in `<out>/.summary/<slide_id>.json` (`claims.rows`), saved atomically
before its claim is released. A worker with nothing left to claim waits for the slides others hold, taking
over those of a worker that died. `summary.csv` is written once, atomically, from the saved rows,
by the worker that finds every slide of the manifest handled since it started; a rerun with
nothing left to do rebuilds it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from wsi_prognosis.claims import Claimer, ClaimSettings, check_claims_dir, claimed
from wsi_prognosis.claims.rows import (
    ROWS_DIR,
    handled_since,
    load_row,
    publish_once,
    row_path,
)
from wsi_prognosis.tiling.config import TilingConfig
from wsi_prognosis.tiling.pipeline import (
    _Batch,
    _Progress,
    _remove_stale_temporaries,
    _write_summary,
    summary_columns,
)

log = logging.getLogger("wsi_prognosis.tiling.pipeline")  # the stage's lines under one logger

SUMMARY_TASK = "@summary.csv"    # the claim under which one worker writes summary.csv ("@": never a slide id)


def tile_shared(rows: list[dict[str, Any]], out_dir: Path, config: TilingConfig, workers: int,
                claims: ClaimSettings) -> list[dict[str, Any]]:
    """`tiling.pipeline.tile_rows` as one of several workers on `out_dir`; returns the whole batch's rows."""
    check_claims_dir(out_dir)  # before any work: a read-only folder or one without hard links stops here
    _remove_stale_temporaries(out_dir, claims.stale_s, out_dir / ROWS_DIR)
    started = time.time()
    ids = [str(row["slide_id"]) for row in rows]
    columns = summary_columns(config)

    def handled(saved: dict[str, Any] | None) -> bool:  # in this batch, by any worker
        return handled_since(saved, started)

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
    def write() -> None:
        _write_summary(out_dir / "summary.csv", rows, columns)
        log.info("summary.csv: written for all %d slide(s)", len(rows))

    publish_once(claimer, SUMMARY_TASK, outputs=[out_dir / "summary.csv"], inputs=[row_path(out_dir, i) for i in ids],
                 write=write, what="summary.csv")


def rebuild_summary(out_dir: Path, slide_ids: list[str], config: TilingConfig) -> int:
    """summary.csv from the rows saved in `.summary/` of those `slide_ids` that have one; returns how many.

    For a folder tiled a few slides at a time (`score`'s own tiles, tiled group by group by the workers
    sharing its out folder), where each call's summary.csv lists only its own slides."""
    columns = summary_columns(config)
    rows = [{c: saved["row"].get(c) for c in columns} for slide_id in slide_ids
            if (saved := load_row(out_dir, slide_id)) is not None]
    if rows:
        _write_summary(out_dir / "summary.csv", rows, columns)
    return len(rows)
