"""`embed`'s batch files when several workers share one features folder: the summary written once,
and the stain target fitted once.

The per-slide rows (`<feature set>/.summary/<slide_id>.json`) and the write-once step are the ones
`tile` uses (`claims.rows`); this module only knows embed's table and its stain target.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from wsi_prognosis.claims import Claimer
from wsi_prognosis.claims.rows import (
    handled_since,
    load_row,
    newest_mtime_ns,
    publish_once,
    row_path,
)
from wsi_prognosis.features.stain import TARGET_FILE

log = logging.getLogger("wsi_prognosis.features.embed")  # the stage's lines under one logger

# the claim under which one worker writes a summary file, one per file name: the shards of one run may share
# the folder, each writing its own summary ("@": never a slide id)
SUMMARY_TASK = "@{}"
STAIN_TASK = "@stain_target"       # the claim under which one worker fits the feature set's stain target


def write_summary(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """The batch's summary table (one row per slide, in the batch's order), written atomically."""
    import pandas as pd

    from wsi_prognosis.atomic import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pd.DataFrame([dict(r) for r in rows]).to_csv(tmp, index=False)


def shared_rows(claimer: Claimer, folder: Path, slide_ids: Sequence[str], decided: Mapping[str, dict[str, Any]],
                started: float, *, summary: str | None, participated: bool) -> list[dict[str, Any]]:
    """The batch's rows: those this worker `decided` without embedding, else those any worker saved since
    `started`; the summary is written once (`claims.rows.publish_once`) when every slide has its row.

    A store this worker found complete is `skipped`, unless its row was saved after the last summary was
    written: another worker of this batch embedded it before this one started (workers start at
    different times), and the summary says `ok` whichever worker writes it."""
    rows: list[dict[str, Any]] = []
    missing: list[str] = []
    published = newest_mtime_ns([folder / summary]) if summary else 0
    for slide_id in slide_ids:
        if slide_id in decided:
            saved = load_row(folder, slide_id) if decided[slide_id]["status"] == "skipped" else None
            fresh = (saved is not None and saved["row"].get("status") == "ok"
                     and newest_mtime_ns([row_path(folder, slide_id)]) > published)
            rows.append(dict(saved["row"]) if fresh else decided[slide_id])  # type: ignore[index]
            continue
        saved = load_row(folder, slide_id)
        if handled_since(saved, started):
            rows.append(dict(saved["row"]))  # type: ignore[index]
        else:
            missing.append(slide_id)
            rows.append({"slide_id": slide_id, "status": "failed", "error": "no worker finished it: run the stage again"})
    if not summary:
        return rows
    if missing:
        log.warning("%d slide(s) not finished by any worker (%s); %s not written: run the stage again", len(missing),
                    ", ".join(missing[:5]), summary)
        return rows

    def write() -> None:
        write_summary(folder / summary, rows)
        log.info("%s: written for all %d slide(s)", summary, len(rows))

    publish_once(claimer, SUMMARY_TASK.format(summary), outputs=[folder / summary], write=write, what=summary,
                 inputs=[row_path(folder, s) for s in slide_ids if s not in decided], participated=participated)
    return rows


def shared_stain_target(claimer: Claimer | None, folder: Path, fit: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The feature set's stain target (`fit()`: read from `folder`, or fitted and written there), fitted by
    one worker: the others wait for its file (taking the claim over if that worker dies). Workers of
    different shards see different training slides: the first target written is the set's."""
    if claimer is None:
        return fit()
    noted = False
    while True:
        with claimer.exclusive(STAIN_TASK) as mine:
            if mine or (folder / TARGET_FILE).is_file():
                return fit()
        if not noted:
            log.info("%s: another worker is fitting the stain target; waiting for it", folder)
            noted = True
        time.sleep(claimer.poll_s)


__all__ = ["STAIN_TASK", "SUMMARY_TASK", "shared_rows", "shared_stain_target", "write_summary"]
