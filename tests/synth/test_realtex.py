"""Real-texture cohorts of the learning benchmark: files, the planted signal's direction, the site shift."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wsi_prognosis.errors import ConfigurationError
from wsi_prognosis.synth.realtex import RealTexConfig, RealTexJob, make_realtex_cohort, render_slide

DATA = str(Path(__file__).resolve().parents[1] / "data")
SMALL = dict(texture_dir=DATA, width_um=192.0, height_um=160.0, workers=1)


def render(signal: str, risk: float, validation: bool = False, seed: int = 3) -> tuple[np.ndarray, dict]:
    config = RealTexConfig(signal=signal, **SMALL)
    job = RealTexJob("s", Path("unused.tiff"), risk, (0.0, 0.0), (seed, 1), config,
                     config.validation_site if validation else config.train_site, validation)
    return render_slide(job)


@pytest.mark.parametrize("signal, stat, sign", [
    ("immune", "n_lymphocytes", -1),        # fewer lymphocytes at high risk
    ("stroma", "stroma_share", +1),         # more stroma at high risk
    ("architecture", "lumen_fraction", -1), # glands lose their lumens
])
def test_planted_signal_follows_the_risk(signal, stat, sign):
    low = np.mean([render(signal, -2.0, seed=s)[1][stat] for s in (1, 2)])
    high = np.mean([render(signal, 2.0, seed=s)[1][stat] for s in (1, 2)])
    assert sign * (high - low) > 0, (signal, low, high)


def test_nuclear_signal_changes_the_nuclei_not_their_number():
    rgb_low, low = render("nuclear", -2.0)
    rgb_high, high = render("nuclear", 2.0)
    assert abs(low["n_tumour_nuclei"] - high["n_tumour_nuclei"]) < 0.2 * low["n_tumour_nuclei"]
    assert not np.array_equal(rgb_low, rgb_high)


def test_cohort_files_and_the_validation_site_shift(tmp_path: Path):
    config = RealTexConfig(signal="immune", n_training=4, n_tuning=3, n_validation=3, seed=1, **SMALL)
    result = make_realtex_cohort(tmp_path, config)
    manifest = pd.read_csv(result["manifest"])
    clinical = pd.read_csv(result["clinical"])
    truth = pd.read_csv(result["truth"])
    assert manifest["cohort"].value_counts().to_dict() == {"training": 4, "test": 4, "tuning": 3, "validation": 3}
    assert set(clinical.columns) >= {"patient_id", "time", "event", "grade"} and len(truth) == 10
    assert all((tmp_path / p).is_file() for p in manifest["path"])
    again = make_realtex_cohort(tmp_path, config)
    assert again["n_generated"] == 0                     # resumable: nothing re-rendered
    rgb_a, _ = render("immune", 0.0)
    rgb_b, _ = render("immune", 0.0, validation=True)
    assert np.abs(rgb_a.reshape(-1, 3).mean(0) - rgb_b.reshape(-1, 3).mean(0)).max() > 5   # another site looks different


def test_unknown_signal_and_missing_texture_are_clear_errors(tmp_path: Path):
    with pytest.raises(ConfigurationError, match="signal='cells'"):
        RealTexConfig(texture_dir=DATA, signal="cells").validate()
    with pytest.raises(ConfigurationError, match="texture source not found"):
        RealTexConfig(texture_dir=str(tmp_path)).validate()
