"""Score the real CMU-1-Small-Region.svs end to end: tiles, scores, heatmap, GeoJSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import FAST_ENGINE, cli, read_scores
from wsi_prognosis.ensemble import load_bundle, member_slide_score
from wsi_prognosis.slides import Slide, TileReader
from wsi_prognosis.tiling import open_tile_store, tile_store_path


@pytest.fixture(scope="module")
def cmu_run(tmp_path_factory, small_bundle, cmu_slide):
    out = tmp_path_factory.mktemp("cmu")
    manifest = out.parent / "cmu_manifest.csv"
    pd.DataFrame([{"slide_id": "CMU-1", "patient_id": "p1", "path": str(cmu_slide), "cohort": "test"}]).to_csv(manifest, index=False)
    assert cli("score", f"bundle={small_bundle}", f"manifest={manifest}", f"out={out}", *FAST_ENGINE) == 0
    return out


def test_scores_and_patient_table(cmu_run, small_bundle, cmu_slide):
    scores = read_scores(cmu_run)
    row = scores.iloc[0]
    assert list(scores.columns[:9]) == ["slide_id", "patient_id", "cohort", "score", "risk_group", "n_tiles_10x",
                                        "n_tiles_40x", "status", "error"]
    assert row["status"] == "ok" and 0 <= row["score"] <= 1 and row["n_tiles_10x"] > 10 and row["n_tiles_40x"] > 40
    assert pd.isna(row["risk_group"])  # an uncalibrated bundle assigns no group
    bundle = load_bundle(small_bundle)
    assert row["score"] == pytest.approx(np.mean([row[f"member_{m.name}"] for m in bundle.members]), abs=1e-9)
    # each member's score equals the bundle's own reference on the same tiles
    with open_tile_store(tile_store_path(cmu_run / "tiles", "CMU-1")) as store:
        for member in bundle.members:
            reader = TileReader(cmu_slide, store.grid(member.resolution), store.mpp)
            tiles = reader.read(store.coords(member.resolution))
            expected = member_slide_score(bundle.load_model(member), member, tiles)
            assert row[f"member_{member.name}"] == pytest.approx(expected, abs=1e-5)
    patients = pd.read_csv(cmu_run / "patient_scores.csv", dtype={"patient_id": str})
    assert patients[["patient_id", "cohort", "n_slides"]].values.tolist() == [["p1", "test", 1]]
    assert patients["score"].iloc[0] == pytest.approx(row["score"])
    record = json.loads((cmu_run / "run_score.json").read_text())
    assert record["bundle_id"] == bundle.id and record["inputs"]["manifest"]["sha256"]
    assert "torch" in record["versions"] and record["config"]["bundle"] == str(small_bundle)


def test_geojson_matches_the_tile_store(cmu_run, cmu_slide):
    collection = json.loads((cmu_run / "geojson" / "CMU-1.geojson").read_text())
    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    tissue = [f for f in features if f["properties"]["objectType"] == "annotation"]
    assert len(tissue) == 1 and tissue[0]["geometry"]["type"] == "MultiPolygon"
    with Slide.from_path(cmu_slide) as slide:
        width, height = slide.dimensions
    for polygon in tissue[0]["geometry"]["coordinates"]:
        for ring in polygon:
            xy = np.asarray(ring)
            assert (xy[0] == xy[-1]).all() and len(xy) >= 4
            assert xy[:, 0].min() >= 0 and xy[:, 0].max() <= width and xy[:, 1].min() >= 0 and xy[:, 1].max() <= height
    with open_tile_store(tile_store_path(cmu_run / "tiles", "CMU-1")) as store:
        for res in ("10x", "40x"):
            tiles = [f for f in features if f["properties"]["classification"]["name"] == f"{res} tile"]
            coords = store.coords(res)
            side = store.grid(res).tile_um / store.mpp
            assert len(tiles) == len(coords)
            for feature, (x, y) in zip(tiles, coords):
                assert feature["geometry"]["type"] == "Polygon" and feature["properties"]["objectType"] == "detection"
                ring = np.asarray(feature["geometry"]["coordinates"][0])
                assert ring.shape == (5, 2) and (ring[0] == ring[-1]).all()
                assert ring[:, 0].min() == x and ring[:, 1].min() == y
                assert ring[:, 0].max() - x == pytest.approx(side, abs=0.01)
                assert ring[:, 1].max() - y == pytest.approx(side, abs=0.01)
                assert ring[:, 0].max() <= width + 0.5 and ring[:, 1].max() <= height + 0.5
                m = feature["properties"]["measurements"]
                assert 0 <= m["score"] <= 1 and any(k.startswith("member_") for k in m)
    # tile scores agree with the stored per-slide arrays
    arrays = np.load(cmu_run / "slides" / "CMU-1.npz")
    probs = 1 / (1 + np.exp(-arrays["logits_40x"].astype(float)))
    geo = [f["properties"]["measurements"]["score"] for f in features if f["properties"]["classification"]["name"] == "40x tile"]
    np.testing.assert_allclose(geo, probs.mean(axis=0), atol=1e-6)


def test_heatmap_is_a_thumbnail_png(cmu_run):
    image = Image.open(cmu_run / "heatmaps" / "CMU-1.png")
    assert image.format == "PNG" and image.mode == "RGB"
    pixels = np.asarray(image)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 2 * 150  # two panels (10x, 40x)
    assert len(np.unique(pixels.reshape(-1, 3)[::31], axis=0)) > 100  # real image content, not a blank canvas


def test_a_20x_slide_cannot_serve_real_40x(tmp_path, real_bundle, cmu_slide):
    manifest = tmp_path / "m.csv"
    pd.DataFrame([{"slide_id": "CMU-1", "patient_id": "p1", "path": str(cmu_slide), "cohort": "test"}]).to_csv(manifest, index=False)
    assert cli("score", f"bundle={real_bundle}", f"manifest={manifest}", f"out={tmp_path / 'out'}", *FAST_ENGINE) == 0
    row = read_scores(tmp_path / "out").iloc[0]
    assert row["status"] == "failed" and "40x" in row["error"] and math.isnan(row["score"])
    assert not (tmp_path / "out" / "heatmaps" / "CMU-1.png").exists()
