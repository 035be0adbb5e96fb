"""The biostatistician's notebook runs top to bottom on a demo-shaped output, so it never goes stale."""

from __future__ import annotations

from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from wsi_prognosis.synth import SynthConfig
from wsi_prognosis.synth.outcomes import simulate_cohort_tables

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "biostatistician_walkthrough.ipynb"


def _demo_shaped_output(root: Path) -> None:
    """scores/scores.csv and cohort/clinical.csv as the demo lays them out, from simulated outcomes.

    The score is a noisy reading of the latent risk, split at fixed quantiles, so the notebook has
    a real signal to find.
    """
    tables = simulate_cohort_tables(SynthConfig.from_preset("demo", seed=3, n_training=120, n_tuning=120, n_validation=160))
    rng = np.random.default_rng(0)
    slides, clinical = [], []
    for cohort, table in tables.items():
        score = 1 / (1 + np.exp(-(table["risk"] + rng.normal(0, 0.6, len(table)))))
        low, high = np.quantile(score, [0.6, 0.75])
        group = np.where(score < low, "good", np.where(score < high, "uncertain", "poor"))
        for pid, s, g in zip(table["patient_id"], score, group):
            slides.append({"slide_id": f"{pid}-{cohort}", "patient_id": pid, "cohort": cohort, "score": s,
                           "risk_group": g, "status": "ok", "error": ""})
        if cohort != "test":  # test patients are training's patients: one clinical row each
            clinical.append(table[["patient_id", "time", "event", "pT", "pN", "grade"]])
    import pandas as pd

    (root / "scores").mkdir(parents=True)
    (root / "cohort").mkdir(parents=True)
    pd.DataFrame(slides).to_csv(root / "scores" / "scores.csv", index=False)
    pd.concat(clinical).to_csv(root / "cohort" / "clinical.csv", index=False)


def test_notebook_executes_and_shows_km_and_cox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _demo_shaped_output(tmp_path)
    monkeypatch.setenv("WSI_PROGNOSIS_DEMO_OUT", str(tmp_path))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]
    assert not [out for out in outputs if out.get("output_type") == "error"]
    assert any("image/png" in out.get("data", {}) for out in outputs), "no Kaplan-Meier figure was displayed"
    text = "\n".join(out.get("text", "") for out in outputs if out.get("output_type") == "stream")
    assert "validation: poor vs good HR" in text
    hr = float(text.split("poor vs good HR ")[1].split()[0])
    assert hr > 1.0, "a score built from the latent risk must rank poor above good"
    assert "C-index" in text
