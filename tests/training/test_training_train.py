"""`wsi-prognosis train` on tiny synthetic cohorts (CPU): learning, determinism, resume, errors.

The learning checks compare a member's tuning C-index against a permutation null: under "the
score carries no information", every assignment of the member's own tuning scores to the
tuning patients is equally likely, so the C-index of shuffled scores is the exact null
distribution for this cohort (same censoring, same ties). The member must beat its
1 - 0.01 / n_epochs quantile: the best epoch is picked on the same tuning cohort, and the
Bonferroni factor over epochs keeps the chance of a no-signal member passing below 1 %. The
run is seeded and deterministic on CPU, so the test does not flake from run to run either.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from training_helpers import FAST, REPO, run_cli, train_args
from wsi_prognosis.cli import main
from wsi_prognosis.models.metrics import c_index

# synth's training cohort counts a cancer death after 6 years as "good" (DoMore's "> 6 years
# cancer-specific survival" read literally); the label option keeps those patients in training
LEARN = ["trainer.max_epochs=8", "data.bags_per_slide=8", "model.optim.lr=0.001", "trainer.early_stopping_patience=0",
         "labels.good_allows_later_event=true"]


def member_dirs(out: Path) -> list[Path]:
    return sorted(p.parent for p in out.glob("*/member.json"))


def permutation_bound(scores: pd.DataFrame, n_tests: int, n_perm: int = 2000, alpha: float = 0.01) -> float:
    rng = np.random.default_rng(0)
    time_, event, score = scores["time"].to_numpy(), scores["event"].to_numpy(), scores["score"].to_numpy()
    null = [c_index(time_, event, rng.permutation(score)) for _ in range(n_perm)]
    return float(np.quantile(null, 1 - alpha / n_tests))


@pytest.mark.slow
@pytest.mark.parametrize("resolution", [
    "10x",
    "40x",
])
def test_each_resolution_learns_its_scale(resolution, cohort_10x, cohort_40x, tmp_path):
    """A 10x member learns the architecture signal (nuclei carry none), a 40x member the nuclear one."""
    cohort = cohort_10x if resolution == "10x" else cohort_40x
    assert main(train_args(cohort, tmp_path, f"resolution={resolution}", *LEARN)) == 0
    (member,) = member_dirs(tmp_path)
    metrics = json.loads((member / "metrics.json").read_text())
    scores = pd.read_csv(member / "tuning_scores.csv")
    assert metrics["finished"] and int(scores["epoch"].iloc[0]) == metrics["best"]["epoch"]
    value = c_index(scores["time"], scores["event"], scores["score"])
    assert value == pytest.approx(metrics["best"]["c_index"])
    bound = permutation_bound(scores, n_tests=len(metrics["epochs"]))
    print(f"{resolution}: tuning C-index {value:.3f}, permutation bound {bound:.3f}, n={len(scores)}")
    assert value > bound, f"{resolution} member C-index {value:.3f} is not above the permutation bound {bound:.3f}"


def _weights(out: Path) -> dict[str, torch.Tensor]:
    (member,) = member_dirs(out)
    return torch.load(member / "best.pt", weights_only=True)


def test_fixed_seed_same_weights(cohort_10x, tmp_path):
    args = ["resolution=10x", "trainer.max_epochs=1", "seed=3"]
    assert main(train_args(cohort_10x, tmp_path / "a", *args)) == 0
    assert main(train_args(cohort_10x, tmp_path / "b", *args)) == 0
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    member = member_dirs(tmp_path / "a")[0]
    assert member.name.startswith("10x_test_efficientnet_gn_s3_") and "trainer.max_epochs-1" in member.name
    record = json.loads((member / "member.json").read_text())
    assert record["preprocessing"]["tile_px"] == 64 and record["preprocessing"]["mpp"] == 1.0
    assert record["tile_spec"]["resolutions"]["40x"] == {"mpp": 0.25, "tile_px": 64}
    run = json.loads((member / "run_train.json").read_text())
    assert run["seed"] == 3 and "torch" in run["versions"]
    # finished members are skipped on rerun (resume=true is the default)
    before = (member / "best.pt").stat().st_mtime_ns
    assert main(train_args(cohort_10x, tmp_path / "a", *args)) == 0
    assert (member / "best.pt").stat().st_mtime_ns == before


def test_kill_and_resume(cohort_10x, tmp_path):
    args = train_args(cohort_10x, tmp_path, "resolution=10x", "trainer.max_epochs=4", "trainer.early_stopping_patience=0")
    env_cmd = [sys.executable, "-m", "wsi_prognosis.cli", *args]
    process = subprocess.Popen(env_cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    last = None
    try:
        while time.monotonic() < deadline and process.poll() is None:
            found = list(tmp_path.glob("*/last.ckpt"))
            if found:
                last = found[0]
                break
            time.sleep(0.05)
        assert last is not None, "no checkpoint was written"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    member = last.parent
    killed_after = int(torch.load(last, weights_only=False)["epoch"])
    assert killed_after < 3
    assert not json.loads((member / "metrics.json").read_text())["finished"]
    result = run_cli(args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming from {last} after epoch" in result.stdout
    metrics = json.loads((member / "metrics.json").read_text())
    assert metrics["finished"] and metrics["resumed_from_epoch"] is not None
    assert metrics["resumed_from_epoch"] >= killed_after
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1, 2, 3]  # history from before the kill is kept


def _copy_cohort(cohort: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    target = tmp_path / "cohort"
    shutil.copytree(cohort["dir"], target)
    return {"dir": target, "manifest": target / "manifest.csv", "clinical": target / "clinical.csv",
            "tiles": target / "tiles"}


def _first_training_slide(cohort: dict[str, Path]) -> pd.Series:
    manifest = pd.read_csv(cohort["manifest"])
    return manifest[manifest["cohort"] == "training"].iloc[0]


def test_missing_tiles_file_is_a_clear_error(cohort_10x, tmp_path, capsys):
    cohort = _copy_cohort(cohort_10x, tmp_path)
    slide = _first_training_slide(cohort)
    (cohort["tiles"] / f"{slide.slide_id}.h5").unlink()
    assert main(train_args(cohort, tmp_path / "runs", "trainer.max_epochs=1")) == 2
    err = capsys.readouterr().err
    assert f"{slide.slide_id}.h5: tile store not found" in err and "wsi-prognosis tile" in err


def test_changed_slide_is_a_clear_error(cohort_10x, tmp_path, capsys):
    cohort = _copy_cohort(cohort_10x, tmp_path)
    manifest = pd.read_csv(cohort["manifest"])
    slide, other = manifest[manifest["cohort"] == "training"].iloc[:2].itertuples()
    # the file was replaced after tiling (rescanned, or another slide under its name)
    shutil.copyfile(cohort["dir"] / other.path, cohort["dir"] / slide.path)
    assert main(train_args(cohort, tmp_path / "runs", "trainer.max_epochs=1")) == 2
    err = capsys.readouterr().err
    assert "changed since it was tiled" in err and slide.slide_id in err


def _blank(tiles: Path, slide_id: str, resolution: str = "10x") -> None:
    """Make a slide's tile store say its grid kept no tile (a blank crop: tiled ok, zero tiles)."""
    with h5py.File(tiles / f"{slide_id}.h5", "a") as h5:
        del h5[f"{resolution}/coords"], h5[f"{resolution}/tissue_fraction"]
        h5[resolution].create_dataset("coords", data=np.zeros((0, 2), np.int64))
        h5[resolution].create_dataset("tissue_fraction", data=np.zeros(0, np.float32))


