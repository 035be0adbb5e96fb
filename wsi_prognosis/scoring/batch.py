"""Score a manifest with a bundle: tile what is missing, run the engine, write per-slide results.

Flow per run (each step resumable):
1. pick the shard's rows; skip slides whose record (`slides/<id>.json`) has the same job key;
2. tile slides without a tile store with the bundle's own tile specification (`out/tiles/`);
3. plan each slide (store present, slide unchanged, grids match the members) or record why not;
4. stream the planned tiles through the engine (slides whose features all come from feature stores skip
   it); as each slide finishes (`finish`): member scores (pooled tile logits, or heads on features),
   ensemble score (member mean), tile scores, heatmap, GeoJSON, record;
5. rebuild scores.csv / patient_scores.csv from the records (or a shard's table for `merge`).

With `options.claims` (the `score` stage's default), several workers share `out`: each claims a few
slides at a time and runs steps 2-4 on them, and the tables are written once (`scoring.shared`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from wsi_prognosis.claims import ClaimSettings
from wsi_prognosis.errors import WsiPrognosisError
from wsi_prognosis.scoring import records
from wsi_prognosis.scoring.aggregate import (
    patient_table,
    resolve_patient_aggregation,
    slide_table,
    write_table,
)
from wsi_prognosis.scoring.engine import (
    EngineConfig,
    EngineStats,
    LoadedMember,
    Preprocessing,
    SlideLogits,
    TileJob,
)
from wsi_prognosis.scoring.finish import finish_and_record, record_failure
from wsi_prognosis.scoring.shard import Shard, select_shard
from wsi_prognosis.scoring.slide_plan import (
    SlidePlan,
    failed_record,
    plan_slide,
    tile_missing,
)

log = logging.getLogger(__name__)


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
    features: Path | None = None            # features root of `embed`: matching stores are used, not re-embedded
    encoder_weights: Mapping[str, str] = field(default_factory=dict)   # encoder name -> local weights file
    claims: ClaimSettings | None = None     # several workers on `out` (scoring.shared); None: this run alone
    shift: Any = None                       # scoring.shift.ShiftLimits: the domain-shift check, with the tables
                                            # (unsharded runs; None: no check, e.g. calibrate's tuning scores)


@dataclass
class ScoreResult:
    slides: pd.DataFrame
    patients: pd.DataFrame | None           # None for a shard (merge computes it)
    scores_csv: Path
    n_scored: int = 0                       # by this worker (ok)
    n_skipped: int = 0                      # finished before this worker started
    n_failed: int = 0                       # by this worker
    stats: EngineStats = field(default_factory=EngineStats)
    claims: dict[str, int] | None = None    # with claims: this worker's taken, held_by_others, taken_over


Recorded = Callable[[str], None]            # called with a slide id once its record is written (a claim is released)


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
    """Every pixel member's network (weights re-verified by the bundle) with its preprocessing."""
    return [
        LoadedMember(m.name, m.resolution, bundle.load_model(m, device="cpu"), Preprocessing.from_dict(m.preprocessing))
        for m in bundle.members if not m.on_features
    ]


class Models:
    """The bundle's networks, loaded once per run and reused by every group of slides it scores
    (`with_encoders=False` while every slide's features come from feature stores)."""

    def __init__(self, bundle: Any, options: ScoreOptions) -> None:
        self.bundle, self.options = bundle, options
        self._loaded: dict[bool, tuple[Any, Any]] = {}

    def get(self, with_encoders: bool) -> tuple[Any, Any]:
        """(ensemble, runner)."""
        from wsi_prognosis.scoring.members import load_ensemble

        if True in self._loaded:
            return self._loaded[True]
        if with_encoders not in self._loaded:
            ensemble = load_ensemble(self.bundle, self.options.engine, self.options.encoder_weights,
                                     with_encoders=with_encoders)
            self._loaded[with_encoders] = (ensemble, ensemble.runner(self.options.engine))
        return self._loaded[with_encoders]


