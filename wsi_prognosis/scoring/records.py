"""Per-slide results on disk: `slides/<slide_id>.json` (the record) + `.npz` (tile scores).

A record is written last and atomically, so its presence means the slide is finished
(exports included); a rerun skips slides whose record carries the same job key. Its `finished`
time (the writer's clock) tells workers sharing a folder (`scoring.shared`) that a failed slide was
tried in this batch and is not to be retried again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from wsi_prognosis.atomic import atomic_path, write_text_atomic

RECORD_VERSION = 1


def slides_dir(out: Path) -> Path:
    return Path(out) / "slides"


def record_path(out: Path, slide_id: str) -> Path:
    return slides_dir(out) / f"{slide_id}.json"


def tile_scores_path(out: Path, slide_id: str) -> Path:
    return slides_dir(out) / f"{slide_id}.npz"


def model_key(bundle: Any) -> str:
    """What the scores depend on in a bundle: members (weights hashes, preprocessing, pooling) and tile spec.

    Not the thresholds: risk groups are applied when the tables are built, so scoring again with the
    calibrated bundle reuses every finished slide.
    """
    members = [[m.name, m.resolution, m.arch, m.sha256, m.preprocessing, m.pooling, m.encoder] for m in bundle.members]
    members_rule = {k: v for k, v in (bundle.aggregation or {}).items() if k != "patient"}  # the slide score's
    payload = json.dumps([members, bundle.tile_spec] + ([members_rule] if members_rule.get("weights") else []),
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def job_key(model: str, path: str, mpp: float | None, tile_store: str | None) -> str:
    """What a slide's result depends on: the models (`model_key`), slide file (path, size, mtime),
    manifest MPP, tile store."""
    try:
        st = os.stat(path)
        stamp: list[Any] = [st.st_size, st.st_mtime_ns]
    except OSError:
        stamp = [None, None]
    mpp_value = None if mpp is None or (isinstance(mpp, float) and np.isnan(mpp)) else float(mpp)
    payload = json.dumps([RECORD_VERSION, model, str(path), *stamp, mpp_value, tile_store], default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def write_tile_scores(out: Path, slide_id: str, arrays: Mapping[str, np.ndarray]) -> Path:
    target = tile_scores_path(out, slide_id)
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return target


def read_tile_scores(out: Path, slide_id: str) -> dict[str, np.ndarray]:
    with np.load(tile_scores_path(out, slide_id)) as data:
        return {k: data[k] for k in data.files}


def write_record(out: Path, record: Mapping[str, Any]) -> Path:
    """Write the slide's record atomically; `finished` is set to now unless the record has one (a rewrite)."""
    target = record_path(out, record["slide_id"])
    payload = {"record_version": RECORD_VERSION, **record, "finished": record.get("finished", time.time())}
    write_text_atomic(target, json.dumps(payload, indent=1, default=str) + "\n")
    return target


def read_record(out: Path, slide_id: str) -> dict[str, Any] | None:
    """The slide's record, or None when missing or unreadable (then it is simply redone)."""
    path = record_path(out, slide_id)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if record.get("record_version") == RECORD_VERSION else None
