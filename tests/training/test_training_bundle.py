"""The model bundle: write, verify on load, refuse tampered or missing weights by name, derive."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from wsi_prognosis.ensemble import Member, derive_bundle, load_bundle, member_slide_score, write_bundle
from wsi_prognosis.errors import BundleError
from wsi_prognosis.models import build_backbone, default_preprocessing

TINY = "test_efficientnet"
TILE_SPEC = {"resolutions": {"10x": {"mpp": 1.0, "tile_px": 64}, "40x": {"mpp": 0.25, "tile_px": 64}},
             "min_tissue_fraction": 0.5, "tissue": {}}


def _member(name: str, resolution: str) -> Member:
    mpp = TILE_SPEC["resolutions"][resolution]["mpp"]
    return Member(name=name, resolution=resolution, arch=TINY, weights="", sha256="",
                  preprocessing=default_preprocessing(TINY, tile_px=64, mpp=mpp).to_dict(),
                  pooling={"method": "mean"}, tuning_metrics={"c_index": 0.7}, seed=0)


@pytest.fixture()
def bundle_dir(tmp_path: Path) -> Path:
    members = []
    for i, res in enumerate(["10x", "10x", "40x"]):
        torch.manual_seed(i)
        weights = tmp_path / f"src{i}.pt"
        torch.save(build_backbone(TINY).state_dict(), weights)
        members.append((_member(f"{res}_m{i}", res), weights))
    write_bundle(tmp_path / "bundle", members, tile_spec=TILE_SPEC, aggregation={"members": "mean", "patient": "mean"},
                 training_configs={m.name: {"seed": 0} for m, _ in members})
    return tmp_path / "bundle"


def test_roundtrip_and_contents(bundle_dir: Path):
    bundle = load_bundle(bundle_dir)
    record = json.loads((bundle_dir / "bundle.json").read_text())
    assert record["thresholds"] is None and bundle.thresholds is None
    assert [m.name for m in bundle.members] == ["10x_m0", "10x_m1", "40x_m2"]
    assert set(record["versions"]) >= {"torch", "timm", "wsi-prognosis"}
    assert bundle.tile_spec == TILE_SPEC and len(bundle.id) == 16


@pytest.mark.parametrize("index", [0, 1, 2])
def test_each_member_scores_tiles(bundle_dir: Path, index: int):
    bundle = load_bundle(bundle_dir)
    member = bundle.members[index]
    model = bundle.load_model(member)
    assert not model.training
    tiles = np.random.default_rng(index).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    score = member_slide_score(model, member, tiles)
    assert 0.0 <= score <= 1.0
    assert member_slide_score(model, member, tiles) == score  # eval mode: deterministic


def test_tampered_weights_refused_by_name(bundle_dir: Path):
    target = bundle_dir / "members" / "10x_m1.pt"
    data = bytearray(target.read_bytes())
    data[-10] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"10x_m1\.pt.*sha256"):
        load_bundle(bundle_dir)


def test_missing_weights_refused_by_name(bundle_dir: Path):
    (bundle_dir / "members" / "40x_m2.pt").unlink()
    with pytest.raises(BundleError, match=r"40x_m2\.pt.*missing"):
        load_bundle(bundle_dir)


def test_edited_bundle_json_refused(bundle_dir: Path):
    record = json.loads((bundle_dir / "bundle.json").read_text())
    record["aggregation"]["patient"] = "max"
    (bundle_dir / "bundle.json").write_text(json.dumps(record))
    with pytest.raises(BundleError, match="edited"):
        load_bundle(bundle_dir)


class _Payload:  # any non-tensor object: a pickle that would run code on load
    pass


def test_weights_loaded_with_weights_only(tmp_path: Path):
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"x": _Payload()}))
    bundle = write_bundle(tmp_path / "b", [(_member("10x_evil", "10x"), evil)], tile_spec=TILE_SPEC,
                          aggregation={"members": "mean"}, training_configs={})
    with pytest.raises(BundleError, match="not a plain tensor state_dict"):
        bundle.load_model(bundle.members[0])


def test_derive_bundle_new_id_original_untouched(bundle_dir: Path, tmp_path: Path):
    original = load_bundle(bundle_dir)
    before = (bundle_dir / "bundle.json").read_bytes()
    derived = derive_bundle(original, tmp_path / "calibrated", thresholds={"low": 0.3, "high": 0.6},
                            calibration={"method": "quantiles", "cohort": "tuning"})
    assert derived.id != original.id and derived.parent_id == original.id
    assert load_bundle(tmp_path / "calibrated").thresholds == {"low": 0.3, "high": 0.6}
    assert (bundle_dir / "bundle.json").read_bytes() == before
    assert [m.sha256 for m in derived.members] == [m.sha256 for m in original.members]
    with pytest.raises(BundleError, match="immutable"):
        derive_bundle(original, bundle_dir, thresholds={"low": 0.1, "high": 0.2}, calibration={})
    # a calibrated bundle folder is never overwritten by a different bundle
    with pytest.raises(BundleError, match="immutable"):
        derive_bundle(original, tmp_path / "calibrated", thresholds={"low": 0.2, "high": 0.5}, calibration={})
