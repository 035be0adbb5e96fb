"""Helpers of the validation-study tests: tests/survival's simulator and an Rscript runner."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location("_survival_sim", Path(__file__).parents[1] / "survival" / "conftest.py")
_SIM = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_SIM)
simulate_cohort = _SIM.simulate_cohort


def run_r(script: str, tmp_path: Path) -> str:
    """Run an R script with Rscript; skip (saying why) when R or its packages are missing."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        pytest.skip("Rscript not found: install r-base-core r-cran-survival r-cran-metafor (.ci/run does, as root)")
    path = tmp_path / "reference.R"
    path.write_text(script)
    result = subprocess.run([rscript, "--vanilla", str(path)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        if "there is no package called" in result.stderr:
            pytest.skip(f"an R package is missing: {result.stderr.strip().splitlines()[-1]}")
        raise AssertionError(f"Rscript failed:\n{result.stderr}")
    return result.stdout


def make_calibrated_bundle(root: Path, *, n_tuning: int = 300, seed: int = 5, name: str = "bundle_calibrated") -> Path:
    """A calibrated bundle written by the real bundle writer (`write_bundle` + `derive_bundle`).

    Its member "weights" are a few bytes (hashed and verified like real weights; nothing here loads
    them into a network). The thresholds cut a simulated tuning cohort at 60 % / 75 %, and
    `calibration/tuning_patient_scores.csv` holds that cohort's scores and outcomes, as `calibrate`
    writes it when given clinical=.
    """
    import numpy as np

    from wsi_prognosis.ensemble import Member, derive_bundle, write_bundle

    root.mkdir(parents=True, exist_ok=True)
    weights = root / f"{name}-w.pt"
    weights.write_bytes(f"weights of {name}".encode())
    member = Member(name="10x_0", resolution="10x", arch="test_efficientnet", weights="", sha256="",
                    preprocessing={"mean": [0.5] * 3, "std": [0.2] * 3, "tile_px": 32, "mpp": 2.0},
                    pooling={"method": "mean"})
    plain = write_bundle(root / f"{name}-selected", [(member, weights)], tile_spec={"resolutions": {}},
                         aggregation={"members": "mean", "patient": "mean"}, training_configs={"name": name})
    scores, clinical = simulate_cohort(n_tuning, seed=seed, cohort="tuning")
    low, high = (float(v) for v in np.quantile(scores["score"], [0.60, 0.75]))
    group = np.where(scores["score"] < low, "good", np.where(scores["score"] < high, "uncertain", "poor"))
    shares = {g: float((group == g).mean()) for g in ("good", "uncertain", "poor")}
    calibration = {"method": "quantile", "low": low, "high": high, "shares": shares, "cohort": "tuning",
                   "level": "patient", "patient_aggregation": "mean",
                   "groups": {g: {"n": int((group == g).sum())} for g in ("good", "uncertain", "poor")}}
    out = root / name
    derive_bundle(plain, out, thresholds={"low": low, "high": high}, calibration=calibration)
    table = scores[["patient_id", "cohort", "score"]].assign(risk_group=group).merge(
        clinical[["patient_id", "time", "event"]], on="patient_id")
    (out / "calibration").mkdir(exist_ok=True)
    table.to_csv(out / "calibration" / "tuning_patient_scores.csv", index=False)
    return out


def write_scored_cohorts(folder: Path, bundle_dir: Path, *, cohorts=(("test", 220, 41), ("validation", 260, 42)),
                         bundle_id: str | None = None) -> tuple[Path, Path]:
    """scores.csv + run_score.json (bundle id and thresholds, as `score` records them) and clinical.csv.

    Risk groups are the bundle's thresholds applied to the score, as `score` does.
    """
    import numpy as np
    import pandas as pd

    from wsi_prognosis.ensemble import load_bundle
    from wsi_prognosis.provenance import write_run_record

    bundle = load_bundle(bundle_dir)
    low, high = bundle.thresholds["low"], bundle.thresholds["high"]
    frames, clinical = [], []
    for name, n, seed in cohorts:
        s, c = simulate_cohort(n, seed=seed, cohort=name)
        s["risk_group"] = np.where(s["score"] < low, "good", np.where(s["score"] < high, "uncertain", "poor"))
        frames.append(s)
        clinical.append(c)
    folder.mkdir(parents=True, exist_ok=True)
    scores = folder / "scores.csv"
    pd.concat(frames).to_csv(scores, index=False)
    clinical_path = folder.parent / "clinical.csv"
    pd.concat(clinical).to_csv(clinical_path, index=False)
    write_run_record(folder, "score", {"bundle": str(bundle_dir)},
                     extra={"bundle_id": bundle_id or bundle.id, "thresholds": bundle.thresholds})
    return scores, clinical_path
