"""`select`: member discovery and the best k per resolution by the tuning metric."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from wsi_prognosis.cli import main
from wsi_prognosis.ensemble import load_bundle
from wsi_prognosis.models import build_backbone, default_preprocessing

TINY = "test_efficientnet"
SPEC = {"resolutions": {"10x": {"mpp": 1.0, "tile_px": 64}, "40x": {"mpp": 0.25, "tile_px": 64}},
        "min_tissue_fraction": 0.5, "tissue": {"mask_mpp": 8.0}}
STATE = build_backbone(TINY).state_dict()


def fake_member(runs: Path, resolution: str, seed: int, c_index: float | None, finished: bool = True) -> str:
    """A run folder as `train` writes it (weights from a tiny random backbone)."""
    name = f"{resolution}_{TINY}_s{seed}"
    folder = runs / name
    folder.mkdir(parents=True)
    mpp = SPEC["resolutions"][resolution]["mpp"]
    record = {"name": name, "resolution": resolution, "arch": TINY, "pooling": {"method": "mean"},
              "preprocessing": default_preprocessing(TINY, tile_px=64, mpp=mpp).to_dict(), "tile_spec": SPEC,
              "seed": seed, "config": {"seed": seed, "resolution": resolution}}
    (folder / "member.json").write_text(json.dumps(record))
    best = {"epoch": 3, "c_index": c_index, "auc_extremes": 0.5}
    (folder / "metrics.json").write_text(json.dumps({"monitor": "c_index", "finished": finished, "best": best, "epochs": [best]}))
    torch.save(STATE, folder / "best.pt")
    return name


def test_select_picks_top_k_per_resolution(tmp_path: Path):
    runs = tmp_path / "runs"
    values_10x = {0: 0.61, 1: 0.72, 2: 0.55, 3: None, 4: 0.70}
    values_40x = {0: 0.58, 1: 0.66, 2: 0.64}
    for seed, value in values_10x.items():
        fake_member(runs, "10x", seed, value)
    for seed, value in values_40x.items():
        fake_member(runs, "40x", seed, value)
    fake_member(runs, "40x", 9, 0.99, finished=False)  # unfinished: never selected
    assert main(["select", f"runs={runs}", f"out={tmp_path / 'bundle'}", "k=2"]) == 0
    bundle = load_bundle(tmp_path / "bundle")
    assert [m.name for m in bundle.members] == [
        f"10x_{TINY}_s1", f"10x_{TINY}_s4", f"40x_{TINY}_s1", f"40x_{TINY}_s2"]
    assert [m.tuning_metrics["c_index"] for m in bundle.members] == [0.72, 0.70, 0.66, 0.64]
    assert bundle.tile_spec["resolutions"] == SPEC["resolutions"]
    assert set(bundle.training_configs) == {m.name for m in bundle.members}
    selection = (tmp_path / "bundle" / "selection.csv").read_text()
    assert selection.count("True") == 4
    assert (tmp_path / "bundle" / "run_select.json").is_file()


def test_select_missing_resolution_is_an_error(tmp_path: Path, capsys):
    runs = tmp_path / "runs"
    fake_member(runs, "10x", 0, 0.6)
    assert main(["select", f"runs={runs}", f"out={tmp_path / 'bundle'}"]) == 2
    assert "no finished 40x member" in capsys.readouterr().err


def test_select_rerun_is_stable(tmp_path: Path):
    runs = tmp_path / "runs"
    for seed in range(3):
        fake_member(runs, "10x", seed, 0.5 + seed / 10)
    args = ["select", f"runs={runs}", f"out={tmp_path / 'bundle'}", "k=2", "resolutions=[10x]"]
    assert main(args) == 0
    first = load_bundle(tmp_path / "bundle").id
    assert main(args) == 0
    assert load_bundle(tmp_path / "bundle").id == first


def test_smoothed_metric_averages_the_best_epoch_with_its_neighbours():
    from wsi_prognosis.ensemble.select import smoothed_metric

    lucky = {"best": {"epoch": 2, "c_index": 0.80},
             "epochs": [{"epoch": e, "c_index": c} for e, c in enumerate([0.50, 0.52, 0.80, 0.51, 0.50])]}
    steady = {"best": {"epoch": 2, "c_index": 0.70},
              "epochs": [{"epoch": e, "c_index": c} for e, c in enumerate([0.60, 0.68, 0.70, 0.69, 0.66])]}
    assert smoothed_metric(lucky, "c_index", 0) == 0.80                 # the best epoch alone
    assert smoothed_metric(lucky, "c_index", 1) == pytest.approx((0.52 + 0.80 + 0.51) / 3)
    assert smoothed_metric(steady, "c_index", 1) > smoothed_metric(lucky, "c_index", 1)   # the ranking turns
    edge = {"best": {"epoch": 0, "c_index": 0.6}, "epochs": [{"epoch": 0, "c_index": 0.6}, {"epoch": 1, "c_index": 0.5}]}
    assert smoothed_metric(edge, "c_index", 1) == pytest.approx(0.55)   # a window cut at the first epoch


def test_weighted_aggregation_records_each_member_s_tuning_c_above_chance(tmp_path: Path):
    """The default `aggregation.members=weighted`: weights (C - 0.5)+, normalised; `mean` keeps none."""
    from wsi_prognosis.scoring.aggregate import ensemble_score, member_weights

    runs = tmp_path / "runs"
    for res, seed, c in (("10x", 0, 0.52), ("10x", 1, 0.45), ("40x", 0, 0.80), ("40x", 1, 0.70)):
        fake_member(runs, res, seed, c)
    assert main(["select", f"runs={runs}", f"out={tmp_path / 'weighted'}", "k=2"]) == 0
    weights = load_bundle(tmp_path / "weighted").aggregation["weights"]
    assert weights == pytest.approx({f"10x_{TINY}_s0": 0.02 / 0.52, f"10x_{TINY}_s1": 0.0,
                                     f"40x_{TINY}_s0": 0.30 / 0.52, f"40x_{TINY}_s1": 0.20 / 0.52}, abs=1e-5)
    # a member at chance adds nothing; the plain mean would pull the score towards it
    scores = {f"10x_{TINY}_s0": 0.5, f"10x_{TINY}_s1": 0.9, f"40x_{TINY}_s0": 0.2, f"40x_{TINY}_s1": 0.4}
    assert ensemble_score(scores, weights) == pytest.approx((0.02 * 0.5 + 0.3 * 0.2 + 0.2 * 0.4) / 0.52)
    assert ensemble_score(scores) == pytest.approx(0.5)
    assert member_weights({"a": 0.4, "b": float("nan")}) == {"a": 0.5, "b": 0.5}  # none beats chance: equal
    assert main(["select", f"runs={runs}", f"out={tmp_path / 'mean'}", "k=2", "aggregation.members=mean"]) == 0
    assert "weights" not in load_bundle(tmp_path / "mean").aggregation
