"""`wsi-prognosis demo cohort=DIR`: one's own cohort runs the demo's steps, checked before any work starts."""

from __future__ import annotations

import pandas as pd
import pytest
from hydra import compose, initialize_config_module

from wsi_prognosis.cli import main
from wsi_prognosis.stages.demo import DemoConfig, plan


def _cohort(folder, cohorts=("training", "tuning", "test", "validation"), good=6, poor=6):
    folder.mkdir()
    rows, clinical = [], []
    for c in cohorts:
        for i in range(good + poor if c == "training" else 4):
            pid = f"{c[:2]}{i}"
            rows.append({"slide_id": f"{pid}-s", "patient_id": pid, "path": f"slides/{pid}.svs", "cohort": c})
            poor_case = c == "training" and i >= good
            clinical.append({"patient_id": pid, "time": 1.0 if poor_case else 8.0, "event": int(poor_case)})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    pd.DataFrame(clinical).to_csv(folder / "clinical.csv", index=False)
    return folder


def _config(out, cohort):
    with initialize_config_module(config_module="wsi_prognosis.configs", version_base="1.3"):
        return DemoConfig.from_cfg(compose(config_name="demo", overrides=[f"out={out}", f"cohort={cohort}"]))


def test_the_same_steps_run_on_one_s_own_cohort_without_synth(tmp_path):
    cohort = _cohort(tmp_path / "mine")
    steps = plan(_config(tmp_path / "run", cohort))
    names = [s.name for s in steps]
    assert names[:3] == ["tile", "embed", "train"] and "synth" not in names
    tile = next(s for s in steps if s.name == "tile")
    assert f"manifest={cohort / 'manifest.csv'}" in tile.args
    train = next(s for s in steps if s.name == "train")
    assert f"features={tmp_path / 'run' / 'features'}" in train.args and "encoder=lite0" in train.args


@pytest.mark.parametrize("problem, message", [
    ("missing role", "no slides in cohort(s) ['validation']"),
    ("few labels", "has 6 good and 2 poor-prognosis patients"),
    ("no clinical", "no clinical.csv"),
])
def test_a_cohort_that_cannot_run_is_refused_before_any_work(tmp_path, capsys, problem, message):
    if problem == "missing role":
        cohort = _cohort(tmp_path / "mine", cohorts=("training", "tuning", "test"))
    elif problem == "few labels":
        cohort = _cohort(tmp_path / "mine", poor=2)
    else:
        cohort = _cohort(tmp_path / "mine")
        (cohort / "clinical.csv").unlink()
    out = tmp_path / "run"
    assert main(["demo", f"out={out}", f"cohort={cohort}"]) == 2
    assert message in capsys.readouterr().err
    assert not (out / "tiles").exists()  # nothing started
