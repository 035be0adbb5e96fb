"""One synthetic slide from its job description: draw the look, render, write the pyramid.

A job carries everything (risk, seed entropy, lab look), so workers need no shared state and the
pixels depend only on the seed, never on which worker ran the job or in which order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsi_prognosis.synth import artefacts
from wsi_prognosis.synth.render import FieldSpec, render_field
from wsi_prognosis.synth.writer import PyramidLayout, level_downsamples, write_pyramid


@dataclass(frozen=True)
class SlideJob:
    slide_id: str
    patient_id: str
    cohort: str
    path: Path
    risk: float
    entropy: tuple[int, ...]      # seeds this slide's generator
    mpp: float                    # level-0 µm/px
    width_px: int                 # nominal level-0 size before jitter
    height_px: int
    size_jitter: float
    tissue_fraction: float
    tissue_fraction_jitter: float
    strength_40x: float
    strength_10x: float
    artefact_probability: float
    stain_scale: float
    blur_um: float
    tile_px: int
    jpeg_quality: int
    flavour: str                  # "tiff" | "svs"
    level_step: int               # 2 (1, 2, 4, ...) or 4 (SVS-like 1, 4, 16)
    max_levels: int


def field_spec(job: SlideJob, rng: np.random.Generator) -> FieldSpec:
    """The slide's size, tissue fraction and artefacts: all drawn independently of the risk."""
    scale_w, scale_h, tissue_u = rng.uniform(-1, 1, 3)
    chosen = artefacts.choose(rng, job.artefact_probability)
    # sizes are multiples of the largest downsample, so every level is exactly 1/ds of level 0
    quantum = max(level_downsamples(job.width_px, job.height_px, job.level_step, job.max_levels))
    return FieldSpec(
        width_px=quantum * max(int(round(job.width_px * (1 + job.size_jitter * scale_w) / quantum)), 1),
        height_px=quantum * max(int(round(job.height_px * (1 + job.size_jitter * scale_h) / quantum)), 1),
        mpp=job.mpp,
        risk=job.risk,
        strength_40x=job.strength_40x,
        strength_10x=job.strength_10x,
        tissue_fraction=float(np.clip(job.tissue_fraction + job.tissue_fraction_jitter * tissue_u, 0.05, 0.9)),
        stain_scale=job.stain_scale,
        blur_um=job.blur_um,
        artefacts=chosen,
    )


def layout_for(job: SlideJob, width_px: int, height_px: int) -> PyramidLayout:
    return PyramidLayout(
        tile_px=job.tile_px,
        downsamples=level_downsamples(width_px, height_px, job.level_step, job.max_levels),
        jpeg_quality=job.jpeg_quality,
        flavour=job.flavour,
    )


def make_slide(job: SlideJob) -> dict[str, object]:
    """Render and write one slide (atomically). Returns its summary row (sizes, stats)."""
    rng = np.random.default_rng(np.random.SeedSequence(list(job.entropy)))
    spec = field_spec(job, rng)
    result = render_field(spec, rng)
    write_pyramid(job.path, result.rgb, mpp=job.mpp, layout=layout_for(job, spec.width_px, spec.height_px))
    return {
        "slide_id": job.slide_id,
        "width_px": spec.width_px,
        "height_px": spec.height_px,
        "artefacts": "+".join(spec.artefacts),
        **{k: round(float(v), 6) for k, v in result.stats.items()},
    }
