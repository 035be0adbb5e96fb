"""Pooled evidence, landmark survival and Uno's C / AUC in `analyze` (summary.json contract, files, report)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from wsi_prognosis.cli import main
from wsi_prognosis.survival import concordance
from wsi_prognosis.survival.landmarks import time_dependent_discrimination


def test_pool_and_landmarks_through_the_stage(simulate, tmp_path):
    s1, c1 = simulate(200, seed=51, cohort="test")
    s2, c2 = simulate(240, seed=52, cohort="validation", hrs=(1.0, 1.8, 3.0))
    pd.concat([s1, s2]).to_csv(tmp_path / "scores.csv", index=False)
    pd.concat([c1, c2]).to_csv(tmp_path / "clinical.csv", index=False)
    out = tmp_path / "a"
    assert main(["analyze", f"scores={tmp_path / 'scores.csv'}", f"clinical={tmp_path / 'clinical.csv'}", f"out={out}",
                 "analysis.bootstrap.n=0", "analysis.pool=[test,validation]", "analysis.landmarks=[2,5]"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    pooled = summary["pooled"]
    assert pooled["cohorts"] == ["test", "validation"]
    for measure in ("poor_vs_good", "per_sd"):
        for method in ("dl", "pm"):
            entry = pooled[measure][method]
            assert set(entry) >= {"hr", "ci_low", "ci_high", "pi_low", "pi_high", "tau2", "i2", "q_p"}
            assert entry["pi_low"] <= entry["ci_low"] < entry["hr"] < entry["ci_high"] <= entry["pi_high"]
    hrs = [summary["cohorts"][c]["hr"]["poor_vs_good"]["hr"] for c in ("test", "validation")]
    assert min(hrs) <= pooled["poor_vs_good"]["dl"]["hr"] <= max(hrs)
    landmarks = summary["cohorts"]["validation"]["landmarks"]
    assert set(landmarks) == {"2", "5"}
    for group in ("good", "uncertain", "poor"):
        e = landmarks["5"][group]
        assert set(e) >= {"survival", "ci_low", "ci_high", "at_risk"} and e["ci_low"] <= e["survival"] <= e["ci_high"]
    assert landmarks["5"]["good"]["survival"] > landmarks["5"]["poor"]["survival"]
    assert landmarks["2"]["good"]["at_risk"] >= landmarks["5"]["good"]["at_risk"]
    uno = summary["cohorts"]["validation"]["c_index_uno"]
    assert uno["tau"] == 5 and 0.5 < uno["value"] < 1 and set(summary["cohorts"]["validation"]["auc"]) == {"2", "5"}
    assert (out / "figures" / "forest.png").is_file() and (out / "figures" / "forest.pdf").is_file()
    table = pd.read_csv(out / "tables" / "landmarks.csv")
    assert len(table) == 2 * 2 * 3 and {"cohort", "landmark", "group", "survival"} <= set(table.columns)
    assert (out / "tables" / "pooled.csv").is_file() and (out / "tables" / "discrimination.csv").is_file()
    report = (out / "report.html").read_text()
    assert "Pooled evidence across cohorts" in report and "5-year CSS: good" in report and "Uno" in report


def test_uno_c_equals_harrell_without_censoring():
    rng = np.random.default_rng(3)
    time = rng.exponential(3.0, 300)
    risk = -time + rng.normal(0, 2.0, 300)
    event = np.ones(300, int)
    table = time_dependent_discrimination(time, event, risk, [time.max() + 1])
    uno = table[table["measure"] == "uno_c"]["value"].iloc[0]
    assert uno == pytest.approx(concordance(time, event, risk), rel=1e-9)  # IPCW weights are all 1
    assert table[table["measure"] == "auc"]["reason"].iloc[0].startswith(f"{time.max() + 1:g} is outside")