def run_plans(plans: list[SlidePlan], bundle: Any, out: Path, options: ScoreOptions, result: ScoreResult,
              models: Models | None = None, on_recorded: Recorded | None = None,
              postfix: Callable[[], dict[str, Any]] | None = None) -> None:
    """Steps 4: the planned slides through the engine and the finisher; `on_recorded(slide_id)` after
    each record is written; `postfix()` adds to the progress bar (a worker's share of a shared batch)."""
    from tqdm.auto import tqdm

    from wsi_prognosis.scoring.engine import run_jobs
    from wsi_prognosis.scoring.members import member_feature_spec
    from wsi_prognosis.slides import TileReader

    keys_by_res: dict[str, set[str]] = {}
    for m in bundle.members:
        if m.on_features:
            keys_by_res.setdefault(m.resolution, set()).add(member_feature_spec(m).key)
    pixel_res = {m.resolution for m in bundle.members if not m.on_features}

    def needs_engine(plan: SlidePlan, res: str) -> bool:
        return res in pixel_res or not keys_by_res.get(res, set()) <= set(plan.stored.get(res, {}))

    wanted = [(p, res) for p in plans for res in p.coords if needs_engine(p, res)]
    ensemble, runner = (models or Models(bundle, options)).get(with_encoders=bool(wanted))
    jobs = [TileJob(p.row["slide_id"], res, TileReader(p.row["path"], p.grids[res], p.slide_mpp), p.coords[res])
            for p, res in wanted]
    for job in jobs:  # stain normalisation (members or feature sets): the slide's stain, from a fixed tile sample
        if runner.uses_stain(job.resolution):
            job.stain = slide_stain(job)
    by_id = {p.row["slide_id"]: p for p in plans}
    total = sum(len(j.coords) for j in jobs)
    started = time.perf_counter()
    # heads, pooling, exports and the record of a finished slide run in a thread beside the engine; with nothing
    # for the engine (every feature from a store) they are all the work: two threads, progress in slides
    if jobs:
        bar = tqdm(total=total, unit="tile", desc=f"scoring {len(plans)} slide(s)", mininterval=2.0)
    else:
        bar = tqdm(total=len(plans), unit="slide", desc=f"scoring {len(plans)} slide(s) from feature stores",
                   mininterval=2.0)
    finisher = ThreadPoolExecutor(max_workers=1 if jobs else 2, thread_name_prefix="score-finish")
    pending: dict[str, Future[str]] = {}
    in_engine = {job.slide_key for job in jobs}

    def recorded(function: Callable[..., str], plan: SlidePlan, *args: Any) -> str:
        status = function(plan, *args)
        if on_recorded is not None:
            on_recorded(plan.row["slide_id"])
        return status

    for plan in plans:  # every feature from a store: nothing to read
        if plan.row["slide_id"] not in in_engine:
            pending[plan.row["slide_id"]] = finisher.submit(
                recorded, finish_and_record, plan, SlideLogits(plan.row["slide_id"]), ensemble, bundle, out, options)
            if not jobs:
                pending[plan.row["slide_id"]].add_done_callback(lambda _: bar.update(1))

    def run(subset: list[SlidePlan]) -> None:
        subset_jobs = [job for job in jobs if job.slide_key in {p.row["slide_id"] for p in subset}]
        for done in run_jobs(subset_jobs, runner, options.engine, progress=bar.update, stats=result.stats):
            pending[done.slide_key] = finisher.submit(
                recorded, finish_and_record, by_id[done.slide_key], done, ensemble, bundle, out, options)
            bar.set_postfix(slides=f"{len(pending)}/{len(plans)}", **(postfix() if postfix else {}), refresh=False)

    try:
        try:
            run([p for p in plans if p.row["slide_id"] in in_engine])
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
                                recorded, record_failure, plan, bundle, out, message)
    finally:
        finisher.shutdown(wait=True)  # slides the engine finished are recorded even on interrupt
        bar.close()
    statuses = [f.result() for f in pending.values()]
    result.n_scored += statuses.count("ok")
    result.n_failed += len(statuses) - statuses.count("ok")
    log.info("scored %d tiles in %.1f s (%.0f tiles/s end to end)", result.stats.tiles,
             time.perf_counter() - started, result.stats.tiles_per_s)


def job_keys(rows: list[dict[str, Any]], bundle: Any, options: ScoreOptions) -> dict[str, str]:
    """slide_id -> what its result depends on (`records.job_key`: models, slide file, MPP, tile store)."""
    models = records.model_key(bundle)
    tiles = None if options.tiles is None else str(Path(options.tiles))
    return {row["slide_id"]: records.job_key(models, row["path"], _clean_mpp(row.get("mpp")), tiles) for row in rows}


def finished_before(rec: Mapping[str, Any] | None, key: str, options: ScoreOptions) -> bool:
    """Step 1: a record with the same job key that a rerun keeps (ok, or failed without retry_failed)."""
    return rec is not None and rec.get("key") == key and (rec.get("status") == "ok" or not options.retry_failed)


