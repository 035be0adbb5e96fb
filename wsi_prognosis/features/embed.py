"""The `embed` batch: tile stores -> one feature store per slide, resumable, atomic, shardable.

A reader thread reads and decodes the next tiles (TileReader, stain matrix applied) while the main
thread runs the encoder (ONNX Runtime and torch release the GIL), so reading hides behind the model;
a slide's store is written when its last batch is embedded. Finished stores that match the
encoder, weights, preprocessing, stain target and tile store are skipped; a store made otherwise is
refused by name (recorded as failed, the batch goes on) unless `remake=true`. Augmented views
(`views=N`) are embedded for the slides of `view_cohorts` only (training), so heads see stain, blur
and flips without re-embedding each epoch.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsi_prognosis.encoders.runtime import EmbedderConfig, TileEmbedder
from wsi_prognosis.errors import WsiPrognosisError
from wsi_prognosis.features.stain import slide_fit, slide_matrix, stain_target
from wsi_prognosis.features.store import (FeatureSpec, ResolutionFeatures, feature_dir, feature_store_path,
                                          open_feature_store, write_feature_store)
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
    rows: list[dict[str, Any]] = field(default_factory=list)   # slide_id, cohort, status, error, tiles, views
    tiles: int = 0
    seconds: float = 0.0
    spec: FeatureSpec | None = None
    folder: Path | None = None

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


def _chunks(tasks: Sequence[_Task], batch: int, target: dict[str, Any] | None) -> Iterator[tuple[int, str, np.ndarray | None]]:
    """(task index, resolution, uint8 tiles | None on error) in order; a task's error stops its chunks."""
    from wsi_prognosis.models.stain import apply_od_matrix
    from wsi_prognosis.slides import TileReader

    for t, task in enumerate(tasks):
        try:
            for res, coords in task.coords.items():
                reader = TileReader(task.row["path"], task.grids[res], task.slide_mpp)
                try:
                    matrix = None
                    if target is not None:
                        fit = slide_fit(lambda index: reader.read(coords[index]), len(coords))
                        matrix = torch.from_numpy(slide_matrix(fit, target, res))
                    for start in range(0, len(coords), batch):
                        tiles = reader.read(coords[start:start + batch])
                        if matrix is not None:
                            tiles = apply_od_matrix(torch.from_numpy(tiles), matrix).round_().to(torch.uint8).numpy()
                        yield t, res, tiles
                finally:
                    reader.close()
        except Exception as exc:  # noqa: BLE001 - a slide's read error fails that slide only
            task.error = f"{task.row['path']}: reading tiles failed ({type(exc).__name__}: {exc})"
            yield t, "", None


