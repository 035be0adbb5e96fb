"""The `embed` batch: tile stores -> one feature store per slide, resumable, atomic, shardable.

A reader thread reads and decodes the next tiles (`features.embed_reader`: TileReader, stain matrix
applied) while the main thread runs the encoder (ONNX Runtime and torch release the GIL), so reading
hides behind the model; a slide's store is written when its last batch is embedded. Finished stores
that match the encoder, weights, preprocessing, stain target and tile store are skipped; a store made
otherwise is refused by name (recorded as failed, the batch goes on) unless `remake=true`. Augmented
views (`views=N`) are embedded for the slides of `view_cohorts` only (training), so heads see stain,
blur and flips without re-embedding each epoch. With claims, several workers share one features
folder, each slide embedded by one of them (`embed_slides`, `features.embed_shared`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsi_prognosis.claims import Claimer, ClaimSettings, check_claims_dir, claimed
from wsi_prognosis.claims.rows import handled_since, load_row, save_row
from wsi_prognosis.encoders.runtime import EmbedderConfig, TileEmbedder
from wsi_prognosis.errors import WsiPrognosisError
from wsi_prognosis.features.embed_reader import Stopped, chunks, prefetched
from wsi_prognosis.features.embed_shared import (
    shared_rows,
    shared_stain_target,
    write_summary,
)
from wsi_prognosis.features.stain import slide_fit, stain_target
from wsi_prognosis.features.store import (
    FeatureSpec,
    ResolutionFeatures,
    feature_dir,
    feature_store_path,
    open_feature_store,
    write_feature_store,
)
from wsi_prognosis.models.augment import AugmentConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedOptions:
    encoder: str = "lite0"
    weights: str | None = None                      # encoder.weights=PATH (else the registry's places)
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    resolutions: tuple[str, ...] | None = None      # None: every resolution of each tile store
    views: int = 0                                  # augmented views per tile of the view cohorts
    view_cohorts: tuple[str, ...] = ("training",)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    stain_norm: str = "none"                        # none | macenko (target: the training slides' median)
    train_cohort: str = "training"
    remake: bool = False                            # replace stores made otherwise (else refused by name)
    verify_slides: bool = True                      # refuse a slide changed since it was tiled
    seed: int = 0
    prefetch_batches: int = 3


@dataclass
class EmbedResult:
    rows: list[dict[str, Any]] = field(default_factory=list)   # the batch's: slide_id, cohort, status, error, tiles, views
    tiles: int = 0                  # this worker's, as the rest below
    seconds: float = 0.0
    spec: FeatureSpec | None = None
    folder: Path | None = None
    embedded: int = 0               # slides whose store this worker wrote
    failed: int = 0                 # slides this worker failed to read or write
    claims: dict[str, int] | None = None   # with claims: taken, held_by_others, taken_over

    @property
    def tiles_per_s(self) -> float:
        return self.tiles / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Task:
    row: dict[str, Any]
    store_path: Path
    target: Path
    views: int
    fingerprint: str = ""
    grids: dict[str, Any] = field(default_factory=dict)
    coords: dict[str, np.ndarray] = field(default_factory=dict)
    slide_mpp: float = 0.0
    parts: dict[str, list[np.ndarray]] = field(default_factory=dict)
    view_parts: dict[str, list[np.ndarray]] = field(default_factory=dict)
    error: str = ""


def _resolutions(store: Any, wanted: Sequence[str] | None) -> list[str]:
    have = list(store.resolutions)
    if wanted is None:
        return have
    missing = [r for r in wanted if r not in have]
    if missing:
        raise WsiPrognosisError(f"{store.path}: no {missing} grid ({store.refused.get(missing[0], 'not tiled')}). "
                                "Fix: re-tile with that resolution, or embed resolutions= the store has.")
    return list(wanted)


def _open_task(task: _Task, options: EmbedOptions) -> None:
    from wsi_prognosis.tiling import open_tile_store

    with open_tile_store(task.store_path) as store:
        if options.verify_slides:
            store.verify_slide(task.row["path"])
        task.fingerprint = store.content_fingerprint()
        task.slide_mpp = store.mpp
        for res in _resolutions(store, options.resolutions):
            task.grids[res], task.coords[res] = store.grid(res), store.coords(res)


def _existing(task: _Task, spec: FeatureSpec, options: EmbedOptions) -> str:
    """'done' (matching store), 'redo' (none, or fewer views than wanted, or remake) or raises the refusal."""
    if not task.target.is_file():
        return "redo"
    try:
        with open_feature_store(task.target) as store:
            store.check(spec, task.fingerprint)
            enough = all(res in store.resolutions and store.n_views(res) >= task.views for res in task.coords)
    except WsiPrognosisError:
        if options.remake:
            return "redo"
        raise
    return "done" if enough else "redo"


def _views(embedder: TileEmbedder, tiles: np.ndarray, n: int, augment: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """(n, N, D) embeddings of `n` augmented copies (flips, rotations, HED stain, colour, blur)."""
    from wsi_prognosis.models.augment import augment_bag, augment_batch

    out = []
    for _ in range(n):
        flipped, params = augment_bag(tiles, rng, augment)
        pixels = augment_batch(torch.from_numpy(np.ascontiguousarray(flipped)), torch.from_numpy(params))
        out.append(embedder.embed(pixels.round_().clamp_(0, 255).to(torch.uint8).numpy()))
    return np.stack(out)


def _write(task: _Task, spec: FeatureSpec, options: EmbedOptions) -> None:
    grids = {}
    for res, coords in task.coords.items():
        parts = task.parts.get(res) or []
        features = np.concatenate(parts) if parts else np.zeros((0, spec.encoder["dim"]), np.float32)
        views = np.concatenate(task.view_parts[res], axis=1) if task.view_parts.get(res) else None
        grids[res] = ResolutionFeatures(features=features, coords=coords, tile_px=task.grids[res].tile_px,
                                        mpp=task.grids[res].mpp, views=views,
                                        views_augment=vars(options.augment) if views is not None else None)
    write_feature_store(task.target, slide_id=str(task.row["slide_id"]), spec=spec, tile_fingerprint=task.fingerprint,
                        tile_store=str(task.store_path), grids=grids)


def embed_slides(rows: Sequence[dict[str, Any]], tiles_dir: Path, out_root: Path, options: EmbedOptions,
                 claims: ClaimSettings | None = None, summary: str | None = "embed_summary.csv") -> EmbedResult:
    """Embed the tile stores of `rows` (slide_id, path, cohort) into out_root/<feature set>/ and write the
    batch's `summary` table there (None: not written); `result.rows` is that table, in `rows` order.

    With `claims` enabled, several workers (processes, machines) may run this on one out_root at once:
    each claims a slide (`<feature set>/.claims/<slide_id>`) just before reading it, skips those others
    hold, and saves each slide's summary row (`<feature set>/.summary/`, `claims.rows`) before releasing
    it; then waits for the slides others hold, taking over those of a worker that died. The summary
    is written once, by a worker that finds every slide handled. Slides decided without embedding
    (no tile store, no tiles, a matching store, a store made otherwise) are not claimed: every worker
    decides them alike.
    """
    from wsi_prognosis.encoders import load_encoder
    from wsi_prognosis.tiling import tile_store_path

    started = time.time()  # a row saved since then is this batch's (before any store is looked at: no slide done twice)
    encoder = load_encoder(options.encoder, weights=options.weights)
    folder = Path(out_root) / (encoder.spec.name + ("-macenko" if options.stain_norm == "macenko" else ""))
    shared = claims is not None and claims.enabled
    if shared:
        check_claims_dir(folder)  # before any work: a read-only folder or one without hard links stops here
    result = EmbedResult(spec=FeatureSpec(encoder=encoder.identity))
    tasks = [_Task(row=dict(row), store_path=tile_store_path(tiles_dir, str(row["slide_id"])), target=Path(),
                   views=options.views if str(row.get("cohort", "")) in options.view_cohorts else 0) for row in rows]
    decided: dict[str, dict[str, Any]] = {}   # slide_id -> its row, decided without embedding
    opened: list[_Task] = []
    from wsi_prognosis.encoders.registry import check_tile_mpp

    for task in tasks:
        try:
            _open_task(task, options)
            for res, grid in task.grids.items():  # an encoder sees tiles at the scale it was trained at, or none
                check_tile_mpp(encoder.spec, grid.mpp, res, tile_px=grid.tile_px)
        except WsiPrognosisError as exc:
            decided[_id(task)] = _row(task, "failed", str(exc))
            continue
        if not any(len(c) for c in task.coords.values()):  # a blank slide: no store, left out downstream
            decided[_id(task)] = _row(task, "empty", "no tiles with enough tissue: no feature store")
            continue
        opened.append(task)
    with (Claimer.from_settings(folder, claims, stage="embed") if shared else contextlib.nullcontext()) as claimer:
        stain = None
        if options.stain_norm == "macenko":
            stain = shared_stain_target(claimer, folder, lambda: _stain_target(out_root, encoder.spec.name, opened,
                                                                               options))
            result.spec = FeatureSpec(encoder=encoder.identity, stain=stain)
        spec = result.spec
        result.folder = feature_dir(out_root, spec)
        todo: list[_Task] = []
        for task in opened:
            task.target = feature_store_path(out_root, spec, _id(task))
            try:
                state = _existing(task, spec, options)
            except WsiPrognosisError as exc:
                decided[_id(task)] = _row(task, "failed", f"refused: {exc}")
                continue
            if state == "done":
                decided[_id(task)] = _row(task, "skipped", "")
            else:
                todo.append(task)
        log.info("embed %s: %d slide(s), %d done before, %d to embed%s -> %s", spec.name, len(tasks),
                 sum(r["status"] == "skipped" for r in decided.values()), len(todo),
                 " (shared with other workers)" if shared else "", result.folder)
        own: dict[str, dict[str, Any]] = {}
        if todo:
            _embed(todo, spec, stain, options, result, own, encoder, claimer, started)
        if not shared:
            result.rows = [decided.get(_id(t)) or own[_id(t)] for t in tasks]
            if summary:
                write_summary(result.folder / summary, result.rows)
        else:
            result.claims = claimer.counts()
            result.rows = shared_rows(claimer, result.folder, [_id(t) for t in tasks], decided, started,
                                      summary=summary, participated=bool(todo))
    if shared:
        counts = result.claims or {}
        log.info("this worker embedded %d of %d slide(s) (%d failed; %d decided without embedding; %d tiles in %.1f s); "
                 "%d held by other workers, %d taken over from stopped workers", result.embedded + result.failed,
                 len(tasks), result.failed, len(decided), result.tiles, result.seconds, counts.get("held_by_others", 0),
                 counts.get("taken_over", 0))
    return result


def _embed(todo: list[_Task], spec: FeatureSpec, stain: dict[str, Any] | None, options: EmbedOptions,
           result: EmbedResult, own: dict[str, dict[str, Any]], encoder: Any, claimer: Claimer | None,
           started: float) -> None:
    """Read (a thread) and embed the slides of `todo` this worker gets; each slide's row in `own` (and, with
    a claimer, saved for the others before its claim is released)."""
    from tqdm.auto import tqdm

    embedders: dict[int, TileEmbedder] = {}
    n_tiles = {_id(t): sum(len(c) for c in t.coords.values()) * (1 + t.views) for t in todo}
    others: list[str] = []    # slides other workers finished, noted by the reader thread, counted on the bar here
    stop = threading.Event()
    source: Iterable[_Task] = todo
    if claimer is not None:
        folder = result.folder
        assert folder is not None

        def done(slide_id: str) -> bool:  # handled in this batch, by any worker
            if not handled_since(load_row(folder, slide_id), started):
                return False
            others.append(slide_id)
            return True

        def idle(seconds: float) -> None:
            if stop.wait(seconds):
                raise Stopped

        source = claimed(claimer, todo, key=_id, done=done, idle=idle)
    bar = tqdm(total=sum(n_tiles.values()), unit="tile", desc=f"embedding {len(todo)} slide(s) with {spec.name}",
               mininterval=2.0)
    counted: set[str] = set()
    start = time.perf_counter()
    try:
        for task, res, tiles in prefetched(chunks(source, options.embedder.batch_tiles, stain),
                                           options.prefetch_batches, stop):
            while others:
                slide_id = others.pop()
                if slide_id not in counted:
                    counted.add(slide_id)
                    bar.update(n_tiles[slide_id])
            if tiles is None:  # the slide is read (or failed): write its store, record its row, release it
                row = _finish(task, spec, options, result)
                own[_id(task)] = row
                if claimer is not None:
                    save_row(result.folder, row)  # type: ignore[arg-type]
                    claimer.release(_id(task))
                counted.add(_id(task))
                postfix = {"slides": f"{len(counted)}/{len(todo)}"}
                if claimer is not None:
                    postfix.update(took=claimer.taken, others=claimer.held_by_others, taken_over=claimer.taken_over)
                bar.set_postfix(postfix, refresh=False)
                continue
            px = task.grids[res].tile_px
            embedder = embedders.get(px) or embedders.setdefault(px, TileEmbedder(encoder, px, options.embedder))
            task.parts.setdefault(res, []).append(embedder.embed(tiles))
            if task.views:
                rng = np.random.default_rng([options.seed, _stable(task.row["slide_id"]), len(task.parts[res])])
                augment = options.augment.at_mpp(task.grids[res].mpp)
                task.view_parts.setdefault(res, []).append(_views(embedder, tiles, task.views, augment, rng))
            result.tiles += len(tiles) * (1 + task.views)
            bar.update(len(tiles) * (1 + task.views))
    finally:
        bar.close()
        result.seconds = time.perf_counter() - start
    log.info("embedded %d tiles in %.1f s (%.1f tiles/s end to end)", result.tiles, result.seconds, result.tiles_per_s)


def _finish(task: _Task, spec: FeatureSpec, options: EmbedOptions, result: EmbedResult) -> dict[str, Any]:
    """Write the slide's store; its summary row (failed when reading or writing failed)."""
    if task.error:
        log.warning("%s: failed: %s", task.row["slide_id"], task.error)
        result.failed += 1
        return _row(task, "failed", task.error)
    try:
        _write(task, spec, options)
    except (OSError, WsiPrognosisError) as exc:
        log.warning("%s: failed: writing %s: %s", task.row["slide_id"], task.target, exc)
        result.failed += 1
        return _row(task, "failed", f"{task.target}: writing failed ({exc})")
    task.parts.clear()
    task.view_parts.clear()
    result.embedded += 1
    # one line per slide: workers sharing a folder are checked by these lines (each slide once)
    log.info("%s: embedded (%s tiles%s)", task.row["slide_id"], ", ".join(f"{r} {len(c)}" for r, c in task.coords.items()),
             f", {task.views} views" if task.views else "")
    return _row(task, "ok", "")


