"""The patch-bank engine for benchmark-size slides, on a slide small enough for a test."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import openslide
import pytest

from wsi_prognosis.cohort import read_manifest
from wsi_prognosis.synth import SynthConfig, make_cohort
from wsi_prognosis.synth import bigslide


@pytest.fixture(scope="module")
def big_cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthConfig]:
    # 6144 x 4096 px through the bank engine (as the 80,000 x 60,000 benchmark slide is made)
    config = SynthConfig.from_preset("benchmark", seed=8, width_px=6144, height_px=4096, bank_engine_min_px=4096)
    out = tmp_path_factory.mktemp("synth_big")
    patches = bigslide.N_PATCHES
    bigslide.N_PATCHES = 3                      # a smaller bank: the engine is the same
    try:
        make_cohort(out, config)
    finally:
        bigslide.N_PATCHES = patches
    return out, config


def test_big_slide_opens_with_pyramid_and_mpp(big_cohort: tuple[Path, SynthConfig]) -> None:
    out, _ = big_cohort
    (row,) = read_manifest(out / "manifest.csv").itertuples()
    with openslide.OpenSlide(row.path) as slide:
        assert slide.dimensions == (6144, 4096)
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.25)
        assert [round(d) for d in slide.level_downsamples] == [1, 2, 4, 8, 16, 32]
        thumb = np.asarray(slide.read_region((0, 0), 5, slide.level_dimensions[5]).convert("RGB")).astype(int)
        tissue = (thumb.max(-1) - thumb.min(-1)) > 20
        assert 0.25 < tissue.mean() < 0.5                     # ~38 % tissue
        # levels agree: level 2 is level 0 reduced 4x (up to JPEG), inside the tissue
        ys, xs = np.nonzero(tissue)
        cy, cx = int(np.median(ys)) * 32, int(np.median(xs)) * 32
        base = slide.read_region((cx, cy), 0, (1024, 1024)).convert("RGB")
        level2 = np.asarray(slide.read_region((cx, cy), 2, (256, 256)).convert("RGB")).astype(int)
        reduced = np.asarray(base.reduce(4)).astype(int)
        assert np.abs(level2 - reduced).mean() < 6
        assert np.asarray(base).std() > 20                    # real texture, not a flat fill


def test_big_slide_is_deterministic(big_cohort: tuple[Path, SynthConfig], tmp_path: Path) -> None:
    out, config = big_cohort
    patches = bigslide.N_PATCHES
    bigslide.N_PATCHES = 3
    try:
        make_cohort(tmp_path, config.replace(workers=1))
    finally:
        bigslide.N_PATCHES = patches
    digest = [hashlib.sha256(next((d / "slides").rglob("*.tiff")).read_bytes()).hexdigest() for d in (out, tmp_path)]
    assert digest[0] == digest[1]
