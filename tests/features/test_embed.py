"""`wsi-prognosis embed`: one feature store per slide, checked against encoder and tile store, resumable."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest

from wsi_prognosis.cli import main
from wsi_prognosis.encoders import EmbedderConfig, TileEmbedder, load_encoder
from wsi_prognosis.errors import FeatureStoreError, FeatureStoreMismatchError
from wsi_prognosis.features import FeatureSpec, open_feature_store
from wsi_prognosis.slides import TileReader
from wsi_prognosis.tiling import open_tile_store


def _summary(folder):
    return pd.read_csv(folder / "embed_summary.csv")


def test_every_slide_gets_its_tiles_embedded_in_the_tile_store_s_order(embedded):
    folder = embedded["features"] / "random-cnn"
    manifest = pd.read_csv(embedded["manifest"])
    encoder = load_encoder("random-cnn")
    assert sorted(p.stem for p in folder.glob("*.h5")) == sorted(manifest["slide_id"])
    row = manifest.iloc[0]
    with open_tile_store(embedded["tiles"] / f"{row.slide_id}.h5") as tiles, \
            open_feature_store(folder / f"{row.slide_id}.h5") as store:
        assert store.spec.encoder == encoder.identity and store.tile_fingerprint == tiles.content_fingerprint()
        for res in tiles.resolutions:
            np.testing.assert_array_equal(store.coords(res), tiles.coords(res))
            pixels = TileReader(str(embedded["tiles"].parent / "cohort" / row.path), tiles.grid(res), tiles.mpp)
            expected = TileEmbedder(encoder, tiles.grid(res).tile_px, EmbedderConfig(runtime="torch")).embed(
                pixels.read(tiles.coords(res)))
            np.testing.assert_allclose(store.features(res), expected, atol=2e-2, rtol=2e-2)  # float16 on disk


def test_views_are_made_for_training_slides_only(embedded):
    folder = embedded["features"] / "random-cnn"
    manifest = pd.read_csv(embedded["manifest"])
    for row in manifest.itertuples():
        with open_feature_store(folder / f"{row.slide_id}.h5") as store:
            views = store.views("40x")
            if row.cohort == "training":
                assert views.shape[0] == 2 and views.shape[1:] == store.features("40x").shape
                assert np.abs(views[0] - store.features("40x")).mean() > 1e-3  # augmented, not copies
            else:
                assert views is None


def test_a_rerun_skips_matching_stores(embedded):
    folder = embedded["features"] / "random-cnn"
    before = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.h5")}
    assert main(["embed", f"tiles={embedded['tiles']}", f"out={embedded['features']}", f"manifest={embedded['manifest']}",
                 "encoder=random-cnn", "views=2"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.h5")} == before
    assert set(_summary(folder)["status"]) == {"skipped"}


def test_a_store_from_a_retiled_slide_is_refused_by_name_then_remade_when_asked(embedded, tmp_path):
    features = tmp_path / "features"
    shutil.copytree(embedded["features"], features)
    tiles = tmp_path / "tiles"
    shutil.copytree(embedded["tiles"], tiles)
    victim = pd.read_csv(embedded["manifest"]).iloc[0].slide_id
    with h5py.File(tiles / f"{victim}.h5", "r+") as h5:  # as if re-tiled: another grid
        h5["40x/coords"][0] += 8
    args = ["embed", f"tiles={tiles}", f"out={features}", f"manifest={embedded['manifest']}", "encoder=random-cnn"]
    assert main(args) == 0
    summary = _summary(features / "random-cnn").set_index("slide_id")
    assert summary.loc[victim, "status"] == "failed" and "re-tiled" in summary.loc[victim, "error"]
    assert main([*args, "remake=true"]) == 0
    assert _summary(features / "random-cnn").set_index("slide_id").loc[victim, "status"] == "ok"


def test_check_names_what_differs(embedded):
    folder = embedded["features"] / "random-cnn"
    path = next(folder.glob("*.h5"))
    lite0 = FeatureSpec(encoder={"name": "lite0", "weights_sha256": "x", "dim": 1280, "preprocessing": {}})
    with open_feature_store(path) as store:
        with pytest.raises(FeatureStoreMismatchError, match="made with encoder 'random-cnn', not 'lite0'"):
            store.check(lite0)
        other = FeatureSpec(encoder={**store.spec.encoder, "weights_sha256": "abc"})
        with pytest.raises(FeatureStoreMismatchError, match="other random-cnn weights"):
            store.check(other)
        with pytest.raises(FeatureStoreMismatchError, match="re-tiled"):
            store.check(store.spec, "0" * 32)
    with pytest.raises(FeatureStoreError, match="not found. Fix: run `wsi-prognosis embed"):
        open_feature_store(folder / "nope.h5")


def test_stain_normalised_features_are_their_own_set_with_one_target(tiled, tmp_path):
    features = tmp_path / "features"
    args = ["embed", f"tiles={tiled['tiles']}", f"out={features}", f"manifest={tiled['manifest']}",
            "encoder=random-cnn", "stain_norm=macenko"]
    assert main(args) == 0
    folder = features / "random-cnn-macenko"
    target = json.loads((folder / "stain_target.json").read_text())
    assert target["method"] == "macenko" and set(target["targets"]) == {"10x", "40x"}
    with open_feature_store(next(folder.glob("*.h5"))) as store:
        assert store.spec.stain == target
    # another cohort embedded later reuses the target, without the training slides
    validation = tmp_path / "validation.csv"
    manifest = pd.read_csv(tiled["manifest"])
    manifest["path"] = [str(tiled["manifest"].parent / p) for p in manifest["path"]]
    manifest[manifest["cohort"] == "validation"].to_csv(validation, index=False)
    shutil.rmtree(features / "random-cnn-macenko")
    (folder).mkdir(parents=True)
    (folder / "stain_target.json").write_text(json.dumps(target))
    assert main(["embed", f"tiles={tiled['tiles']}", f"out={features}", f"manifest={validation}",
                 "encoder=random-cnn", "stain_norm=macenko"]) == 0
    assert json.loads((folder / "stain_target.json").read_text()) == target
    assert len(list(folder.glob("*.h5"))) == int((manifest["cohort"] == "validation").sum())


def test_without_a_manifest_every_tile_store_is_embedded(tiled, tmp_path):
    assert main(["embed", f"tiles={tiled['tiles']}", f"out={tmp_path}", "encoder=random-cnn", "resolutions=[40x]"]) == 0
    stores = sorted((tmp_path / "random-cnn").glob("*.h5"))
    assert len(stores) == len(list(tiled["tiles"].glob("*.h5")))
    with open_feature_store(stores[0]) as store:
        assert store.resolutions == ["40x"]


def test_a_slide_without_tiles_gets_no_store(tiled, tmp_path):
    tiles = tmp_path / "tiles"
    shutil.copytree(tiled["tiles"], tiles)
    victim = pd.read_csv(tiled["manifest"]).iloc[1].slide_id
    with h5py.File(tiles / f"{victim}.h5", "r+") as h5:  # as a blank slide is stored: empty grids
        for res in ("10x", "40x"):
            for name in ("coords", "tissue_fraction", "parent"):
                if name in h5[res]:
                    shape = (0, 2) if name == "coords" else (0,)
                    dtype = h5[res][name].dtype
                    del h5[res][name]
                    h5[res].create_dataset(name, shape=shape, dtype=dtype)
    assert main(["embed", f"tiles={tiles}", f"out={tmp_path / 'f'}", f"manifest={tiled['manifest']}",
                 "encoder=random-cnn", "verify_slides=false"]) == 0
    summary = _summary(tmp_path / "f" / "random-cnn").set_index("slide_id")
    assert summary.loc[victim, "status"] == "empty"
    assert not (tmp_path / "f" / "random-cnn" / f"{victim}.h5").exists()


def test_an_encoder_trained_at_another_scale_is_refused_with_both_values(tiled, tmp_path):
    """Each slide whose grid is not at the encoder's µm/px is refused (a failed row naming both values and the
    `tile` command); the batch goes on."""
    from dataclasses import replace

    from wsi_prognosis.encoders import get_encoder, registry

    if "random-cnn-at-0.5" not in registry._REGISTRY:
        registry.register_encoder("random-cnn-at-0.5")(
            lambda: replace(get_encoder("random-cnn"), name="random-cnn-at-0.5", mpp=0.5))
    assert main(["embed", f"tiles={tiled['tiles']}", f"out={tmp_path}", f"manifest={tiled['manifest']}",
                 "encoder=random-cnn", "encoder.name=random-cnn-at-0.5"]) == 0
    summary = _summary(tmp_path / "random-cnn-at-0.5")
    assert (summary["status"] == "failed").all()
    assert summary["error"].str.contains(r"trained at 0.5 µm/px but the 10x tiles are 1 µm/px.*tiling.mpp_10x=0.5").all()
