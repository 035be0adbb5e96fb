"""Score a manifest with a bundle: tile what is missing, run the engine, write per-slide results.

Flow per run (each step resumable):
1. pick the shard's rows; skip slides whose record (`slides/<id>.json`) has the same job key;
2. tile slides without a tile store with the bundle's own tile specification (`out/tiles/`);
3. plan each slide (store present, slide unchanged, grids match the members) or record why not;
4. stream all planned tiles through the engine; as each slide finishes: member scores (the
   bundle's pooling), ensemble score (member mean), tile scores, heatmap, GeoJSON, record;
5. rebuild scores.csv / patient_scores.csv from the records (or a shard's table for `merge`).
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wsi_prognosis.errors import WsiPrognosisError
from wsi_prognosis.scoring import records
from wsi_prognosis.scoring.aggregate import (
    ensemble_score,
    patient_table,
    resolve_patient_aggregation,
    slide_table,
    write_table,
)
from wsi_prognosis.scoring.engine import EngineConfig, EngineStats, LoadedMember, Preprocessing, SlideLogits, TileJob
from wsi_prognosis.scoring.shard import Shard, select_shard

log = logging.getLogger(__name__)

MPP_TOLERANCE = 0.02   # relative: a store's grid mpp must match the member's within 2 %


@dataclass(frozen=True)
class ScoreOptions:
    """Everything but the bundle, the manifest and the output folder."""

    tiles: Path | None = None               # existing tile stores (else out/tiles, tiled here)
    patient_aggregation: str | None = None  # mean | max of a patient's ok slides; None: the bundle's rule
    shard: Shard = field(default_factory=Shard)
    engine: EngineConfig = field(default_factory=EngineConfig)
    tiling_workers: int = 1
    retry_failed: bool = True               # rerun failed slides (ok slides are always skipped)
    heatmap: bool = True
    geojson: bool = True
    heatmap_max_px: int = 1024


@dataclass
class ScoreResult:
    slides: pd.DataFrame
    patients: pd.DataFrame | None           # None for a shard (merge computes it)
    scores_csv: Path
    n_scored: int = 0
    n_skipped: int = 0
    n_failed: int = 0
    stats: EngineStats = field(default_factory=EngineStats)


@dataclass
class _Plan:
    row: dict[str, Any]
    key: str
    store_path: Path
    slide_mpp: float
    dimensions: tuple[int, int]
    tile_l0_px: dict[str, float]
    coords: dict[str, np.ndarray]
    grids: dict[str, Any]


def scores_csv_path(out: Path, shard: Shard) -> Path:
    return out / "scores.csv" if not shard.sharded else out / "shards" / f"scores.{shard.label}.csv"


def member_names(bundle: Any) -> list[str]:
    return [m.name for m in bundle.members]


def _clean_mpp(value: Any) -> float | None:
    try:
        mpp = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(mpp) else mpp


def _failed(row: Mapping[str, Any], key: str, bundle_id: str, error: str) -> dict[str, Any]:
    return {
        "slide_id": row["slide_id"], "patient_id": row["patient_id"], "cohort": row["cohort"], "path": row["path"],
        "key": key, "bundle_id": bundle_id, "status": "failed", "error": error, "score": None, "members": {},
        "n_tiles": {},
    }


def _tile_missing(rows: list[dict[str, Any]], tiles_out: Path, bundle: Any, workers: int) -> dict[str, str]:
    """Tile slides with the bundle's tile spec; return slide_id -> tiling error for those that failed."""
    if not rows:
        return {}
    from wsi_prognosis.tiling.pipeline import TilingConfig, tile_manifest

    config = TilingConfig.from_tile_spec(bundle.tile_spec)
    summary = tile_manifest(pd.DataFrame(rows), tiles_out, config, workers=workers)
    errors: dict[str, str] = {}
    if summary is not None and len(summary) and "slide_id" in summary.columns:
        for rec in summary.to_dict("records"):
            status = str(rec.get("status", "ok"))
            message = rec.get("error")
            if status not in ("ok", "skipped", "done") and isinstance(message, str) and message:
                errors[str(rec["slide_id"])] = message
    return errors


