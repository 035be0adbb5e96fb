"""Learning-benchmark cohorts on real H&E texture, with one planted prognostic signal per cohort.

The project's own generator (`render.py`) paints every pixel, so a recipe can learn its painter
rather than morphology. Here the tissue is real: mosaics of real H&E patches (the TCGA and CMU
slides and tiles shipped in `tests/data`), and the risk r of each patient is planted as ONE kind of
morphology, each visible at one scale:

- ``nuclear`` (40x): epithelial nuclei grow, elongate, become pleomorphic, vesicular and
  nucleolated with r; their count stays fixed and their haematoxylin mass per nucleus too, so at
  10x a nucleus is a blob of the same darkness whatever r.
- ``architecture`` (10x): glands go from round tubules to ragged, cribriform and solid ones
  (`layout.draw_glands`, the same painter as the synthetic slides).
- ``immune`` (10x): the density of lymphocytes (small, round, very dark nuclei) falls with r.
- ``stroma`` (10x): the share of the tissue that is stroma (eosin-rich real patches, versus
  cellular ones) rises with r (tumour-stroma ratio).

The other kinds' features are still drawn (nuclei and lymphocytes from a nuisance risk that is
independent of r), so the network must find the planted kind among similar-looking variation.
Per-slide stain variation is independent of r. The validation cohort comes from another
"site": other source tissue (the colorectal tiles instead of the skin/head-and-neck slides), a
changed H&E optical density, a slight blur and JPEG quality 70.

Survival follows the synthetic Weibull model on r (`outcomes.simulate_cohort_tables`): same
tables, truth.csv, manifest.csv and clinical.csv (with a grade that is a noisy reading of r) as
`make_cohort`, so every stage runs on it unchanged.

Here: the configuration, one slide (`render_slide`) and the cohort; the texture pool and mosaics
are in `realtex_texture`, the planted features in `realtex_features` (their names are
re-exported here).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from wsi_prognosis.atomic import atomic_path, write_text_atomic
from wsi_prognosis.errors import ConfigurationError
from wsi_prognosis.provenance import write_run_record
from wsi_prognosis.synth.config import COHORTS, OutcomeParams, SynthConfig
from wsi_prognosis.synth.outcomes import simulate_cohort_tables
from wsi_prognosis.synth.realtex_features import (E_OD, H_OD, NucleiLook, _sig, lymphocytes, plant_glands, plant_nuclei,
                                                  tumour_nuclei)
from wsi_prognosis.synth.realtex_texture import (PATCH_PX, PATCH_STEP, SITES, SOURCE_MPP, _smooth_field, mosaic,
                                                 rescale_stains, texture_pool, tissue_mask)
from wsi_prognosis.synth.writer import PyramidLayout, level_downsamples, write_pyramid

log = logging.getLogger(__name__)

SIGNALS = ("nuclear", "architecture", "immune", "stroma")
GLASS = np.array([241, 242, 240], np.float32)


@dataclass(frozen=True)
class RealTexConfig:
    """A real-texture cohort: which signal, how many patients, slide size, the validation site's look."""

    texture_dir: str
    signal: str = "nuclear"
    strength: float = 1.0
    seed: int = 0
    n_training: int = 200
    n_tuning: int = 80
    n_validation: int = 100
    with_test: bool = True              # test = training patients, a second block
    width_um: float = 384.0
    height_um: float = 288.0
    base_mpp: float = 0.25
    tissue_fraction: float = 0.6
    stain_jitter: float = 0.08          # per-slide SD of log H and log E scale (independent of r)
    jpeg_quality: int = 85
    train_site: str = "site_a"
    validation_site: str = "site_b"
    validation_stain: tuple[float, float] = (1.15, 0.85)   # H and E optical density scale
    validation_blur_um: float = 0.3     # Gaussian sigma
    validation_jpeg_quality: int = 70
    outcome: OutcomeParams = field(default_factory=OutcomeParams)
    workers: int = 2

    def validate(self) -> None:
        if self.signal not in SIGNALS:
            raise ConfigurationError(f"realtex: signal={self.signal!r} is unknown. Fix: one of {SIGNALS}.")
        for site in (self.train_site, self.validation_site):
            if site not in SITES:
                raise ConfigurationError(f"realtex: site {site!r} is unknown. Fix: one of {sorted(SITES)}.")
        missing = [p for site in (self.train_site, self.validation_site) for p, _ in SITES[site]
                   if not (Path(self.texture_dir) / p).is_file()]
        if missing:
            raise ConfigurationError(
                f"realtex: {Path(self.texture_dir) / missing[0]}: texture source not found. Fix: texture_dir= a "
                "folder laid out like the project's tests/data (slides/ and tiles/ with the real H&E files).")
        if min(self.width_um, self.height_um) < 128:
            raise ConfigurationError("realtex: width_um and height_um must be at least 128 µm.")

    def fingerprint(self) -> str:
        import hashlib

        payload = {k: v for k, v in dataclasses.asdict(self).items() if k != "workers"}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- one slide
