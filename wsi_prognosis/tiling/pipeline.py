"""The `tile` stage as functions over a manifest (`tile_rows`, `tile_manifest`); one slide's work is
`tiling.slide_job.tile_one_slide`.

Batch: worker processes (spawn-safe), a progress bar, one summary row per slide whatever
happens, a rerun skips slides whose store is complete and still matches (same slide
fingerprint, same configuration, same manifest mpp and annotation). With claims, several
batches (processes, machines) share one output folder, each slide tiled by one of them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsi_prognosis.atomic import write_text_atomic
from wsi_prognosis.tiling.config import ResolutionSpec, TilingConfig
from wsi_prognosis.tiling.slide_job import QC_DIR, summary_columns, tile_one_slide

if TYPE_CHECKING:
    from wsi_prognosis.claims import Claimer, ClaimSettings

__all__ = ["TilingConfig", "ResolutionSpec", "tile_one_slide", "tile_rows", "tile_manifest", "summary_columns"]

log = logging.getLogger(__name__)


# -- batch ------------------------------------------------------------------------------------
def _records(manifest: Any) -> list[dict[str, Any]]:
    """Manifest rows as plain dicts, from `read_manifest_rows` (a list) or a DataFrame."""
    rows = manifest.to_dict("records") if hasattr(manifest, "to_dict") else [dict(r) for r in manifest]
    return [{k: (None if (isinstance(v, float) and math.isnan(v) and k != "mpp") else v) for k, v in r.items()}
            for r in rows]


def _remove_stale_temporaries(out_dir: Path, older_than_s: float | None = None, *extra: Path) -> None:
    """A killed run can leave `.<name>.h5.*.part`; they are never read, remove them (with other
    workers on the folder: only those untouched for `older_than_s`, a live worker may be writing)."""
    now = time.time()
    for folder in (out_dir, out_dir / QC_DIR, *extra):
        for stale in (folder.glob(".*.part") if folder.is_dir() else ()):
            try:
                if older_than_s is None or now - stale.stat().st_mtime > older_than_s:
                    stale.unlink()
            except FileNotFoundError:
                pass


def _tile_job(row: Mapping[str, Any], out_dir: Path, config: TilingConfig, shared: bool) -> dict[str, Any]:
    """One slide, in a worker process or inline; shared (claims): its summary row saved for the other workers.

    A killed worker's temporary files are left to the sweep at the start of a run (those untouched
    for claims.stale_s): its pool processes may still be finishing their slide, and their files are
    the same bytes as the taker's."""
    result = tile_one_slide(row, out_dir, config)
    if shared:
        from wsi_prognosis.claims.rows import save_row

        save_row(out_dir, result)
    return result


class _Batch:
    """Tile rows as they are submitted, inline (workers=1) or in up to `workers` spawned processes
    (spawn-safe), handing each result to `on_result` in this process. At most `workers` slides are
    in flight, so that a slide is claimed only when a process is free to tile it."""

    def __init__(self, out_dir: Path, config: TilingConfig, workers: int,
                 on_result: Callable[[dict[str, Any]], None], shared: bool = False) -> None:
        self.out_dir, self.config, self.workers, self.on_result, self.shared = out_dir, config, workers, on_result, shared
        self._pool: Any = None
        self._inflight: dict[Any, Mapping[str, Any]] = {}

    def __enter__(self) -> _Batch:
        if self.workers > 1:  # only a batch needs worker processes: a single slide starts faster without them
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, row: Mapping[str, Any]) -> None:
        if self._pool is None:
            self.on_result(_tile_job(row, self.out_dir, self.config, self.shared))
            return
        while len(self._inflight) >= self.workers:
            self._collect(None)
        try:
            future = self._pool.submit(_tile_job, row, self.out_dir, self.config, self.shared)
        except Exception as exc:  # the pool is broken (a worker process died)
            self.on_result(self._lost(row, exc))
            return
        self._inflight[future] = row

    def idle(self, seconds: float) -> None:
        """Wait `seconds`, handing on the slides that finish meanwhile."""
        deadline = time.monotonic() + seconds
        while self._inflight and time.monotonic() < deadline:
            self._collect(deadline - time.monotonic())
        time.sleep(max(0.0, deadline - time.monotonic()))

    def drain(self) -> None:
        while self._inflight:
            self._collect(None)

    def _collect(self, timeout: float | None) -> None:
        from concurrent.futures import FIRST_COMPLETED, wait

        finished, _ = wait(list(self._inflight), timeout=timeout, return_when=FIRST_COMPLETED)
        for future in finished:
            row = self._inflight.pop(future)
            try:
                result = future.result()
            except Exception as exc:  # a worker died (e.g. killed for memory): still a row
                result = self._lost(row, exc)
            self.on_result(result)

    def _lost(self, row: Mapping[str, Any], exc: BaseException) -> dict[str, Any]:
        result = {"slide_id": row["slide_id"], "status": "failed", "action": "failed",
                  "error": f"{row.get('path')}: worker failed ({type(exc).__name__}: {exc})"}
        if self.shared:
            from wsi_prognosis.claims.rows import save_row

            save_row(self.out_dir, result)
        return result


