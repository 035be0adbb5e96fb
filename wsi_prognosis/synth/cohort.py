"""make_cohort: patients, outcomes, slides and tables of a synthetic cohort, resumable.

Layout of `out_dir`:
    slides/<cohort>/<slide_id>.tiff|.svs   pyramidal JPEG slides
    manifest.csv   slide_id, patient_id, path (relative to out_dir), cohort
    clinical.csv   patient_id, time (years), event, pT, pN, grade
    truth.csv      patient_id, risk (higher = worse; for checks only, never for the pipeline)
    slides.csv     per-slide generation summary (size, artefacts, morphology statistics)
    gallery.png    tiles across the risk range at 40x and 10x
    synth_state.json, run_synth.json
A rerun with the same configuration skips slides that exist (each was written atomically); a
changed configuration regenerates every slide.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from wsi_prognosis.atomic import atomic_path, write_text_atomic
from wsi_prognosis.errors import ConfigurationError
from wsi_prognosis.provenance import write_run_record
from wsi_prognosis.synth.config import COHORTS, SynthConfig
from wsi_prognosis.synth.outcomes import simulate_cohort_tables
from wsi_prognosis.synth.slides import SlideJob, make_slide

log = logging.getLogger(__name__)
STATE_FILE = "synth_state.json"


def plan_slides(config: SynthConfig, out_dir: Path, tables: dict[str, pd.DataFrame]) -> list[SlideJob]:
    """One job per (cohort, patient, slide). Test slides are second blocks: new seeds, same r."""
    jobs: list[SlideJob] = []
    for cohort, table in tables.items():
        validation = cohort == "validation"
        mpp = config.validation_base_mpp if validation else config.base_mpp
        px_scale = config.base_mpp / mpp          # same physical field at a coarser scan
        svs = validation and config.validation_format == "svs"
        first_block = 2 if cohort == "test" else 1
        for row in table.itertuples(index=False):
            for k in range(config.slides_per_patient):
                block = first_block + k * (2 if config.with_test else 1)
                slide_id = f"{row.patient_id}-{cohort}-{block}"
                suffix = ".svs" if svs else ".tiff"
                jobs.append(
                    SlideJob(
                        slide_id=slide_id,
                        patient_id=str(row.patient_id),
                        cohort=cohort,
                        path=out_dir / "slides" / cohort / f"{slide_id}{suffix}",
                        risk=float(row.risk),
                        entropy=(config.seed, COHORTS.index(cohort), int(str(row.patient_id)[1:]), block),
                        mpp=mpp,
                        width_px=int(round(config.width_px * px_scale)),
                        height_px=int(round(config.height_px * px_scale)),
                        size_jitter=config.size_jitter,
                        tissue_fraction=config.tissue_fraction,
                        tissue_fraction_jitter=config.tissue_fraction_jitter,
                        strength_40x=config.strength_40x,
                        strength_10x=config.strength_10x,
                        artefact_probability=config.artefact_probability,
                        stain_scale=1.0 + (config.validation_stain_shift if validation else 0.0),
                        blur_um=(config.validation_blur_px * config.base_mpp) if validation else 0.0,
                        tile_px=config.validation_tile_px if validation else config.tile_px,
                        jpeg_quality=config.validation_jpeg_quality if validation else config.jpeg_quality,
                        flavour="svs" if svs else "tiff",
                        level_step=4 if svs else 2,
                        max_levels=config.max_levels,
                    )
                )
    return jobs


def _run_jobs(jobs: list[SlideJob], config: SynthConfig) -> list[dict[str, Any]]:
    big = [j for j in jobs if max(j.width_px, j.height_px) >= config.bank_engine_min_px]
    small = [j for j in jobs if j not in big]
    rows: list[dict[str, Any]] = []
    progress = tqdm(total=len(jobs), desc="synth slides", unit="slide", disable=None)
    if small:
        if config.workers > 1 and len(small) > 1:
            with ProcessPoolExecutor(max_workers=config.workers) as pool:
                for row in pool.map(make_slide, small, chunksize=1):
                    rows.append(row)
                    progress.update()
        else:
            for job in small:
                rows.append(make_slide(job))
                progress.update()
    if big:
        from wsi_prognosis.synth.bigslide import make_big_slide  # the patch-bank engine

        for job in big:
            rows.append(make_big_slide(job, workers=config.workers))
            progress.update()
    progress.close()
    return rows


def _write_csv(path: Path, table: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")


def make_cohort(out_dir: str | Path, config: SynthConfig) -> dict[str, Any]:
    """Write a synthetic cohort into `out_dir` (see module doc). Returns paths and counts."""
    if not isinstance(config, SynthConfig):
        raise ConfigurationError(f"make_cohort: config must be a SynthConfig, got {type(config).__name__}. "
                                 "Fix: SynthConfig.from_preset('demo', seed=0).")
    config.validate()
    started = time.perf_counter()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = simulate_cohort_tables(config)
    jobs = plan_slides(config, out_dir, tables)

    fingerprint = config.fingerprint()
    state_path = out_dir / STATE_FILE
    previous = json.loads(state_path.read_text()).get("fingerprint") if state_path.is_file() else None
    write_text_atomic(state_path, json.dumps({"fingerprint": fingerprint, "config": config.to_dict()},
                                             indent=2, default=str) + "\n")
    summary_path = out_dir / "slides.csv"
    done_rows: dict[str, dict[str, Any]] = {}
    if previous == fingerprint and summary_path.is_file():
        done_rows = {r["slide_id"]: r for r in pd.read_csv(summary_path, dtype={"slide_id": str}).to_dict("records")}
    todo = [j for j in jobs if not (previous == fingerprint and j.path.is_file() and j.slide_id in done_rows)]
    log.info("synth: %d slides planned, %d to generate, %d already done", len(jobs), len(todo), len(jobs) - len(todo))
    new_rows = {r["slide_id"]: r for r in _run_jobs(todo, config)}
    rows = [new_rows.get(j.slide_id) or done_rows[j.slide_id] for j in jobs]

    manifest = pd.DataFrame(
        {
            "slide_id": [j.slide_id for j in jobs],
            "patient_id": [j.patient_id for j in jobs],
            "path": [j.path.relative_to(out_dir).as_posix() for j in jobs],
            "cohort": [j.cohort for j in jobs],
        }
    )
    patients = pd.concat([t for c, t in tables.items() if c != "test"], ignore_index=True)
    clinical = patients[["patient_id", "time", "event", "pT", "pN", "grade"]]
    truth = patients[["patient_id", "risk"]]
    summary = pd.DataFrame(rows).drop(columns=["cohort", "patient_id", "risk"], errors="ignore")
    summary.insert(1, "cohort", manifest["cohort"].to_numpy())
    summary.insert(2, "patient_id", manifest["patient_id"].to_numpy())
    summary.insert(3, "risk", [j.risk for j in jobs])
    paths = {name: out_dir / f"{name}.csv" for name in ("manifest", "clinical", "truth", "slides")}
    _write_csv(paths["manifest"], manifest)
    _write_csv(paths["clinical"], clinical)
    _write_csv(paths["truth"], truth)
    _write_csv(paths["slides"], summary)

    from wsi_prognosis.synth.gallery import write_gallery

    gallery = write_gallery(out_dir / "gallery.png",
                            manifest.assign(path=[str(j.path) for j in jobs], artefacts=summary["artefacts"].to_numpy()),
                            truth, mpp_40x=0.25, mpp_10x=1.0)
    seconds = time.perf_counter() - started
    counts = {c: int((manifest["cohort"] == c).sum()) for c in tables}
    result = {
        "out_dir": out_dir,
        "manifest": paths["manifest"],
        "clinical": paths["clinical"],
        "truth": paths["truth"],
        "slides_summary": paths["slides"],
        "gallery": gallery,
        "n_slides": len(jobs),
        "n_generated": len(todo),
        "n_skipped": len(jobs) - len(todo),
        "slides_per_cohort": counts,
        "seconds": seconds,
    }
    write_run_record(out_dir, "synth", config.to_dict(), seed=config.seed,
                     extra={"fingerprint": fingerprint, "n_slides": len(jobs), "n_generated": len(todo),
                            "slides_per_cohort": counts, "seconds": round(seconds, 2)})
    log.info("synth: %d slides (%d generated) in %.1f s -> %s", len(jobs), len(todo), seconds, out_dir)
    return result
