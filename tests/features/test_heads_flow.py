"""Members on cached features, end to end: train -> select -> calibrate -> score (stores or on the fly)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from wsi_prognosis.cli import main
from wsi_prognosis.ensemble import load_bundle
from wsi_prognosis.errors import BundleError
from wsi_prognosis.models.heads import FeatureHead

FAST = ["trainer.max_epochs=3", "trainer.enable_progress_bar=false", "labels.good_allows_later_event=true",
        "model.loss=bce+cox"]


def _train(embedded, out, *extra):
    return main(["train", "--multirun", f"manifest={embedded['manifest']}", f"clinical={embedded['clinical']}",
                 f"tiles={embedded['tiles']}", f"features={embedded['features']}", f"out={out}", "encoder=random-cnn",
                 "resolution=10x,40x", *FAST, *extra])


@pytest.fixture(scope="module")
def scored(embedded, tmp_path_factory):
    root = tmp_path_factory.mktemp("heads_flow")
    runs, bundle, calibrated = root / "runs", root / "bundle", root / "calibrated"
    assert _train(embedded, runs, "seed=0,1", "model.head.pooling=attention") == 0
    assert main(["select", f"runs={runs}", f"out={bundle}", "k=2"]) == 0
    assert main(["calibrate", f"bundle={bundle}", f"manifest={embedded['manifest']}", f"clinical={embedded['clinical']}",
                 f"tiles={embedded['tiles']}", f"features={embedded['features']}", f"out={calibrated}",
                 "calibration.n_bootstrap=0"]) == 0
    stored, fly = root / "scores_stored", root / "scores_on_the_fly"
    common = [f"bundle={calibrated}", f"manifest={embedded['manifest']}", f"tiles={embedded['tiles']}",
              "exports.heatmap=false", "engine.workers=0"]
    assert main(["score", *common, f"features={embedded['features']}", f"out={stored}"]) == 0
    assert main(["score", *common, f"out={fly}"]) == 0
    return {"root": root, "runs": runs, "bundle": calibrated, "stored": stored, "fly": fly}


def test_member_records_its_encoder_and_head(scored, embedded):
    folder = next(scored["runs"].glob("40x_random-cnn-attention_s0_*"))
    member = json.loads((folder / "member.json").read_text())
    assert member["encoder"]["name"] == "random-cnn" and member["encoder"]["weights_sha256"].startswith("random:")
    assert member["head"]["pooling"] == "attention" and member["head"]["dim"] == 256
    assert member["arch"] == "head-attention" and member["preprocessing"]["tile_px"] == 64
    state = torch.load(folder / "best.pt", weights_only=True)
    head = FeatureHead(256)
    head.load_state_dict(state)  # the weights file is the head alone
    assert float(head.feature_std.mean()) != 1.0  # standardised with the training tiles' statistics


def test_scores_from_stores_equal_scores_embedded_on_the_fly(scored):
    a = pd.read_csv(scored["stored"] / "scores.csv").set_index("slide_id")
    b = pd.read_csv(scored["fly"] / "scores.csv").set_index("slide_id")
    assert (a["status"] == "ok").all() and len(a) > 10
    np.testing.assert_allclose(a["score"], b.loc[a.index, "score"], atol=2e-3)  # float16 stores
    assert a["score"].std() > 1e-4
    assert (a["risk_group"] == b.loc[a.index, "risk_group"]).mean() > 0.9
    tiles = np.load(next((scored["stored"] / "slides").glob("*.npz")))
    assert tiles["logits_40x"].shape[0] == 2 and tiles["logits_40x"].shape[1] == len(tiles["coords_40x"])


def test_training_without_features_names_the_embed_command(embedded, tmp_path):
    assert main(["train", f"manifest={embedded['manifest']}", f"clinical={embedded['clinical']}",
                 f"tiles={embedded['tiles']}", f"out={tmp_path}", "encoder=random-cnn", *FAST]) == 2


def test_features_of_another_encoder_are_refused(embedded, tmp_path, capsys):
    wrong = tmp_path / "features"
    shutil.copytree(embedded["features"] / "random-cnn", wrong / "lite0")  # random-cnn stores where lite0's belong
    assert main(["train", f"manifest={embedded['manifest']}", f"clinical={embedded['clinical']}",
                 f"tiles={embedded['tiles']}", f"features={wrong}", f"out={tmp_path / 'runs'}", "encoder=lite0",
                 *FAST]) == 2
    assert "made with encoder 'random-cnn', not 'lite0'" in capsys.readouterr().err


def test_a_bundle_whose_encoder_weights_differ_is_refused_by_name(scored, embedded, tmp_path):
    record = json.loads((scored["bundle"] / "bundle.json").read_text())
    for member in record["members"]:
        member["encoder"]["weights_sha256"] = "random:" + "0" * 16
    from wsi_prognosis.ensemble.bundle import bundle_id

    record["id"] = bundle_id(record)
    tampered = tmp_path / "bundle"
    shutil.copytree(scored["bundle"], tampered)
    (tampered / "bundle.json").write_text(json.dumps(record))
    bundle = load_bundle(tampered)  # the head weights are intact ...
    from wsi_prognosis.scoring.engine import EngineConfig
    from wsi_prognosis.scoring.members import load_ensemble

    with pytest.raises(BundleError, match="trained on random-cnn features with weights_sha256"):
        load_ensemble(bundle, EngineConfig(device="cpu"))  # ... but the encoder here is not the one it was trained on
