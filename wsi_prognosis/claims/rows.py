"""What workers sharing a folder leave for each other besides claims: per-slide summary rows, and the
batch's tables written once.

A stage whose batch table is one row per slide (`tile`'s summary.csv, `embed`'s embed_summary.csv)
saves each handled slide's row as `<folder>/.summary/<slide_id>.json`, atomically, before it
releases the slide's claim; the worker that finds every slide handled builds the table from the
saved rows. `score` needs no rows (its per-slide records are the rows) but publishes its tables
the same way: `publish_once` writes them under one batch-level claim, once per batch.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from wsi_prognosis.atomic import write_text_atomic
from wsi_prognosis.claims.claimer import Claimer

log = logging.getLogger("wsi_prognosis.claims")

ROWS_DIR = ".summary"            # `<folder>/.summary/<slide_id>.json`: each slide's summary row


def row_path(folder: Path, slide_id: str) -> Path:
    return Path(folder) / ROWS_DIR / f"{slide_id}.json"


def save_row(folder: Path, row: Mapping[str, Any]) -> None:
    """The slide's summary row for the workers sharing `folder`, saved atomically once it is handled;
    `finished` (this host's clock) tells a row of this batch from one a previous run left."""
    payload = {"row": dict(row), "finished": time.time(), "pid": os.getpid()}
    text = json.dumps(payload, default=lambda v: v.item() if hasattr(v, "item") else str(v))
    write_text_atomic(row_path(folder, str(row["slide_id"])), text)


def load_row(folder: Path, slide_id: str) -> dict[str, Any] | None:
    """The saved payload ({"row", "finished", "pid"}), or None when missing or unreadable."""
    try:
        payload = json.loads(row_path(folder, slide_id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) and isinstance(payload.get("row"), dict) else None


def handled_since(payload: Mapping[str, Any] | None, started: float) -> bool:
    """Whether a saved row was written in this batch (at or after `started`), by any worker."""
    if payload is None:
        return False
    try:
        return float(payload.get("finished") or 0) >= started
    except (TypeError, ValueError):
        return False


def newest_mtime_ns(paths: Iterable[Path]) -> int:
    """The newest modification time among `paths` that exist (0 when none does)."""
    newest = 0
    for path in paths:
        try:
            newest = max(newest, path.stat().st_mtime_ns)
        except OSError:
            continue
    return newest


def publish_once(claimer: Claimer, task: str, *, outputs: Sequence[Path], inputs: Iterable[Path],
                 write: Callable[[], None], what: str, participated: bool = True) -> bool:
    """Write a batch's tables (`write()`, which writes `outputs`) once, under the batch-level claim `task`
    ("@..."); True when this worker wrote them.

    Skipped when another worker holds the claim (it is writing them), or, for a worker that took part
    in the batch (`participated`: it found unfinished slides when it started), when the newest of
    `outputs` is newer than every input: another worker of this batch wrote the tables after the
    last slide was finished (a table's own writer may touch inputs while writing, e.g. `score`'s
    shift check fills in old records, hence the newest output). A worker that found nothing left to
    do is a rerun and always rebuilds them (its options, e.g. a newly calibrated bundle's thresholds,
    may differ). The times compared are file modification times set by the same filesystem.
    """
    with claimer.exclusive(task) as mine:
        if not mine:
            log.info("%s: another worker is writing it", what)
            return False
        if participated and outputs[0].is_file() and newest_mtime_ns(outputs) > newest_mtime_ns(inputs):
            log.info("%s: already written for this batch by another worker", what)
            return False
        write()
        return True


__all__ = ["ROWS_DIR", "handled_since", "load_row", "newest_mtime_ns", "publish_once", "row_path", "save_row"]
