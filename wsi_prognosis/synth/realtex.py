"""Learning-benchmark cohorts on real H&E texture, with one planted prognostic signal per cohort.

The project's own generator (`render.py`) paints every pixel, so a recipe can learn its painter
rather than morphology. Here the tissue is real: mosaics of real H&E patches (the TCGA and CMU
slides and tiles shipped in `tests/data`), and the risk r of each patient is planted as ONE kind of
morphology, each visible at one scale:

- ``nuclear`` (40x): epithelial nuclei grow, elongate, become pleomorphic, vesicular and
  nucleolated with r; their count stays fixed and their haematoxylin mass per nucleus too, so at
  10x a nucleus is a blob of the same darkness whatever r.
- ``architecture`` (10x): glands go from round tubules to ragged, cribriform and solid ones
  (`render.draw_glands`, the same painter as the synthetic slides).
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
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
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
from wsi_prognosis.synth.morphology import architecture_params
from wsi_prognosis.synth.outcomes import simulate_cohort_tables
from wsi_prognosis.synth.writer import PyramidLayout, level_downsamples, write_pyramid

log = logging.getLogger(__name__)

SIGNALS = ("nuclear", "architecture", "immune", "stroma")
SOURCE_MPP = 0.5                 # the texture pool's resolution (µm/px)
PATCH_PX = 96                    # pool patches at SOURCE_MPP (48 µm)
PATCH_STEP = 80                  # mosaic step: 16 px of feathered overlap
H_OD = np.array([0.65, 0.70, 0.29], np.float32)   # haematoxylin OD per unit concentration (R, G, B)
E_OD = np.array([0.07, 0.99, 0.11], np.float32)   # eosin
GLASS = np.array([241, 242, 240], np.float32)

# Where the real pixels come from (paths relative to the texture folder, which has the layout of
# tests/data). Source µm/px: CMU-1 records 0.499; the reduced TCGA-CR slide records none, 0.5 is
# assumed (its nuclei measure 6-10 px across, as at 0.5 µm/px); TCGA diagnostic tiles are 40x
# (0.25 µm/px); CRC-VAL-HE-7K tiles are 0.5 µm/px.
SITES: dict[str, tuple[tuple[str, float], ...]] = {
    "site_a": (("slides/CMU-1-Small-Region.svs", 0.499), ("slides/TCGA-CR-7395-01A-01-TS1.svs", 0.5)),
    "site_b": (("tiles/TCGA-AD-6964-01Z-00-DX1_tile_16896_20480.jpg", 0.25),
               ("tiles/TCGA-AD-6964-01Z-00-DX1_tile_22016_11776.jpg", 0.25),
               ("tiles/TCGA-AD-6964-01Z-00-DX1_tile_23040_25088.jpg", 0.25),
               ("tiles/CRC-VAL-HE-7K_NORM-TCGA-YLVCMEHK.tif", 0.5)),
}


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


# ---------------------------------------------------------------------------- the texture pool
def _read_source(path: Path, mpp: float) -> np.ndarray:
    """A whole source image as RGB uint8, resampled to SOURCE_MPP."""
    if path.suffix.lower() == ".svs":
        import openslide

        with openslide.OpenSlide(str(path)) as slide:
            rgb = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))
    else:
        rgb = np.asarray(Image.open(path).convert("RGB"))
    scale = mpp / SOURCE_MPP
    if abs(scale - 1) > 0.02:
        h, w = rgb.shape[:2]
        rgb = np.asarray(Image.fromarray(rgb).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                                     Image.LANCZOS))
    return rgb


def _haematoxylin(rgb: np.ndarray) -> np.ndarray:
    """Haematoxylin concentration per pixel (colour deconvolution, scikit-image's HED)."""
    from skimage.color import rgb2hed

    return rgb2hed(rgb)[..., 0]


@lru_cache(maxsize=4)
def texture_pool(texture_dir: str, site: str) -> dict[str, np.ndarray]:
    """Tissue-only patches (N, PATCH_PX, PATCH_PX, 3) uint8 of a site and each patch's haematoxylin
    level; cached per process (workers build it once)."""
    patches: list[np.ndarray] = []
    for rel, mpp in SITES[site]:
        rgb = _read_source(Path(texture_dir) / rel, mpp)
        grey = rgb.mean(-1)
        sat = rgb.max(-1).astype(np.int16) - rgb.min(-1)
        tissue = (grey < 215) & (sat > 18)
        step = PATCH_PX // 4 if min(rgb.shape[:2]) < 400 else PATCH_PX // 2
        for y in range(0, rgb.shape[0] - PATCH_PX + 1, step):
            for x in range(0, rgb.shape[1] - PATCH_PX + 1, step):
                if tissue[y:y + PATCH_PX, x:x + PATCH_PX].mean() >= 0.92:
                    patches.append(rgb[y:y + PATCH_PX, x:x + PATCH_PX])
    if not patches:
        raise ConfigurationError(f"realtex: no tissue patches in {site}'s sources under {texture_dir}.")
    stack = np.stack(patches)
    h_level = np.array([_haematoxylin(p).mean() for p in stack], np.float32)
    return {"patches": stack, "h_level": h_level}


# ---------------------------------------------------------------------------- mosaic and stains
def _feather(px: int, overlap: int) -> np.ndarray:
    ramp = np.minimum(np.minimum(np.arange(px) + 1, px - np.arange(px)) / overlap, 1.0).astype(np.float32)
    return np.outer(ramp, ramp)


def mosaic(rng: np.random.Generator, patches: np.ndarray, height: int, width: int) -> np.ndarray:
    """(height, width, 3) float32 RGB at SOURCE_MPP from randomly flipped/rotated pool patches,
    on a grid with a random offset and feathered seams."""
    weight = _feather(PATCH_PX, PATCH_PX - PATCH_STEP)
    acc = np.zeros((height + 2 * PATCH_PX, width + 2 * PATCH_PX, 3), np.float32)
    wsum = np.zeros(acc.shape[:2], np.float32)
    oy, ox = rng.integers(0, PATCH_STEP, 2)
    for y in range(-int(oy), height, PATCH_STEP):
        for x in range(-int(ox), width, PATCH_STEP):
            patch = np.rot90(patches[rng.integers(len(patches))], int(rng.integers(4)))
            if rng.random() < 0.5:
                patch = patch[:, ::-1]
            ys, xs = y + PATCH_PX, x + PATCH_PX
            acc[ys:ys + PATCH_PX, xs:xs + PATCH_PX] += patch * weight[..., None]
            wsum[ys:ys + PATCH_PX, xs:xs + PATCH_PX] += weight
    sl = (slice(PATCH_PX, PATCH_PX + height), slice(PATCH_PX, PATCH_PX + width))
    return acc[sl] / np.maximum(wsum[sl], 1e-6)[..., None]


def rescale_stains(rgb: np.ndarray, h_scale: float, e_scale: float) -> np.ndarray:
    """RGB float32 with haematoxylin and eosin optical densities scaled (scikit-image HED space)."""
    from skimage.color import hed2rgb, rgb2hed

    hed = rgb2hed(np.clip(rgb, 1, 255).astype(np.uint8))
    hed[..., 0] *= h_scale
    hed[..., 1] *= e_scale
    return (hed2rgb(hed) * 255.0).astype(np.float32)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    small = (max(8, int(shape[0] / sigma_px * 4)), max(8, int(shape[1] / sigma_px * 4)))
    noise = ndimage.gaussian_filter(rng.standard_normal(small).astype(np.float32), 2.0, mode="wrap")
    return np.asarray(Image.fromarray(noise, mode="F").resize((shape[1], shape[0]), Image.BICUBIC))


def tissue_mask(rng: np.random.Generator, shape: tuple[int, int], fraction: float) -> np.ndarray:
    """One or two ragged tissue pieces covering `fraction` of the field (area set by the quantile)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy / h, xx / w
    env = np.full(shape, -1.0, np.float32)
    for _ in range(int(rng.integers(1, 3))):
        cx, cy, ax, ay = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6), rng.uniform(0.3, 0.45), rng.uniform(0.3, 0.45)
        env = np.maximum(env, 1 - ((xx - cx) / ax) ** 2 - ((yy - cy) / ay) ** 2)
    border = np.minimum.reduce([xx, 1 - xx, yy, 1 - yy])
    field_ = env + 0.35 * _smooth_field(rng, shape, max(h, w) / 6) - 6.0 * np.clip(0.1 - border, 0, None)
    return field_ > np.quantile(field_, 1 - fraction)


# ---------------------------------------------------------------------------- planted features
@dataclass(frozen=True)
class NucleiLook:
    density_per_mm2: float
    radius_um: float
    radius_cv: float        # pleomorphism
    aspect: float           # mean long/short axis
    mass: float             # haematoxylin concentration x area / (pi * 2.7² µm²): fixed "DNA" per nucleus
    texture: float          # chromatin coarseness
    nucleolus_probability: float


def _sig(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


def tumour_nuclei(n: float) -> NucleiLook:
    """Epithelial nuclei at planted level n (strength x r, clipped to +-2.5): size, shape, chromatin."""
    n = float(np.clip(n, -2.5, 2.5))
    return NucleiLook(density_per_mm2=5200.0, radius_um=2.7 * np.exp(0.13 * n),
                      radius_cv=float(np.clip(0.08 * np.exp(0.5 * n), 0.03, 0.35)),
                      aspect=1.0 + 0.55 * _sig(1.6 * n - 0.3), mass=1.0, texture=float(np.clip(0.2 + 0.12 * n, 0.02, 0.6)),
                      nucleolus_probability=_sig(1.8 * n - 1.6))


def lymphocytes(n: float) -> NucleiLook:
    """Lymphocytes at planted level n: fewer as n (risk) grows; always small, round and dark."""
    n = float(np.clip(n, -2.5, 2.5))
    return NucleiLook(density_per_mm2=2600.0 * np.exp(-0.75 * n), radius_um=2.1, radius_cv=0.06, aspect=1.05,
                      mass=1.15, texture=0.05, nucleolus_probability=0.0)


def plant_nuclei(rng: np.random.Generator, conc: np.ndarray, allowed: np.ndarray, look: NucleiLook, mpp: float) -> int:
    """Add `look`'s nuclei (haematoxylin concentration) into `conc` at random places where `allowed`."""
    h, w = conc.shape
    area_mm2 = float(allowed.sum()) * (mpp * 1e-3) ** 2
    count = int(rng.poisson(look.density_per_mm2 * area_mm2))
    ys, xs = np.nonzero(allowed)
    if count == 0 or ys.size == 0:
        return 0
    pick = rng.integers(0, ys.size, count)
    base_area = np.pi * (2.7 / mpp) ** 2
    for cy, cx in zip(ys[pick], xs[pick]):
        r = look.radius_um / mpp * float(np.exp(look.radius_cv * rng.standard_normal()))
        aspect = max(1.0, look.aspect * float(np.exp(0.5 * look.radius_cv * rng.standard_normal())))
        a, b = r * np.sqrt(aspect), r / np.sqrt(aspect)
        theta = rng.uniform(0, np.pi)
        reach = int(a + 2)
        y0, y1, x0, x1 = max(cy - reach, 0), min(cy + reach + 1, h), max(cx - reach, 0), min(cx + reach + 1, w)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
        v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
        d = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        inside = np.clip((1.0 - d) * r * 0.8 + 0.5, 0, 1)      # ~1 px soft edge
        level = look.mass * base_area / (np.pi * a * b) * 0.9
        chromatin = 1.0 + look.texture * rng.standard_normal(inside.shape).astype(np.float32)
        blob = inside * level * np.clip(chromatin, 0.3, None)
        if rng.random() < look.nucleolus_probability:
            nr = max(0.8 / mpp * 0.6, 1.2)
            ny, nx = cy + rng.normal(0, 0.2 * b), cx + rng.normal(0, 0.2 * b)
            blob += 1.2 * (np.hypot(xx - nx, yy - ny) < nr)
        box = conc[y0:y1, x0:x1]
        np.maximum(box, blob, out=box)
    return count


def plant_glands(rng: np.random.Generator, tissue: np.ndarray, n: float, mpp: float) -> tuple[np.ndarray, np.ndarray]:
    """Glands whose disruption follows n (render.draw_glands): (epithelium mask, lumen mask)."""
    from wsi_prognosis.synth.render import EPITHELIUM, LUMEN, STROMA, FieldSpec, draw_glands

    h, w = tissue.shape
    spec = FieldSpec(width_px=w, height_px=h, mpp=mpp, risk=n, strength_10x=1.0)
    label = np.where(tissue, STROMA, 0).astype(np.uint8)
    gland_id = np.zeros((h, w), np.int32)
    draw_glands(rng, spec, tissue, architecture_params(n, 1.0), label, gland_id)
    return label == EPITHELIUM, label == LUMEN


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


__all__ = ["RealTexConfig", "SIGNALS", "make_realtex_cohort", "render_slide", "texture_pool"]