@dataclass(frozen=True)
class RealTexJob:
    slide_id: str
    path: Path
    risk: float
    nuisance: tuple[float, float]      # independent risks for the features that are not the signal
    entropy: tuple[int, ...]
    config: RealTexConfig
    site: str
    validation: bool


def render_slide(job: RealTexJob) -> tuple[np.ndarray, dict[str, float]]:
    """(H, W, 3) uint8 at base_mpp and a few statistics of what was planted."""
    c = job.config
    rng = np.random.default_rng(np.random.SeedSequence(list(job.entropy)))
    n_sig = c.strength * job.risk
    nuis_nuc, nuis_imm = job.nuisance
    quantum = 32
    h = int(round(c.height_um / c.base_mpp / quantum)) * quantum
    w = int(round(c.width_um / c.base_mpp / quantum)) * quantum
    up = SOURCE_MPP / c.base_mpp
    hs, ws = int(np.ceil(h / up)), int(np.ceil(w / up))
    pool = texture_pool(c.texture_dir, job.site)
    stats: dict[str, float] = {}
    if c.signal == "stroma":
        order = np.argsort(pool["h_level"])
        third = max(1, len(order) // 3)
        stroma_rgb = mosaic(rng, pool["patches"][order[:third]], hs, ws)
        cell_rgb = mosaic(rng, pool["patches"][order[-third:]], hs, ws)
        share = 0.12 + 0.66 * _sig(1.3 * float(np.clip(n_sig, -2.5, 2.5)))
        region = _smooth_field(rng, (hs, ws), 40.0)
        is_stroma = region > np.quantile(region, 1 - share)
        soft = ndimage.gaussian_filter(is_stroma.astype(np.float32), 2.0)[..., None]
        rgb_small = soft * stroma_rgb + (1 - soft) * cell_rgb
        stats["stroma_share"] = float(is_stroma.mean())
    else:
        rgb_small = mosaic(rng, pool["patches"], hs, ws)
    h_scale = float(np.exp(rng.normal(0, c.stain_jitter)))
    e_scale = float(np.exp(rng.normal(0, c.stain_jitter)))
    if job.validation:
        h_scale *= c.validation_stain[0]
        e_scale *= c.validation_stain[1]
    rgb_small = rescale_stains(rgb_small, h_scale, e_scale)
    rgb = np.asarray(Image.fromarray(np.clip(rgb_small + 0.5, 0, 255).astype(np.uint8))
                     .resize((int(round(ws * up)), int(round(hs * up))), Image.BICUBIC),
                     np.float32)[:h, :w]
    tissue = tissue_mask(rng, (h, w), c.tissue_fraction)
    mpp = c.base_mpp

    # planted stains in optical density, added on top of the real texture's
    conc = np.zeros((h, w), np.float32)
    od = -np.log(np.clip(rgb, 1, 255) / 255.0)
    if c.signal == "architecture":
        epithelium, lumen = plant_glands(rng, tissue, float(np.clip(n_sig, -2.5, 2.5)), mpp)
        od[lumen] = od[lumen] * 0.15
        od[epithelium] += 0.18 * H_OD + 0.10 * E_OD
        epi_area = float(epithelium.sum() + lumen.sum())
        stats["lumen_fraction"] = float(lumen.sum()) / max(epi_area, 1.0)
        nuclei_where = epithelium
    else:
        nuclei_where = tissue
    nuc_level = n_sig if c.signal == "nuclear" else nuis_nuc
    imm_level = n_sig if c.signal == "immune" else nuis_imm
    stats["n_tumour_nuclei"] = plant_nuclei(rng, conc, nuclei_where, tumour_nuclei(nuc_level), mpp)
    stats["n_lymphocytes"] = plant_nuclei(rng, conc, tissue, lymphocytes(imm_level), mpp)
    od += conc[..., None] * (0.55 * h_scale) * H_OD
    rgb = 255.0 * np.exp(-od)
    rgb = np.where(tissue[..., None], rgb, GLASS + rng.normal(0, 1.5, (h, w, 1)).astype(np.float32))
    edge = ndimage.gaussian_filter(tissue.astype(np.float32), 1.5)[..., None]
    rgb = edge * rgb + (1 - edge) * GLASS
    if job.validation and c.validation_blur_um > 0:
        sigma = c.validation_blur_um / mpp
        rgb = ndimage.gaussian_filter(rgb, (sigma, sigma, 0))
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8), stats