def _plan_slide(row: dict[str, Any], key: str, store_path: Path, bundle: Any, verify: bool) -> _Plan:
    """Open the slide's tile store and check it can feed every member; raise a WsiPrognosisError if not."""
    from wsi_prognosis.errors import TileStoreError
    from wsi_prognosis.tiling import open_tile_store

    with open_tile_store(store_path) as store:
        if verify:
            store.verify_slide(row["path"])
        coords, grids, tile_l0 = {}, {}, {}
        for member in bundle.members:
            res = member.resolution
            if res in coords:
                continue
            if res not in store.resolutions:
                reason = store.refused.get(res, "not in the tile store")
                raise TileStoreError(f"{row['path']}: cannot score the {res} members: {reason}")
            grid = store.grid(res)
            want_px = int(member.preprocessing.get("tile_px", grid.tile_px))
            want_mpp = float(member.preprocessing.get("mpp", grid.mpp))
            if grid.tile_px != want_px or abs(grid.mpp - want_mpp) > MPP_TOLERANCE * want_mpp:
                raise TileStoreError(
                    f"{store_path}: the {res} grid is {grid.tile_px} px at {grid.mpp} µm/px but member {member.name} "
                    f"needs {want_px} px at {want_mpp} µm/px. Fix: omit tiles= so score tiles with the bundle's spec."
                )
            c = store.coords(res)
            if len(c) == 0:
                raise TileStoreError(
                    f"{row['path']}: no {res} tiles with enough tissue (min tissue fraction "
                    f"{bundle.tile_spec.get('min_tissue_fraction', '?')}); nothing to score. Fix: check the slide or "
                    "its annotation."
                )
            coords[res], grids[res] = c, grid
            tile_l0[res] = grid.tile_um / store.mpp
        return _Plan(row=row, key=key, store_path=store_path, slide_mpp=store.mpp, dimensions=tuple(store.dimensions),
                     tile_l0_px=tile_l0, coords=coords, grids=grids)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def _finish_slide(
    plan: _Plan, result: SlideLogits, bundle: Any, out: Path, options: ScoreOptions, names_by_res: Mapping[str, list[str]]
) -> dict[str, Any]:
    """Pool, average, export and build the record of one slide the engine has finished."""
    import torch

    from wsi_prognosis.models import pool_tile_logits
    from wsi_prognosis.scoring.exports import TileScores
    from wsi_prognosis.scoring.shift import slide_tile_stats

    row = plan.row
    if result.error:
        return _failed(row, plan.key, bundle.id, result.error)
    member_scores: dict[str, float] = {}
    arrays: dict[str, np.ndarray] = {}
    tiles: list[TileScores] = []
    for res, logits in result.logits.items():
        names = names_by_res[res]
        for name, member_logits in zip(names, logits):
            pooling = dict(bundle.member(name).pooling)
            method = pooling.pop("method", "mean")
            member_scores[name] = float(pool_tile_logits(torch.from_numpy(member_logits), method, **pooling))
        probs = _sigmoid(logits)
        arrays[f"coords_{res}"] = plan.coords[res]
        arrays[f"logits_{res}"] = logits.astype(np.float32)
        arrays[f"members_{res}"] = np.asarray(names)
        tiles.append(TileScores(res, plan.coords[res], plan.tile_l0_px[res], probs.mean(axis=0),
                                {n: p for n, p in zip(names, probs)}))
    ordered = {m.name: member_scores[m.name] for m in bundle.members if m.name in member_scores}
    score = ensemble_score(ordered)
    records.write_tile_scores(out, row["slide_id"], arrays)
    exports, export_error = _write_exports(plan, tiles, score, out, options)
    return {
        "slide_id": row["slide_id"], "patient_id": row["patient_id"], "cohort": row["cohort"], "path": row["path"],
        "key": plan.key, "bundle_id": bundle.id, "status": "ok", "error": "", "score": score, "members": ordered,
        "n_tiles": {res: int(len(c)) for res, c in plan.coords.items()}, "mpp": plan.slide_mpp,
        "tile_store": str(plan.store_path), "exports": exports, "export_error": export_error,
        # colour / sharpness of a fixed tile subsample, for the domain-shift check (scoring.shift)
        "tile_stats": slide_tile_stats(row["path"], plan.grids, plan.coords, plan.slide_mpp),
    }


def _finish_and_record(
    plan: _Plan, result: SlideLogits, bundle: Any, out: Path, options: ScoreOptions, names_by_res: Mapping[str, list[str]]
) -> str:
    """`_finish_slide` + write its record; any error fails this slide only. Returns the status."""
    try:
        record = _finish_slide(plan, result, bundle, out, options, names_by_res)
    except Exception as exc:  # a batch never stops at one slide; the traceback goes to the log
        log.exception("%s: finishing the slide failed", plan.row["slide_id"])
        record = _failed(plan.row, plan.key, bundle.id, f"{plan.row['path']}: scoring failed ({type(exc).__name__}: {exc})")
    if record["status"] != "ok":
        log.warning("%s: failed: %s", plan.row["slide_id"], record["error"])
    records.write_record(out, record)
    return str(record["status"])