def test_blank_slides_are_left_out_and_training_goes_on(cohort_10x, tmp_path, capsys):
    cohort = _copy_cohort(cohort_10x, tmp_path)
    manifest = pd.read_csv(cohort["manifest"])
    blank_train = manifest[manifest["cohort"] == "training"]["slide_id"].iloc[0]
    blank_tune = manifest[manifest["cohort"] == "tuning"]["slide_id"].iloc[0]
    _blank(cohort["tiles"], blank_train)
    _blank(cohort["tiles"], blank_tune)
    out = tmp_path / "runs"
    assert main(train_args(cohort, out, "resolution=10x", "trainer.max_epochs=1", "trainer.limit_train_batches=2")) == 0
    captured = capsys.readouterr()
    assert blank_train in captured.out and "left out" in captured.out
    (member,) = member_dirs(out)
    record = json.loads((member / "member.json").read_text())
    assert record["left_out"] == {"training": [blank_train], "tuning": [blank_tune]}
    assert json.loads((member / "metrics.json").read_text())["finished"] is True


def test_no_usable_slide_of_a_label_is_a_clear_error(cohort_10x, tmp_path, capsys):
    cohort = _copy_cohort(cohort_10x, tmp_path)
    manifest = pd.read_csv(cohort["manifest"], dtype={"patient_id": str})
    clinical = pd.read_csv(cohort["clinical"], dtype={"patient_id": str})
    poor = set(clinical[(clinical["event"] == 1) & (clinical["time"] <= 2.5)]["patient_id"])
    for slide_id in manifest[(manifest["cohort"] == "training") & manifest["patient_id"].isin(poor)]["slide_id"]:
        _blank(cohort["tiles"], slide_id)
    assert main(train_args(cohort, tmp_path / "runs", "resolution=10x", "trainer.max_epochs=1")) == 2
    err = capsys.readouterr().err
    assert "no usable poor-prognosis training slide" in err


def test_no_poor_patients_is_a_clear_error(cohort_10x, tmp_path, capsys):
    cohort = _copy_cohort(cohort_10x, tmp_path)
    clinical = pd.read_csv(cohort["clinical"])
    clinical["event"] = 0
    clinical.to_csv(cohort["clinical"], index=False)
    assert main(train_args(cohort, tmp_path / "runs", "trainer.max_epochs=1")) == 2
    assert "no poor-prognosis patient" in capsys.readouterr().err
