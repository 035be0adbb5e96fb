"""Scale-out: a Hydra sweep through the submitit_local launcher, and Lightning DDP on 2 CPU processes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training_helpers import run_cli, train_args
from wsi_prognosis.ensemble import load_bundle, member_slide_score
from wsi_prognosis.slides import TileReader
from wsi_prognosis.tiling import open_tile_store, tile_store_path


@pytest.mark.slow
def test_submitit_local_sweep_then_select(cohort_10x, tmp_path):
    runs = tmp_path / "runs"
    # flags after the overrides: the CLI passes hydra.job.name=<stage> as the first override
    result = run_cli([*train_args(cohort_10x, runs, "resolution=10x", "trainer.max_epochs=1", "seed=0,1"),
                      "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "--multirun"], timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    members = sorted(p.parent.name for p in runs.glob("*/metrics.json"))
    assert len(members) == 2 and ["_s0_" in members[0], "_s1_" in members[1]] == [True, True]  # one folder per job
    for name in members:
        assert json.loads((runs / name / "metrics.json").read_text())["finished"]
        assert (runs / name / ".hydra" / "config.yaml").is_file()
    assert list((runs / ".submitit").iterdir()), "jobs did not go through submitit"

    result = run_cli(["select", f"runs={runs}", f"out={tmp_path / 'bundle'}", "k=1", "resolutions=[10x]"])
    assert result.returncode == 0, result.stderr[-3000:]
    bundle = load_bundle(tmp_path / "bundle")
    (member,) = bundle.members
    model = bundle.load_model(member)
    slide = json.loads((runs / member.name / "member.json").read_text())
    with open_tile_store(next(iter((cohort_10x["tiles"]).glob("*.h5")))) as store:
        reader = TileReader(store.source_path, store.grid("10x"), store.mpp)
        tiles = reader.read(store.coords("10x"))
    assert tiles.shape[1:] == (64, 64, 3) and slide["preprocessing"]["tile_px"] == 64
    assert 0.0 <= member_slide_score(model, member, tiles) <= 1.0


@pytest.mark.slow
def test_ddp_two_cpu_processes(cohort_10x, tmp_path):
    result = run_cli(train_args(cohort_10x, tmp_path, "resolution=10x", "trainer.max_epochs=1", "trainer.devices=2",
                                "trainer.accelerator=cpu", "trainer.strategy=ddp"), timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "MEMBER: 2/2" in output and "gloo" in output
    (member,) = [p.parent for p in tmp_path.glob("*/metrics.json")]
    assert "devices" not in member.name and "strategy" not in member.name  # same member as on one device
    metrics = json.loads((member / "metrics.json").read_text())
    assert metrics["finished"] and metrics["epochs"][0]["n_slides"] == 40  # every tuning slide scored once
    assert (member / "best.pt").is_file()
