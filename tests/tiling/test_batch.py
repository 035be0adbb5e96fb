"""One batch run with every kind of bad input; the good slides still finish.

Also the real-slide checks: CMU-1's 10x grid against an independent computation, the 40x
upsampling rule on a 20x slide, the annotation restriction.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from wsi_prognosis.cohort import read_manifest
from wsi_prognosis.tiling import open_tile_store
from wsi_prognosis.tiling.pipeline import TilingConfig, tile_manifest

CMU_MPP = 0.499


@pytest.fixture(scope="module")
def batch(tmp_path_factory, slides_dir, cmu_slide, tcga_no_mpp_slide, blank_slide, geojson_files, manifest_writer):
    folder = tmp_path_factory.mktemp("batch")
    rows = [
        {"slide_id": "cmu", "path": cmu_slide},
        {"slide_id": "cmu_annotated", "path": cmu_slide, "annotation": geojson_files["top_half"]},
        {"slide_id": "tcga_no_mpp", "path": tcga_no_mpp_slide},
        {"slide_id": "tcga_with_mpp", "path": tcga_no_mpp_slide, "mpp": 0.5},
        {"slide_id": "unopenable", "path": slides_dir / "unopenable.tiff"},
        {"slide_id": "not_a_slide", "path": slides_dir / "not-a-slide.svs"},
        {"slide_id": "unreadable", "path": slides_dir / "unreadable.svs"},
        {"slide_id": "missing", "path": folder / "no-such-slide.svs"},
        {"slide_id": "blank", "path": blank_slide},
        {"slide_id": "bad_geojson", "path": cmu_slide, "annotation": geojson_files["broken"]},
        {"slide_id": "outside_geojson", "path": cmu_slide, "annotation": geojson_files["outside"]},
    ]
    manifest = read_manifest(manifest_writer(folder / "manifest.csv", rows))
    out = folder / "tiles"
    summary = tile_manifest(manifest, out, TilingConfig(), workers=2)
    return summary.set_index("slide_id"), out


def test_every_slide_has_a_row_in_manifest_order(batch):
    summary, out = batch
    written = pd.read_csv(out / "summary.csv", dtype={"error": str, "warnings": str})
    assert list(written["slide_id"]) == list(summary.index)
    assert list(written.columns) == ["slide_id", "status", "error", "mpp", "mpp_source", "n_tiles_10x",
                                     "n_tiles_40x", "tissue_mm2", "seconds", "pen_fraction", "blur", "warnings"]
    ok = {"cmu", "cmu_annotated", "tcga_with_mpp", "blank"}
    assert set(summary.index[summary["status"] == "ok"]) == ok
    assert sorted(p.stem for p in out.glob("*.h5")) == sorted(ok)
    assert sorted(p.stem for p in (out / "qc").glob("*.png")) == sorted(ok)
    assert not list(out.glob(".*.part"))


@pytest.mark.parametrize("slide_id,words", [
    ("unopenable", ["unopenable.tiff", "cannot be opened"]),
    ("not_a_slide", ["not-a-slide.svs", "not a slide format"]),
    ("unreadable", ["unreadable.svs", "cannot be read"]),
    ("missing", ["no-such-slide.svs", "not found"]),
    ("tcga_no_mpp", ["TCGA-CR-7395", "MPP", "`mpp` column", "allow_objective_power"]),
    ("bad_geojson", ["broken.geojson", "JSON"]),
    ("outside_geojson", ["outside.geojson", "outside the slide"]),
])
def test_failed_rows_say_why(batch, slide_id, words):
    row = batch[0].loc[slide_id]
    assert row["status"] == "failed"
    for word in words:
        assert word in row["error"]


def test_tcga_tiles_with_the_manifest_mpp(batch):
    row = batch[0].loc["tcga_with_mpp"]
    assert (row["mpp"], row["mpp_source"]) == (0.5, "manifest") and row["n_tiles_10x"] > 0
    with open_tile_store(batch[1] / "tcga_with_mpp.h5") as store:
        assert store.mpp_source == "manifest" and store.grid("10x").level == 1


def test_blank_slide_is_ok_with_zero_tiles_and_a_warning(batch):
    row = batch[0].loc["blank"]
    assert row["status"] == "ok" and row["n_tiles_10x"] == 0 and row["tissue_mm2"] == 0
    assert "no tissue" in row["warnings"]


def test_cmu_10x_grid_matches_an_independent_computation(batch):
    """Lattice of 224-µm squares from the top-left corner; fraction = mean of the stored mask
    sampled 64 x 64 times inside each square; kept when >= 0.5."""
    with open_tile_store(batch[1] / "cmu.h5") as store:
        mask, mask_mpp = store.tissue_mask()
        coords, fraction = store.coords("10x"), store.tissue_fraction("10x")
        grid = store.grid("10x")
    assert (grid.mpp, grid.tile_px, grid.level, grid.downsample) == (1.0, 224, 0, 1.0)
    side = 224 / CMU_MPP                                        # 448.9 level-0 px
    n_x, n_y = int(2220 // side), int(2967 // side)             # 4 x 6 candidates wholly inside
    expected_coords, expected_fraction = [], []
    for j in range(n_y):
        for i in range(n_x):
            x, y = round(i * side), round(j * side)
            samples = (np.arange(64) + 0.5) / 64 * side
            cols = np.floor((x + samples) * CMU_MPP / mask_mpp).astype(int)
            rows = np.floor((y + samples) * CMU_MPP / mask_mpp).astype(int)
            value = mask[np.ix_(rows, cols)].mean()
            if value >= 0.5:
                expected_coords.append((x, y))
                expected_fraction.append(value)
    assert np.array_equal(coords, np.array(expected_coords))
    assert len(coords) == batch[0].loc["cmu", "n_tiles_10x"] and 5 <= len(coords) <= 20
    assert np.allclose(fraction, expected_fraction, atol=0.02)
    # the mask itself: tissue is where the thumbnail is not white glass
    area = mask.sum() * (mask_mpp / 1000) ** 2
    assert 0.3 < area < 1.2 and area == pytest.approx(batch[0].loc["cmu", "tissue_mm2"], rel=1e-3)


def test_40x_on_a_20x_slide_is_refused_as_documented(batch):
    row = batch[0].loc["cmu"]
    assert row["status"] == "ok" and pd.isna(row["n_tiles_40x"])
    assert "40x refused" in row["warnings"] and "slides.max_upsample" in row["warnings"]
    with open_tile_store(batch[1] / "cmu.h5") as store:
        assert store.resolutions == ["10x"] and "40x" in store.refused


def test_40x_upsampled_when_allowed_and_inside_parents(tmp_path, cmu_slide, manifest_writer):
    manifest = read_manifest(manifest_writer(tmp_path / "m.csv", [{"slide_id": "cmu", "path": cmu_slide}]))
    config = TilingConfig.from_mapping(slides={"max_upsample": 2.0}, tiling={"qc_thumbnails": False})
    summary = tile_manifest(manifest, tmp_path / "tiles", config, workers=1)
    assert summary.loc[0, "n_tiles_40x"] > 0
    with open_tile_store(tmp_path / "tiles" / "cmu.h5") as store:
        parents, children = store.coords("10x"), store.coords("40x")
        parent = store.parent("40x")
        fractions = store.tissue_fraction("40x")
        assert store.grid("40x").level == 0
    big, small = 224 / CMU_MPP, 56 / CMU_MPP
    offset = children - parents[parent]
    assert np.all(offset >= 0) and np.all(offset + small <= big + 1)   # inside, up to rounding
    assert np.all(fractions >= 0.5) and len(children) <= 16 * len(parents)


def test_annotation_restricts_tiles_to_the_polygon(batch):
    summary, out = batch
    assert 0 < summary.loc["cmu_annotated", "n_tiles_10x"] < summary.loc["cmu", "n_tiles_10x"]
    with open_tile_store(out / "cmu_annotated.h5") as store:
        assert np.all(store.coords("10x")[:, 1] + 224 / CMU_MPP <= 1400 + 1)
        assert store.annotation.endswith("top_half.geojson")


def test_qc_thumbnail_is_the_slide_at_mask_mpp(batch):
    image = np.asarray(Image.open(batch[1] / "qc" / "cmu.png"))
    assert image.shape == (int(np.ceil(2967 * CMU_MPP / 8)), int(np.ceil(2220 * CMU_MPP / 8)), 3)


def test_annotations_folder_is_searched_by_slide_id(tmp_path, cmu_slide, geojson_files, manifest_writer):
    folder = tmp_path / "annotations"
    folder.mkdir()
    (folder / "annotated.geojson").write_bytes(geojson_files["top_half"].read_bytes())
    manifest = read_manifest(manifest_writer(tmp_path / "m.csv", [
        {"slide_id": "annotated", "path": cmu_slide}, {"slide_id": "plain", "path": cmu_slide}]))
    config = TilingConfig.from_mapping(tiling={"resolutions": ["10x"], "qc_thumbnails": False, "blur_tiles": 0},
                                       annotations_dir=folder)
    summary = tile_manifest(manifest, tmp_path / "tiles", config, workers=1).set_index("slide_id")
    assert summary.loc["annotated", "n_tiles_10x"] < summary.loc["plain", "n_tiles_10x"]
    assert "no plain.geojson" in summary.loc["plain", "warnings"]
    with open_tile_store(tmp_path / "tiles" / "annotated.h5") as store:
        assert store.annotation == str(folder / "annotated.geojson")