def _prefetched(source: Iterator[Any], depth: int) -> Iterator[Any]:
    """Run `source` in a thread, `depth` items ahead (the reader overlaps the encoder)."""
    items: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in source:
                if stop.is_set():
                    return
                items.put(item)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            items.put(exc)
        items.put(done)

    thread = threading.Thread(target=work, name="embed-reader", daemon=True)
    thread.start()
    try:
        while (item := items.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a reader waiting on a full queue
            try:
                items.get_nowait()
            except queue.Empty:
                thread.join(0.05)


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


def embed_slides(rows: Sequence[dict[str, Any]], tiles_dir: Path, out_root: Path, options: EmbedOptions) -> EmbedResult:
    """Embed the tile stores of `rows` (slide_id, path, cohort) into out_root/<feature set>/."""
    from tqdm.auto import tqdm

    from wsi_prognosis.encoders import load_encoder
    from wsi_prognosis.tiling import tile_store_path

    encoder = load_encoder(options.encoder, weights=options.weights)
    spec = FeatureSpec(encoder=encoder.identity)
    result = EmbedResult(spec=spec)
    tasks: list[_Task] = []
    for row in rows:
        views = options.views if str(row.get("cohort", "")) in options.view_cohorts else 0
        tasks.append(_Task(row=dict(row), store_path=tile_store_path(tiles_dir, str(row["slide_id"])), target=Path(),
                           views=views))
    opened: list[_Task] = []
    from wsi_prognosis.encoders.registry import check_tile_mpp

    for task in tasks:
        try:
            _open_task(task, options)
            for res, grid in task.grids.items():  # an encoder sees tiles at the scale it was trained at, or none
                check_tile_mpp(encoder.spec, grid.mpp, res, tile_px=grid.tile_px)
        except WsiPrognosisError as exc:
            result.rows.append(_row(task, "failed", str(exc)))
            continue
        if not any(len(c) for c in task.coords.values()):  # a blank slide: no store, left out downstream
            result.rows.append(_row(task, "empty", "no tiles with enough tissue: no feature store"))
            continue
        opened.append(task)
    stain = None
    if options.stain_norm == "macenko":
        stain = _stain_target(out_root, encoder.spec.name, opened, options)
        spec = FeatureSpec(encoder=encoder.identity, stain=stain)
        result.spec = spec
    result.folder = feature_dir(out_root, spec)
    todo: list[_Task] = []
    for task in opened:
        task.target = feature_store_path(out_root, spec, str(task.row["slide_id"]))
        try:
            state = _existing(task, spec, options)
        except WsiPrognosisError as exc:
            result.rows.append(_row(task, "failed", f"refused: {exc}"))
            continue
        if state == "done":
            result.rows.append(_row(task, "skipped", ""))
        else:
            todo.append(task)
    log.info("embed %s: %d slide(s), %d done before, %d to embed -> %s", spec.name, len(tasks),
             sum(r["status"] == "skipped" for r in result.rows), len(todo), result.folder)
    if not todo:
        return result
    tile_px = {g.tile_px for t in todo for g in t.grids.values()}
    embedders = {px: TileEmbedder(encoder, px, options.embedder) for px in sorted(tile_px)}
    chunks_left = {i: sum(-(-len(c) // options.embedder.batch_tiles) for c in t.coords.values()) for i, t in enumerate(todo)}
    total = sum(len(c) * (1 + t.views) for t in todo for c in t.coords.values())
    bar = tqdm(total=total, unit="tile", desc=f"embedding {len(todo)} slide(s) with {spec.name}", mininterval=2.0)
    started = time.perf_counter()
    finished = 0
    try:
        for t, res, tiles in _prefetched(_chunks(todo, options.embedder.batch_tiles, stain), options.prefetch_batches):
            task = todo[t]
            if tiles is not None and not task.error:
                embedder = embedders[task.grids[res].tile_px]
                task.parts.setdefault(res, []).append(embedder.embed(tiles))
                if task.views:
                    rng = np.random.default_rng([options.seed, _stable(task.row["slide_id"]), len(task.parts[res])])
                    augment = options.augment.at_mpp(task.grids[res].mpp)
                    task.view_parts.setdefault(res, []).append(_views(embedder, tiles, task.views, augment, rng))
                result.tiles += len(tiles) * (1 + task.views)
                bar.update(len(tiles) * (1 + task.views))
                chunks_left[t] -= 1
            if task.error or chunks_left[t] == 0:
                finished += _finish(task, spec, options, result)
                chunks_left[t] = -1
                bar.set_postfix(slides=f"{finished}/{len(todo)}", refresh=False)
        for t, task in enumerate(todo):  # slides without any tiles
            if chunks_left[t] == 0:
                finished += _finish(task, spec, options, result)
    finally:
        bar.close()
        result.seconds = time.perf_counter() - started
    log.info("embedded %d tiles in %.1f s (%.1f tiles/s end to end)", result.tiles, result.seconds, result.tiles_per_s)
    return result


def _finish(task: _Task, spec: FeatureSpec, options: EmbedOptions, result: EmbedResult) -> int:
    if task.error:
        log.warning("%s: failed: %s", task.row["slide_id"], task.error)
        result.rows.append(_row(task, "failed", task.error))
        return 0
    try:
        _write(task, spec, options)
    except (OSError, WsiPrognosisError) as exc:
        result.rows.append(_row(task, "failed", f"{task.target}: writing failed ({exc})"))
        return 0
    task.parts.clear()
    task.view_parts.clear()
    result.rows.append(_row(task, "ok", ""))
    return 1


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