def _id(task: _Task) -> str:
    return str(task.row["slide_id"])


def _row(task: _Task, status: str, error: str) -> dict[str, Any]:
    row = {"slide_id": task.row["slide_id"], "cohort": task.row.get("cohort", ""), "status": status, "error": error,
           "views": task.views}
    for res, coords in task.coords.items():
        row[f"n_tiles_{res}"] = int(len(coords))
    return row


def _stable(text: Any) -> int:
    import zlib

    return zlib.crc32(str(text).encode())


def _stain_target(out_root: Path, encoder_name: str, tasks: Sequence[_Task], options: EmbedOptions) -> dict[str, Any]:
    from wsi_prognosis.slides import TileReader

    folder = Path(out_root) / f"{encoder_name}-macenko"
    resolutions = sorted({r for t in tasks for r in t.coords})

    def training_fits() -> dict[str, list[Any]]:
        fits: dict[str, list[Any]] = {res: [] for res in resolutions}
        for task in tasks:
            if str(task.row.get("cohort", "")) != options.train_cohort:
                continue
            for res, coords in task.coords.items():
                with TileReader(task.row["path"], task.grids[res], task.slide_mpp) as reader:
                    fits[res].append(slide_fit(lambda index: reader.read(coords[index]), len(coords)))
        return fits

    return stain_target(folder, resolutions, training_fits)


__all__ = ["EmbedOptions", "EmbedResult", "embed_slides"]