def _record_failure(plan: _Plan, bundle: Any, out: Path, message: str) -> str:
    log.warning("%s: failed: %s", plan.row["slide_id"], message)
    records.write_record(out, _failed(plan.row, plan.key, bundle.id, message))
    return "failed"


def _write_exports(plan: _Plan, tiles: Sequence[Any], score: float, out: Path, options: ScoreOptions) -> tuple[dict[str, str], str]:
    """Heatmap PNG and GeoJSON; a failure here is logged and recorded, the score still counts."""
    from wsi_prognosis.scoring import exports as ex

    slide_id = plan.row["slide_id"]
    written: dict[str, str] = {}
    try:
        if options.geojson:
            from wsi_prognosis.tiling import open_tile_store

            with open_tile_store(plan.store_path) as store:
                mask, mask_mpp = store.tissue_mask()
            tissue = ex.tissue_polygons(mask, mask_mpp, plan.slide_mpp, plan.dimensions)
            target = out / "geojson" / f"{slide_id}.geojson"
            ex.write_geojson(target, ex.slide_geojson(slide_id, tiles, tissue, slide_score=score))
            written["geojson"] = str(target.relative_to(out))
        if options.heatmap:
            from wsi_prognosis.slides import Slide

            thumb_mpp = ex.heatmap_mpp(plan.dimensions, plan.slide_mpp, options.heatmap_max_px)
            with Slide.from_path(plan.row["path"], mpp=plan.slide_mpp) as slide:
                thumbnail, actual_mpp = slide.thumbnail(thumb_mpp)
            target = out / "heatmaps" / f"{slide_id}.png"
            ex.write_heatmap(target, thumbnail, actual_mpp, plan.slide_mpp, tiles, title=f"{slide_id}  score {score:.3f}")
            written["heatmap"] = str(target.relative_to(out))
    except (WsiPrognosisError, OSError, ValueError) as exc:
        log.warning("%s: exports failed: %s", slide_id, exc)
        return written, str(exc)
    return written, ""


def slide_stain(job: Any) -> Any:
    """The slide's Macenko estimate at the job's resolution (None when not estimable or unreadable:
    the tiles are then used as they are, and a real read error fails the slide in the engine)."""
    from wsi_prognosis.models.stain import FIT_TILES, evenly_spaced, fit_stain

    try:
        return fit_stain(job.reader.read(job.coords[evenly_spaced(len(job.coords), FIT_TILES)]))
    except Exception as exc:  # noqa: BLE001 - any reader error: the engine's own read reports it
        log.warning("%s: stain not estimated (%s); tiles scored as they are", job.slide_key, exc)
        return None


def load_members(bundle: Any) -> list[LoadedMember]:
    """Every member's network (weights re-verified by the bundle) with its preprocessing."""
    return [
        LoadedMember(m.name, m.resolution, bundle.load_model(m, device="cpu"), Preprocessing.from_dict(m.preprocessing))
        for m in bundle.members
    ]


