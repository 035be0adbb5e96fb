"""The risk signal is morphological, per scale, and survives none of the shortcuts.

Hundreds of slides are needed to bound a C-index near 0.5, so these tests render the same
slides as the cohort (same jobs: size, tissue fraction, artefacts, stain jitter, risk) at
1 µm/px instead of 0.25 µm/px (16x fewer pixels), in two processes, without writing files.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines.utils import concordance_index
from scipy.stats import spearmanr

from wsi_prognosis.synth import SynthConfig, simulate_cohort_tables
from wsi_prognosis.synth.cohort import plan_slides
from wsi_prognosis.synth.render import render_field
from wsi_prognosis.synth.slides import SlideJob, field_spec

RENDER_MPP = 1.0


def _render_stats(job: SlideJob, render_mpp: float = RENDER_MPP) -> dict[str, float]:
    """Render one slide at `render_mpp` and measure what a shortcut-seeking model could use."""
    scale = job.mpp / render_mpp
    job = dataclasses.replace(job, mpp=render_mpp, width_px=int(job.width_px * scale),
                              height_px=int(job.height_px * scale))
    rng = np.random.default_rng(np.random.SeedSequence(list(job.entropy)))
    spec = field_spec(job, rng)
    result = render_field(spec, rng)
    rgb = result.rgb.astype(np.float32)
    saturation = rgb.max(-1) - rgb.min(-1)
    tissue_od = -np.log(np.clip(rgb[result.tissue].mean(0), 1, 255) / 255.0)
    return {
        "patient_id": job.patient_id,
        "risk": job.risk,
        "mean_r": rgb[..., 0].mean(), "mean_g": rgb[..., 1].mean(), "mean_b": rgb[..., 2].mean(),
        "mean_brightness": rgb.mean(),
        "tissue_mean_brightness": rgb[result.tissue].mean(),
        "tissue_area_um2": result.tissue.sum() * render_mpp ** 2,
        "measured_tissue_area_um2": (saturation > 20).sum() * render_mpp ** 2,
        "slide_area_um2": spec.width_px * spec.height_px * render_mpp ** 2,
        "tissue_od_r": tissue_od[0], "tissue_od_g": tissue_od[1], "tissue_od_b": tissue_od[2],
        # a local, morphological pixel statistic: share of tissue pixels dark enough to be chromatin
        "dark_pixel_share": float((rgb[result.tissue].max(-1) < 110).mean()),
        **{k: result.stats[k] for k in ("nuclear_area_um2", "lumen_fraction", "solid_fraction")},
    }


def _render_cohort(config: SynthConfig, cohort: str, render_mpp: float = RENDER_MPP) -> pd.DataFrame:
    tables = simulate_cohort_tables(config)
    jobs = [j for j in plan_slides(config, Path("/nonexistent"), tables) if j.cohort == cohort]
    with ProcessPoolExecutor(max_workers=2) as pool:
        rows = list(pool.map(_render_stats, jobs, [render_mpp] * len(jobs), chunksize=8))
    stats = pd.DataFrame(rows)
    return stats.merge(tables[cohort][["patient_id", "time", "event"]], on="patient_id")


@pytest.fixture(scope="module")
def population() -> pd.DataFrame:
    # 400 patients from the population (the tuning cohort's sampling): under no association the
    # C-index has a standard deviation of about 0.5 / sqrt(n_events) / 1.7 ~ 0.02 here, so the
    # 0.50 +- 0.05 band is about 2.5 standard deviations wide, while the risk itself gives ~0.78.
    config = SynthConfig.from_preset("demo", seed=101, n_training=0, with_test=False, n_tuning=400,
                                n_validation=0)
    return _render_cohort(config, "tuning")


def _c_index(table: pd.DataFrame, column: str) -> float:
    return concordance_index(table["time"], -table[column], table["event"])


def test_signal_is_there(population: pd.DataFrame) -> None:
    assert population["event"].sum() > 150
    assert _c_index(population, "risk") >= 0.70
    # morphology carries it: nuclei (40x) and glands (10x), and a purely local pixel statistic
    assert _c_index(population, "nuclear_area_um2") >= 0.65
    assert _c_index(population, "lumen_fraction") <= 0.35          # more lumen = better outcome
    assert _c_index(population, "dark_pixel_share") >= 0.62


@pytest.mark.parametrize("shortcut", [
    "mean_r", "mean_g", "mean_b", "mean_brightness", "tissue_mean_brightness",
    "tissue_area_um2", "measured_tissue_area_um2", "slide_area_um2",
])
def test_shortcuts_do_not_predict_outcome(population: pd.DataFrame, shortcut: str) -> None:
    c_index = _c_index(population, shortcut)
    assert abs(c_index - 0.5) <= 0.05, (shortcut, c_index)


def test_each_scale_can_be_switched_off() -> None:
    """strength_10x=0: architecture ignores r, nuclei still follow it; strength_40x=0: the reverse.

    The statistics are the renderer's own measurements (label maps, nuclear shapes), so 2 µm/px
    is enough to compute them.
    """
    base = dict(seed=202, n_training=0, with_test=False, n_tuning=150, n_validation=0)
    no_10x = _render_cohort(SynthConfig.from_preset("demo", strength_10x=0.0, **base), "tuning", 2.0)
    no_40x = _render_cohort(SynthConfig.from_preset("demo", strength_40x=0.0, **base), "tuning", 2.0)

    def rho(table: pd.DataFrame, column: str) -> float:
        return float(spearmanr(table["risk"], table[column], nan_policy="omit").statistic)

    # 150 slides: |Spearman rho| under independence is below 0.16 with 95 % probability
    assert abs(rho(no_10x, "lumen_fraction")) < 0.2
    assert abs(rho(no_10x, "solid_fraction")) < 0.2
    assert rho(no_10x, "nuclear_area_um2") > 0.6
    assert abs(rho(no_40x, "nuclear_area_um2")) < 0.2
    assert rho(no_40x, "lumen_fraction") < -0.5


def test_validation_stain_shift_is_the_configured_one() -> None:
    """Mean tissue optical density: validation / training = 1 + validation_stain_shift."""
    for shift in (0.0, 0.3):
        # per-slide stain jitter (4 % per channel) averages to ~1 % over 30 slides
        config = SynthConfig.from_preset("demo", seed=303, n_training=30, with_test=False, n_tuning=0,
                                    n_validation=30, artefact_probability=0.0, validation_stain_shift=shift)
        training = _render_cohort(config, "training", 2.0)
        validation = _render_cohort(config, "validation", 2.0)
        for channel in ("r", "g", "b"):
            ratio = validation[f"tissue_od_{channel}"].mean() / training[f"tissue_od_{channel}"].mean()
            assert ratio == pytest.approx(1.0 + shift, abs=0.03), (shift, channel, ratio)
