"""The demo's validation-study steps, run as the demo runs them: plan -> protocol -> (score) -> analyze protocol=."""

from __future__ import annotations

import json
import shutil

import pandas as pd
from hydra import compose, initialize_config_module
from study_helpers import make_calibrated_bundle, write_scored_cohorts

from wsi_prognosis.cli import main
from wsi_prognosis.stages.demo import DemoConfig, _study_lines, plan


def test_demo_plans_locks_and_analyses_under_the_protocol(tmp_path, capsys):
    out = tmp_path / "demo_out"
    with initialize_config_module(config_module="wsi_prognosis.configs", version_base="1.3"):
        cfg = compose(config_name="demo", overrides=[f"out={out}", "overrides.plan=['resample.n=60']"])
    config = DemoConfig.from_cfg(cfg)
    steps = {s.name: s for s in plan(config)}
    names = [s.name for s in plan(config)]
    assert names.index("calibrate") < names.index("plan") < names.index("protocol") < names.index("score") < names.index("analyze")
    # what calibrate and score would have left: the calibrated bundle, the cohort tables, scores + run_score.json
    bundle = make_calibrated_bundle(out, name="bundle_calibrated")
    scores, clinical = write_scored_cohorts(out / "scores", bundle)
    (out / "cohort").mkdir()
    shutil.move(clinical, out / "cohort" / "clinical.csv")
    table = pd.read_csv(scores)
    pd.DataFrame({"slide_id": table["slide_id"], "patient_id": table["patient_id"], "path": "x.tif",
                  "cohort": table["cohort"]}).to_csv(out / "cohort" / "manifest.csv", index=False)
    for name in ("plan", "protocol", "analyze"):
        assert main(list(steps[name].args)) == 0, name
        assert steps[name].done_marker.is_file(), name
    printed = capsys.readouterr().out
    summary = json.loads((out / "analysis" / "summary.json").read_text())
    assert summary["protocol"]["deviations"] == [] and summary["protocol"]["primary"]["met"] is True
    assert summary["pooled"]["cohorts"] == ["test", "validation"]
    lines = _study_lines(out / "analysis", out)
    assert lines[0].startswith("plan: The primary analysis needs") and lines[0][6:] in printed
    assert "decision rule met" in lines[1] and lines[2].startswith("pooled poor vs good HR (test, validation, DL)")
    report = (out / "analysis" / "report.html").read_text()
    assert report.index("Pre-registered protocol") < report.index("<h2>Overview</h2>")
    assert (out / "analysis" / "figures" / "forest.png").is_file()