def score_manifest(bundle: Any, manifest: pd.DataFrame, out: str | Path, options: ScoreOptions = ScoreOptions()) -> ScoreResult:
    """Score the shard's manifest rows with `bundle` into `out` (resumable). See the module docstring."""
    from tqdm.auto import tqdm

    from wsi_prognosis.scoring.engine import EnsembleRunner, run_jobs
    from wsi_prognosis.slides import TileReader
    from wsi_prognosis.tiling import tile_store_path

    out = Path(out)
    options = replace(options, patient_aggregation=resolve_patient_aggregation(bundle.aggregation, options.patient_aggregation))
    rows = select_shard(manifest, options.shard).to_dict("records")
    user_tiles = None if options.tiles is None else Path(options.tiles)
    own_tiles = out / "tiles"
    result = ScoreResult(slides=pd.DataFrame(), patients=None, scores_csv=scores_csv_path(out, options.shard))

    # 1. skip finished slides (same models, slide file, MPP and tile store; thresholds do not matter)
    todo: list[tuple[dict[str, Any], str]] = []
    models = records.model_key(bundle)
    for row in rows:
        key = records.job_key(models, row["path"], _clean_mpp(row.get("mpp")), None if user_tiles is None else str(user_tiles))
        rec = records.read_record(out, row["slide_id"])
        if rec is not None and rec.get("key") == key and (rec["status"] == "ok" or not options.retry_failed):
            result.n_skipped += 1
            continue
        todo.append((row, key))
    log.info("%d slide(s) in this shard, %d finished before, %d to score", len(rows), result.n_skipped, len(todo))

    # 2. tile what has no store
    def store_for(row: dict[str, Any]) -> Path:
        if user_tiles is not None and tile_store_path(user_tiles, row["slide_id"]).is_file():
            return tile_store_path(user_tiles, row["slide_id"])
        return tile_store_path(own_tiles, row["slide_id"])

    need_tiling = [row for row, _ in todo if not (user_tiles is not None and tile_store_path(user_tiles, row["slide_id"]).is_file())]
    tiling_errors = _tile_missing(need_tiling, own_tiles, bundle, options.tiling_workers) if need_tiling else {}

    # 3. plan
    plans: list[_Plan] = []
    for row, key in todo:
        store_path = store_for(row)
        try:
            if row["slide_id"] in tiling_errors:
                raise WsiPrognosisError(tiling_errors[row["slide_id"]])
            plans.append(_plan_slide(row, key, store_path, bundle, verify=True))
        except Exception as exc:  # WsiPrognosisError expected; anything else must not stop the batch either
            if not isinstance(exc, WsiPrognosisError):
                log.exception("%s: unexpected error while planning", row["slide_id"])
                exc = WsiPrognosisError(f"{row['path']}: unexpected {type(exc).__name__}: {exc}")
            records.write_record(out, _failed(row, key, bundle.id, str(exc)))
            result.n_failed += 1
            log.warning("%s: failed: %s", row["slide_id"], exc)

    # 4. run
    if plans:
        runner = EnsembleRunner(load_members(bundle), options.engine)
        names_by_res = {res: runner.member_names(res) for res in runner.by_resolution}
        jobs = [
            TileJob(p.row["slide_id"], res, TileReader(p.row["path"], p.grids[res], p.slide_mpp), p.coords[res])
            for p in plans for res in names_by_res if res in p.coords
        ]
        for job in jobs:  # members trained with stain normalisation: the slide's stain, from a fixed tile sample
            if runner.uses_stain(job.resolution):
                job.stain = slide_stain(job)
        by_id = {p.row["slide_id"]: p for p in plans}
        total = sum(len(j.coords) for j in jobs)
        bar = tqdm(total=total, unit="tile", desc=f"scoring {len(plans)} slide(s)", mininterval=2.0)
        started = time.perf_counter()
        # pooling, exports and the record of a finished slide run in a thread, beside the engine
        finisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="score-finish")
        pending: dict[str, Future[str]] = {}

        def run(subset: list[_Plan]) -> None:
            subset_jobs = [job for job in jobs if job.slide_key in {p.row["slide_id"] for p in subset}]
            for done in run_jobs(subset_jobs, runner, options.engine, progress=bar.update, stats=result.stats):
                pending[done.slide_key] = finisher.submit(
                    _finish_and_record, by_id[done.slide_key], done, bundle, out, options, names_by_res)
                bar.set_postfix(slides=f"{len(pending)}/{len(plans)}", refresh=False)

        try:
            try:
                run(plans)
            except (RuntimeError, OSError) as exc:
                # a reader process died (e.g. a decoder crashed on one slide): score the rest one slide at a
                # time, so the slide that kills its reader becomes a failed row and the batch goes on
                log.error("the tile reader pipeline stopped (%s); scoring the remaining slides one by one", exc)
                for plan in [p for p in plans if p.row["slide_id"] not in pending]:
                    # two tries: the dead process of the stopped pipeline can still be reported (through
                    # torch's SIGCHLD bookkeeping) while the next slide runs; a slide that really kills its
                    # reader does so every time
                    for attempt in (1, 2):
                        try:
                            run([plan])
                            break
                        except (RuntimeError, OSError) as slide_exc:
                            if attempt == 2:
                                message = f"{plan.row['path']}: reading its tiles stopped the reader process ({slide_exc})"
                                pending[plan.row["slide_id"]] = finisher.submit(
                                    _record_failure, plan, bundle, out, message)
        finally:
            finisher.shutdown(wait=True)  # slides the engine finished are recorded even on interrupt
            bar.close()
        statuses = [f.result() for f in pending.values()]
        result.n_scored += statuses.count("ok")
        result.n_failed += len(statuses) - statuses.count("ok")
        log.info("scored %d tiles in %.1f s (%.0f tiles/s end to end)", result.stats.tiles,
                 time.perf_counter() - started, result.stats.tiles_per_s)

    # 5. tables
    shard_rows = pd.DataFrame(rows, columns=manifest.columns)
    recs = {r["slide_id"]: rec for r in rows if (rec := records.read_record(out, r["slide_id"])) is not None}
    result.slides = slide_table(shard_rows, recs, member_names(bundle), bundle.thresholds)
    write_table(result.slides, result.scores_csv)
    if not options.shard.sharded:
        result.patients = patient_table(result.slides, str(options.patient_aggregation), bundle.thresholds)
        write_table(result.patients, out / "patient_scores.csv")
    return result