def make_realtex_slide(job: RealTexJob) -> dict[str, Any]:
    rgb, stats = render_slide(job)
    c = job.config
    layout = PyramidLayout(tile_px=512 if job.validation else 256,
                           downsamples=level_downsamples(rgb.shape[1], rgb.shape[0], 2, 6),
                           jpeg_quality=c.validation_jpeg_quality if job.validation else c.jpeg_quality)
    write_pyramid(job.path, rgb, mpp=c.base_mpp, layout=layout)
    return {"slide_id": job.slide_id, "width_px": rgb.shape[1], "height_px": rgb.shape[0],
            **{k: round(float(v), 5) for k, v in stats.items()}}


# ---------------------------------------------------------------------------- the cohort
def make_realtex_cohort(out_dir: str | Path, config: RealTexConfig) -> dict[str, Any]:
    """Write slides/, manifest.csv, clinical.csv, truth.csv, slides.csv (as `make_cohort`). Resumable:
    a rerun with the same configuration keeps the slides that exist."""
    config.validate()
    started = time.perf_counter()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tables = simulate_cohort_tables(SynthConfig.from_preset(
        "demo", seed=config.seed, n_training=config.n_training, n_tuning=config.n_tuning,
        n_validation=config.n_validation, with_test=config.with_test, **dataclasses.asdict(config.outcome)))
    fingerprint = config.fingerprint()
    state = out / "realtex_state.json"
    same = state.is_file() and json.loads(state.read_text()).get("fingerprint") == fingerprint
    write_text_atomic(state, json.dumps({"fingerprint": fingerprint, "config": dataclasses.asdict(config)},
                                        indent=2, default=str) + "\n")
    jobs: list[RealTexJob] = []
    manifest_rows = []
    for cohort, table in tables.items():
        validation = cohort == "validation"
        block = 2 if cohort == "test" else 1
        nuis_rng = np.random.default_rng(np.random.SeedSequence([config.seed, 99, COHORTS.index(cohort)]))
        for row in table.itertuples(index=False):
            slide_id = f"{row.patient_id}-{cohort}-{block}"
            path = out / "slides" / cohort / f"{slide_id}.tiff"
            jobs.append(RealTexJob(
                slide_id=slide_id, path=path, risk=float(row.risk),
                nuisance=(float(nuis_rng.standard_normal()), float(nuis_rng.standard_normal())),
                entropy=(config.seed, 17, COHORTS.index(cohort), int(str(row.patient_id)[1:]), block),
                config=config, site=config.validation_site if validation else config.train_site,
                validation=validation))
            manifest_rows.append({"slide_id": slide_id, "patient_id": row.patient_id,
                                  "path": path.relative_to(out).as_posix(), "cohort": cohort})
    todo = [j for j in jobs if not (same and j.path.is_file())]
    for j in todo:
        j.path.parent.mkdir(parents=True, exist_ok=True)
    print(f"realtex ({config.signal}): {len(jobs)} slides, {len(todo)} to render", flush=True)
    rows: list[dict[str, Any]] = []
    if todo:
        if config.workers > 1:
            with ProcessPoolExecutor(config.workers) as pool:
                for i, row in enumerate(pool.map(make_realtex_slide, todo, chunksize=4), 1):
                    rows.append(row)
                    if i % 50 == 0 or i == len(todo):
                        print(f"  rendered {i}/{len(todo)} slides ({time.perf_counter() - started:.0f} s)", flush=True)
        else:
            rows = [make_realtex_slide(j) for j in todo]
    patients = pd.concat([t for c, t in tables.items() if c != "test"], ignore_index=True)
    paths = {name: out / f"{name}.csv" for name in ("manifest", "clinical", "truth")}
    for name, frame in (("manifest", pd.DataFrame(manifest_rows)),
                        ("clinical", patients[["patient_id", "time", "event", "pT", "pN", "grade"]]),
                        ("truth", patients[["patient_id", "risk"]])):
        with atomic_path(paths[name]) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6g")
    if rows:
        with atomic_path(out / "slides.csv") as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
    seconds = time.perf_counter() - started
    write_run_record(out, "synth", dataclasses.asdict(config), seed=config.seed,
                     extra={"generator": "realtex", "fingerprint": fingerprint, "n_slides": len(jobs),
                            "n_generated": len(todo), "seconds": round(seconds, 1)})
    return {"out_dir": out, **paths, "n_slides": len(jobs), "n_generated": len(todo), "seconds": seconds}


__all__ = ["RealTexConfig", "RealTexJob", "SIGNALS", "make_realtex_cohort", "make_realtex_slide", "render_slide",
           "texture_pool", "mosaic", "rescale_stains", "tissue_mask", "NucleiLook", "tumour_nuclei", "lymphocytes",
           "plant_nuclei", "plant_glands", "SITES", "SOURCE_MPP", "PATCH_PX", "PATCH_STEP", "H_OD", "E_OD", "GLASS"]
