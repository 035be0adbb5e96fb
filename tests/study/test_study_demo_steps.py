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


def test_plan_and_protocol_on_a_bundle_calibrated_by_the_calibrate_stage(tmp_path):
    """The calibration record and tuning table that `calibrate` writes are what plan and protocol read."""
    from study_helpers import simulate_cohort

    make_calibrated_bundle(tmp_path)  # leaves the uncalibrated bundle in bundle_calibrated-selected
    scores, clinical = simulate_cohort(200, seed=61, cohort="tuning")
    scores.assign(risk_group="").to_csv(tmp_path / "tuning_scores.csv", index=False)
    clinical.to_csv(tmp_path / "clinical.csv", index=False)
    assert main(["calibrate", f"bundle={tmp_path / 'bundle_calibrated-selected'}", f"scores={tmp_path / 'tuning_scores.csv'}",
                 f"clinical={tmp_path / 'clinical.csv'}", f"out={tmp_path / 'cal'}", "calibration.n_bootstrap=10"]) == 0
    assert main(["plan", f"bundle={tmp_path / 'cal'}", f"out={tmp_path / 'plan'}", "resample.n=30",
                 "resample.sizes=[100,200]"]) == 0
    plan = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert plan["shares_source"] == "calibration on tuning" and plan["reference"]["n"] == 200
    assert abs(plan["shares"]["poor"] - 0.25) < 0.02 and 100 <= plan["events_needed"] <= 112  # 106 at exactly 60/15/25
    assert main(["protocol", f"bundle={tmp_path / 'cal'}", f"out={tmp_path / 'protocol.json'}",
                 f"plan={tmp_path / 'plan' / 'plan.json'}"]) == 0
    record = json.loads((tmp_path / "protocol.json").read_text())
    assert record["expected"]["events_needed"] == plan["events_needed"]
    assert record["checked_against"]["clinical"] == str(tmp_path / "clinical.csv")  # the calibration's clinical table
