"""Fine-tuned members (model.finetune=all|last:N), end to end on a tiny cohort with the random-cnn encoder:
what trains and what stays frozen, the weights and records, and a bundle that mixes fine-tuned members with
a head on frozen cached features through select -> calibrate -> score."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from wsi_prognosis.cli import main
from wsi_prognosis.encoders import load_encoder
from wsi_prognosis.encoders.blocks import FinetuneMode, block_layout, parse_finetune, trainable_names
from wsi_prognosis.errors import ConfigurationError
from wsi_prognosis.models.finetune_lit import encoder_state, state_sha256

TILES = ["tiling.tile_px=64", "tissue.min_tissue_area_um2=2000", "tissue.max_hole_area_um2=2000"]
# 10x only (5-9 tiles per slide), tiny bags, two epochs, in-process loading: a member trains in seconds
FAST = ["encoder=random-cnn", "resolution=10x", "trainer.enable_progress_bar=false",
        "labels.good_allows_later_event=true", "model.loss=bce+cox", "data.bag_size=8", "data.batch_size=4",
        "data.bags_per_slide=1", "data.eval_max_tiles=16", "data.num_workers=0"]
# random-cnn (timm test_efficientnet): stem, 5 stages of blocks, head convolution
LAST_BLOCK = ("blocks.4.", "conv_head.", "bn2.")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("WSI_PROGNOSIS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("finetune")
    data, tiles, features = root / "cohort", root / "tiles", root / "features"
    assert main(["synth", f"out={data}", "preset=tiny", "seed=3"]) == 0
    assert main(["tile", f"manifest={data / 'manifest.csv'}", f"out={tiles}", *TILES]) == 0
    assert main(["embed", f"tiles={tiles}", f"out={features}", f"manifest={data / 'manifest.csv'}",
                 "encoder=random-cnn", "resolutions=[10x]"]) == 0
    return {"root": root, "manifest": data / "manifest.csv", "clinical": data / "clinical.csv", "tiles": tiles,
            "features": features}


def _train_args(cohort: dict, out, *extra: str, epochs: int = 2) -> list[str]:
    return ["train", f"manifest={cohort['manifest']}", f"clinical={cohort['clinical']}", f"tiles={cohort['tiles']}",
            f"features={cohort['features']}", f"out={out}", *FAST, f"trainer.max_epochs={epochs}", *extra]


@pytest.fixture(scope="module")
def runs(cohort) -> dict:
    """Four members: a head on frozen random-cnn features, random-cnn last:1 and all (one sweep), and the last
    block of the small random ViT (gradient checkpointing on, tiles resized from 64 to its 112 px)."""
    out = cohort["root"] / "runs"
    assert main(["train", "--multirun", *_train_args(cohort, out)[1:], "model.finetune=none,last:1,all"]) == 0
    assert main(_train_args(cohort, out, "encoder=random-vit-s", "model.finetune=last:1", epochs=1)) == 0
    members = {}
    for folder in out.iterdir():
        if (folder / "member.json").is_file():
            record = json.loads((folder / "member.json").read_text())
            encoder = record["encoder"]
            members[encoder["finetuned"] if "finetuned" in encoder else "none"] = folder
            if encoder["name"] == "random-vit-s":
                members["vit last:1"] = members.pop(encoder["finetuned"])
    assert set(members) == {"none", "last:1", "all", "vit last:1"}, members
    return members


def _changed(folder, encoder: str = "random-cnn") -> tuple[set[str], set[str]]:
    """(names of encoder tensors that differ from the base weights, names that are equal)."""
    base = load_encoder(encoder).model.state_dict()
    own = encoder_state(torch.load(folder / "best.pt", weights_only=True))
    assert set(own) == set(base)
    changed = {k for k in base if not torch.equal(base[k], own[k])}
    return changed, set(base) - changed


def test_last_1_trains_the_last_block_and_leaves_the_rest_as_it_was(runs):
    changed, same = _changed(runs["last:1"])
    assert all(k.startswith(LAST_BLOCK) for k in changed)
    assert all(not k.startswith(LAST_BLOCK) for k in same)   # every tensor of the last stage and head conv changed
    assert any(k.startswith("blocks.3.") for k in same) and "conv_stem.weight" in same
    assert "blocks.3.0.bn1.running_mean" in same   # the frozen part's BatchNorm statistics do not drift either


def test_last_1_of_a_vit_trains_its_last_transformer_block_and_final_norm(runs):
    changed, same = _changed(runs["vit last:1"], "random-vit-s")
    assert changed == {k for k in changed | same if k.startswith(("blocks.3.", "norm."))}
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.2.attn.qkv.weight"} <= same


def test_all_trains_every_tensor_of_the_encoder(runs):
    changed, same = _changed(runs["all"])
    weights = {k for k in changed | same if not k.endswith("num_batches_tracked")}
    assert not (same & weights), sorted(same & weights)[:5]


def test_member_records_base_and_own_encoder_weights(runs):
    record = json.loads((runs["last:1"] / "member.json").read_text())
    base = load_encoder("random-cnn")
    state = torch.load(runs["last:1"] / "best.pt", weights_only=True)
    encoder = record["encoder"]
    assert encoder["name"] == "random-cnn" and encoder["weights_sha256"] == base.weights_sha256
    assert encoder["finetuned"] == "last:1" and encoder["finetuned_sha256"] == state_sha256(encoder_state(state))
    assert record["head"]["dim"] == 256 and record["preprocessing"]["tile_px"] == 64
    assert {k.split(".")[0] for k in state} == {"embedder", "head"}   # its own encoder and head, one file
    assert float(state["head.feature_std"].mean()) != 1.0              # standardised from the base encoder's pass
    frozen = json.loads((runs["none"] / "member.json").read_text())["encoder"]
    assert "finetuned" not in frozen


@pytest.fixture(scope="module")
def scored(cohort, runs) -> dict:
    root = cohort["root"]
    bundle, calibrated, scores = root / "bundle", root / "calibrated", root / "scores"
    runs_dir = runs["none"].parent
    assert main(["select", f"runs={runs_dir}", f"out={bundle}", "k=4", "resolutions=[10x]"]) == 0
    assert main(["calibrate", f"bundle={bundle}", f"manifest={cohort['manifest']}", f"clinical={cohort['clinical']}",
                 f"tiles={cohort['tiles']}", f"features={cohort['features']}", f"out={calibrated}",
                 "calibration.n_bootstrap=0", "engine.workers=0"]) == 0
    assert main(["score", f"bundle={calibrated}", f"manifest={cohort['manifest']}", f"tiles={cohort['tiles']}",
                 f"features={cohort['features']}", f"out={scores}", "exports.heatmap=false", "engine.workers=0"]) == 0
    return {"bundle": calibrated, "scores": scores}


def test_a_bundle_mixing_finetuned_and_frozen_members_scores(scored, runs):
    from wsi_prognosis.ensemble import load_bundle

    bundle = load_bundle(scored["bundle"])
    assert json.loads((scored["bundle"] / "bundle.json").read_text())["format"] == "wsi-prognosis-bundle/3"
    assert sorted(str(m.finetuned) for m in bundle.members) == ["None", "all", "last:1", "last:1"]
    table = pd.read_csv(scored["scores"] / "scores.csv")
    assert (table["status"] == "ok").all() and len(table) > 10
    for member in bundle.members:
        column = table[f"member_{member.name}"]
        assert column.notna().all() and column.std() > 0


def test_finetuned_members_embed_with_their_own_encoder(scored, cohort):
    """Each fine-tuned member has its own encoder (its own output key), and its score is what its own encoder
    gives, not what the base encoder would give."""
    from wsi_prognosis.cohort import read_manifest
    from wsi_prognosis.encoders import TileEmbedder
    from wsi_prognosis.ensemble import load_bundle
    from wsi_prognosis.scoring.engine import EngineConfig
    from wsi_prognosis.scoring.members import load_ensemble
    from wsi_prognosis.slides import TileReader
    from wsi_prognosis.tiling import open_tile_store, tile_store_path

    bundle = load_bundle(scored["bundle"])
    ensemble = load_ensemble(bundle, EngineConfig(device="cpu"))
    keys = {name: spec.key for name, spec in ensemble.feature_specs.items()}
    assert len(set(keys.values())) == 4 and len(ensemble.encoders) == 4
    table = pd.read_csv(scored["scores"] / "scores.csv").set_index("slide_id")
    manifest = read_manifest(cohort["manifest"]).set_index("slide_id")
    slide_id = table.index[0]
    with open_tile_store(tile_store_path(cohort["tiles"], slide_id)) as store:
        grid, coords, mpp = store.grid("10x"), store.coords("10x"), store.mpp
    reader = TileReader(manifest.loc[slide_id, "path"], grid, mpp)
    tiles = reader.read(coords)
    reader.close()
    for member in bundle.members:
        if not member.finetuned:
            continue
        base = TileEmbedder(load_encoder(member.encoder["name"]), 64).embed(tiles)
        network = bundle.load_model(member)
        with torch.no_grad():
            own = float(torch.sigmoid(network.head(network.embed(torch.from_numpy(tiles)))[0]))
            from_base = float(torch.sigmoid(network.head(torch.from_numpy(base))[0]))
        assert own == pytest.approx(table.loc[slide_id, f"member_{member.name}"], abs=1e-4)   # ONNX Runtime vs torch
        assert abs(own - from_base) > 1e-4


def test_a_bad_finetune_value_names_the_allowed_forms(cohort, tmp_path, capsys):
    for bad in ("some", "last:0", "last", "first:2"):
        with pytest.raises(ConfigurationError, match=r"none \| all \| last:N"):
            parse_finetune(bad)
    assert parse_finetune("last:3") == FinetuneMode("last", 3) and str(parse_finetune("all")) == "all"
    assert main(_train_args(cohort, tmp_path, "model.finetune=most")) == 2
    assert "model.finetune='most': not a fine-tuning mode. Fix: one of none | all | last:N" in capsys.readouterr().err


def test_finetuning_needs_a_pretrained_encoder(cohort, tmp_path, capsys):
    assert main(_train_args(cohort, tmp_path, "model.finetune=all", "encoder=none")) == 2
    assert "encoder=none has no pretrained encoder to fine-tune" in capsys.readouterr().err


def test_last_n_on_an_encoder_without_blocks_names_the_encoder(cohort, tmp_path, capsys, monkeypatch):
    from torch import nn

    from wsi_prognosis.encoders import registry

    def blockless() -> registry.EncoderSpec:
        spec = registry.get_encoder("random-cnn")
        from dataclasses import replace

        def build() -> nn.Module:
            return nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        return replace(spec, name="blockless-cnn", dim=8, build=build)

    monkeypatch.setitem(registry._REGISTRY, "blockless-cnn", blockless)
    assert main(_train_args(cohort, tmp_path, "model.finetune=last:1", "encoder.name=blockless-cnn")) == 2
    assert "encoder=blockless-cnn: its network has no blocks" in capsys.readouterr().err
    assert main(_train_args(cohort, tmp_path, "model.finetune=last:6")) == 2
    assert "encoder=random-cnn has 5 blocks" in capsys.readouterr().err


def test_blocks_of_a_vit_are_its_transformer_blocks():
    import timm

    vit = timm.create_model("vit_small_patch16_224", img_size=32, patch_size=16, depth=3, num_classes=0)
    layout = block_layout(vit, "a-vit")
    assert (layout.family, layout.container, layout.n_blocks) == ("vit", "blocks", 3)
    trained = trainable_names(vit, FinetuneMode("last", 1), layout)
    assert "blocks.2.attn.qkv.weight" in trained and "norm.weight" in trained
    assert not {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.1.attn.qkv.weight"} & trained
    wrapped = torch.nn.Sequential()
    wrapped.add_module("trunk", vit)   # a wrapper (e.g. class + mean patch token) finds the ViT's blocks
    assert block_layout(wrapped, "wrapped").container == "trunk.blocks"