def prepare(todo: list[tuple[dict[str, Any], str]], bundle: Any, out: Path, options: ScoreOptions, result: ScoreResult,
            on_recorded: Recorded | None = None) -> list[SlidePlan]:
    """Steps 2 and 3: tile the slides without a tile store, plan each; a slide that cannot be planned gets
    its failed record here (then `on_recorded`)."""
    from wsi_prognosis.tiling import tile_store_path

    user_tiles = None if options.tiles is None else Path(options.tiles)
    own_tiles = out / "tiles"

    def given(row: dict[str, Any]) -> bool:
        return user_tiles is not None and tile_store_path(user_tiles, row["slide_id"]).is_file()

    need_tiling = [row for row, _ in todo if not given(row)]
    tiling_errors = (tile_missing(need_tiling, own_tiles, bundle, options.tiling_workers, options.claims)
                     if need_tiling else {})
    plans: list[SlidePlan] = []
    for row, key in todo:
        store_path = tile_store_path(user_tiles if given(row) else own_tiles, row["slide_id"])  # type: ignore[arg-type]
        try:
            if row["slide_id"] in tiling_errors:
                raise WsiPrognosisError(tiling_errors[row["slide_id"]])
            plans.append(plan_slide(row, key, store_path, bundle, verify=True, features=options.features))
        except Exception as exc:  # WsiPrognosisError expected; anything else must not stop the batch either
            if not isinstance(exc, WsiPrognosisError):
                log.exception("%s: unexpected error while planning", row["slide_id"])
                exc = WsiPrognosisError(f"{row['path']}: unexpected {type(exc).__name__}: {exc}")
            records.write_record(out, failed_record(row, key, bundle.id, str(exc)))
            result.n_failed += 1
            log.warning("%s: failed: %s", row["slide_id"], exc)
            if on_recorded is not None:
                on_recorded(row["slide_id"])
    return plans


def build_tables(rows: list[dict[str, Any]], columns: Any, bundle: Any, out: Path, options: ScoreOptions,
                 result: ScoreResult) -> None:
    """Step 5 in memory: `result.slides` (and `result.patients` unless sharded) from the records."""
    shard_rows = pd.DataFrame(rows, columns=columns)
    recs = {r["slide_id"]: rec for r in rows if (rec := records.read_record(out, r["slide_id"])) is not None}
    result.slides = slide_table(shard_rows, recs, member_names(bundle), bundle.thresholds)
    if not options.shard.sharded:
        result.patients = patient_table(result.slides, str(options.patient_aggregation), bundle.thresholds)


def table_paths(out: Path, options: ScoreOptions) -> list[Path]:
    """The batch's files `write_tables` writes, in order."""
    if options.shard.sharded:
        return [scores_csv_path(out, options.shard)]
    shift = [out / "shift.json", out / "shift.csv"] if options.shift is not None else []
    return [out / "scores.csv", out / "patient_scores.csv", *shift]


def write_tables(result: ScoreResult, bundle: Any, out: Path, options: ScoreOptions) -> None:
    """Step 5 on disk: scores.csv (a shard's table), patient_scores.csv and the domain-shift check
    (`options.shift`, unsharded: also when every slide was finished before)."""
    write_table(result.slides, result.scores_csv)
    if result.patients is not None:
        write_table(result.patients, out / "patient_scores.csv")
        if options.shift is not None:
            from wsi_prognosis.scoring.shift import run_shift_check

            run_shift_check(bundle, out, result.slides, result.patients, options.shift)


def score_manifest(bundle: Any, manifest: pd.DataFrame, out: str | Path, options: ScoreOptions = ScoreOptions()) -> ScoreResult:
    """Score the shard's manifest rows with `bundle` into `out` (resumable). See the module docstring."""
    out = Path(out)
    options = replace(options, patient_aggregation=resolve_patient_aggregation(bundle.aggregation, options.patient_aggregation))
    rows = select_shard(manifest, options.shard).to_dict("records")
    result = ScoreResult(slides=pd.DataFrame(), patients=None, scores_csv=scores_csv_path(out, options.shard))
    if options.claims is not None and options.claims.enabled:
        from wsi_prognosis.scoring.shared import score_shared

        score_shared(bundle, rows, manifest.columns, out, options, result)
        return result

    # 1. skip finished slides (same models, slide file, MPP and tile store; thresholds do not matter)
    keys = job_keys(rows, bundle, options)
    todo: list[tuple[dict[str, Any], str]] = []
    for row in rows:
        if finished_before(records.read_record(out, row["slide_id"]), keys[row["slide_id"]], options):
            result.n_skipped += 1
        else:
            todo.append((row, keys[row["slide_id"]]))
    log.info("%d slide(s) in this shard, %d finished before, %d to score", len(rows), result.n_skipped, len(todo))
    # 2, 3. tile what has no store, plan
    plans = prepare(todo, bundle, out, options, result)
    # 4. run: slides whose features all come from stores go straight to the finisher; the rest through the engine
    if plans:
        run_plans(plans, bundle, out, options, result)
    # 5. tables
    build_tables(rows, manifest.columns, bundle, out, options, result)
    write_tables(result, bundle, out, options)
    return result