class _Progress:
    """The progress bar and one log line per slide handled; with claims, this worker's share too."""

    def __init__(self, total: int, config: TilingConfig, claimer: Claimer | None = None) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="slide", desc="tile", dynamic_ncols=True)
        self.config, self.claimer = config, claimer
        self.tiles = self.failed = self.handled = self.reused = 0
        self._counted: set[str] = set()

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    @property
    def elapsed(self) -> float:
        return self.bar.format_dict.get("elapsed") or 0.0

    def add(self, result: Mapping[str, Any]) -> None:
        """A slide this worker handled."""
        slide_id = str(result["slide_id"])
        counts = {r.name: int(result.get(f"n_tiles_{r.name}") or 0) for r in self.config.resolutions}
        self.handled += 1
        self.tiles += sum(counts.values())
        if result["status"] != "ok":
            self.failed += 1
            log.warning("%s failed: %s", slide_id, result["error"])
        elif result.get("action") == "reused":
            self.reused += 1
            log.info("%s: store complete and current, not tiled again", slide_id)
        else:
            log.info("%s: tiled (%s tiles) in %.1f s", slide_id, ", ".join(f"{k} {v}" for k, v in counts.items()),
                     result.get("seconds") or 0.0)
        self.advance(slide_id)

    def advance(self, slide_id: str) -> None:
        """Count a slide on the bar once, whoever handled it."""
        if slide_id in self._counted:
            return
        self._counted.add(slide_id)
        postfix: dict[str, Any] = {"tiles": self.tiles, "tiles_per_s": f"{self.tiles / max(self.elapsed, 1e-6):.0f}",
                                   "failed": self.failed}
        if self.claimer is not None:
            postfix.update(took=self.claimer.taken, others=self.claimer.held_by_others, taken_over=self.claimer.taken_over)
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)


def _write_summary(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in columns})
    write_text_atomic(path, buffer.getvalue())


def tile_rows(manifest: Any, out_dir: str | Path, config: TilingConfig, workers: int = 2,
              claims: ClaimSettings | None = None) -> list[dict[str, Any]]:
    """Tile every slide of a validated manifest (`cohort.read_manifest_rows`, or a DataFrame from
    `read_manifest`) into `out_dir`; return the summary rows in manifest order.

    A slide that fails is a row with `status=failed` and its error; the batch goes on. Without
    claims, `out_dir/summary.csv` is rewritten after every slide. With `claims` enabled, several
    processes (one machine or many, sharing the folder) may run this on one `out_dir` at once:
    each claims a slide before tiling it (`wsi_prognosis.claims`), skips slides others hold,
    saves each slide's row in `out_dir/.summary/`, then waits for the slides others hold (taking
    over those of a worker that died); summary.csv is written once, by the worker that finds
    every slide handled. Imports no pandas (the `tile` stage's start-up).
    """
    out_dir = Path(out_dir)
    rows = _records(manifest)
    workers = min(workers, len(rows)) if len(rows) > 1 else 1
    if claims is not None and claims.enabled:
        from wsi_prognosis.tiling.shared import tile_shared

        return tile_shared(rows, out_dir, config, workers, claims)
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out_dir)
    order = {row["slide_id"]: i for i, row in enumerate(rows)}
    columns = summary_columns(config)
    done: list[dict[str, Any]] = []
    with _Progress(len(rows), config) as progress:
        def on_result(result: dict[str, Any]) -> None:
            done.append(result)
            progress.add(result)
            done.sort(key=lambda r: order[r["slide_id"]])
            _write_summary(out_dir / "summary.csv", done, columns)

        with _Batch(out_dir, config, workers, on_result) as batch:
            for row in rows:
                batch.submit(row)
            batch.drain()
    log.info("tiled %d slide(s), %d failed, %d tiles in %.1f s", len(done), progress.failed, progress.tiles,
             progress.elapsed)
    return [{c: row.get(c) for c in columns} for row in done]


def tile_manifest(manifest: Any, out_dir: str | Path, config: TilingConfig, workers: int = 2,
                  claims: ClaimSettings | None = None):
    """`tile_rows` with the summary as a DataFrame (for notebooks and the stages that use tables)."""
    import pandas as pd

    return pd.DataFrame(tile_rows(manifest, out_dir, config, workers, claims), columns=summary_columns(config))
