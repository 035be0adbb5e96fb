"""`score` as one of several workers sharing an output folder (`claims.enabled`, the stage's default).

Each worker claims up to `claims.batch_slides` unfinished slides at a time (`<out>/.claims/<slide_id>`,
`wsi_prognosis.claims`), skipping those whose record is finished and those another worker holds, and
runs them through the steps of a single run (tile what has no store, plan, engine, finisher). Each
claim is released as soon as the slide's record is written, ok or failed: the record stays the only
proof that a slide is done. With nothing left to claim, a worker scores what it holds, then waits for
the slides others hold, taking over those of a worker that died (`claims.stale_s`). scores.csv,
patient_scores.csv and the shift check are written once, under the claim "@tables", by a worker that
finds every slide finished; a rerun with nothing left to do rebuilds them.

Why a few slides at a time and not one: the engine streams the tiles of all its slides through one
reader pipeline, whose start-up and tail a single slide would pay alone; why not all of them: what
one worker claimed, the others cannot share. A failed slide is tried once per batch: a record whose
`finished` time is at or after this worker's start marks it handled here (a rerun tries it again
when `retry_failed`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from wsi_prognosis.claims import Claimer, check_claims_dir, claimed
from wsi_prognosis.claims.rows import publish_once
from wsi_prognosis.scoring import records
from wsi_prognosis.scoring.batch import (
    Models,
    ScoreOptions,
    ScoreResult,
    build_tables,
    finished_before,
    job_keys,
    prepare,
    run_plans,
    table_paths,
    write_tables,
)

log = logging.getLogger("wsi_prognosis.scoring.batch")  # the stage's lines under one logger

TABLES_TASK = "@tables"   # the claim under which one worker writes the batch's tables ("@": never a slide id)


def tables_task(options: ScoreOptions) -> str:
    """The tables' claim: one per shard (shards of one run may share `out`, each writing its own table)."""
    return TABLES_TASK if not options.shard.sharded else f"{TABLES_TASK}.{options.shard.label}"


def _finished_at(record: dict[str, Any] | None) -> float:
    try:
        return float((record or {}).get("finished") or 0)
    except (TypeError, ValueError):
        return 0.0


def score_shared(bundle: Any, rows: list[dict[str, Any]], columns: Any, out: Path, options: ScoreOptions,
                 result: ScoreResult) -> None:
    """`score_manifest` for `rows` (the shard's) as one of several workers on `out`; fills `result` with
    this worker's share and the whole batch's tables."""
    claims = options.claims
    assert claims is not None
    check_claims_dir(out)  # before any work: a read-only folder or one without hard links stops here
    started = time.time()
    keys = job_keys(rows, bundle, options)
    by_id = {row["slide_id"]: row for row in rows}

    def finished(slide_id: str) -> bool:
        """Done for this batch: kept by a rerun (`finished_before`), or tried since this worker started."""
        record = records.read_record(out, slide_id)
        return finished_before(record, keys[slide_id], options) or (
            record is not None and record.get("key") == keys[slide_id] and _finished_at(record) >= started)

    todo = [row["slide_id"] for row in rows if not finished(row["slide_id"])]
    result.n_skipped = len(rows) - len(todo)
    log.info("%d slide(s) in this shard, %d finished before, %d to score (shared with other workers on %s)",
             len(rows), result.n_skipped, len(todo), out)
    models = Models(bundle, options)
    with Claimer.from_settings(out, claims, stage="score") as claimer:
        group: list[str] = []

        def postfix() -> dict[str, Any]:
            return {"took": claimer.taken, "others": claimer.held_by_others, "taken_over": claimer.taken_over}

        def score_group() -> None:
            ids = list(group)
            group.clear()
            log.info("scoring %d claimed slide(s): %s", len(ids), ", ".join(ids))
            try:
                plans = prepare([(by_id[i], keys[i]) for i in ids], bundle, out, options, result, claimer.release)
                if plans:
                    run_plans(plans, bundle, out, options, result, models, claimer.release, postfix)
            finally:
                for slide_id in ids:  # released after its record (run_plans); here whatever happened
                    claimer.release(slide_id)

        def idle(seconds: float) -> None:
            """Nothing more to claim now: score what is held before waiting for the others' slides."""
            if group:
                score_group()
            else:
                time.sleep(seconds)

        for slide_id in claimed(claimer, todo, done=finished, idle=idle):
            group.append(slide_id)
            if len(group) >= claims.batch_slides:
                score_group()
        if group:
            score_group()
        build_tables(rows, columns, bundle, out, options, result)
        result.claims = claimer.counts()
        missing = [row["slide_id"] for row in rows if not finished(row["slide_id"])]
        paths = table_paths(out, options)
        if missing:  # a record removed meanwhile: nothing proves these slides done
            log.warning("%d slide(s) have no record (%s); %s not written: run the stage again", len(missing),
                        ", ".join(missing[:5]), paths[0].name)
        else:
            def write() -> None:
                write_tables(result, bundle, out, options)
                log.info("%s: written for all %d slide(s)", ", ".join(p.name for p in paths), len(rows))
                _tiles_summary(out / "tiles", [row["slide_id"] for row in rows], bundle)

            publish_once(claimer, tables_task(options), outputs=paths, write=write, what=paths[0].name,
                         inputs=[records.record_path(out, row["slide_id"]) for row in rows], participated=bool(todo))
    counts = result.claims
    log.info("this worker scored %d of %d slide(s) (%d ok, %d failed; %d finished before it started); "
             "%d held by other workers, %d taken over from stopped workers", result.n_scored + result.n_failed,
             len(rows), result.n_scored, result.n_failed, result.n_skipped, counts["held_by_others"], counts["taken_over"])


def _tiles_summary(tiles: Path, slide_ids: list[str], bundle: Any) -> None:
    """out/tiles/summary.csv for every slide tiled here, by whichever group and worker (each group's
    tiling wrote one listing only its own slides)."""
    from wsi_prognosis.claims.rows import ROWS_DIR

    if not (tiles / ROWS_DIR).is_dir():
        return
    from wsi_prognosis.tiling.config import TilingConfig
    from wsi_prognosis.tiling.shared import rebuild_summary

    rebuild_summary(tiles, slide_ids, TilingConfig.from_tile_spec(bundle.tile_spec))


__all__ = ["TABLES_TASK", "score_shared", "tables_task"]
