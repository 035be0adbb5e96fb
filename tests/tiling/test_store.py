"""The tile store: contract layout, round trip, determinism, stale and broken files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from wsi_prognosis.errors import FingerprintMismatchError, TileStoreError
from wsi_prognosis.slides import slide_fingerprint
from wsi_prognosis.tiling import GridSpec, open_tile_store, tile_store_path
from wsi_prognosis.tiling.grid import GridResult
from wsi_prognosis.tiling.store import SlideRecord, TileStoreWriter


def _write(path, fingerprint="quickhash1-abc", source="/slides/a.svs"):
    record = SlideRecord(slide_id="a", source_path=source, fingerprint=fingerprint, dimensions=(4000, 3000),
                         mpp=0.25, mpp_source="metadata", tissue_params={"mask_mpp": 8.0},
                         tiling={"min_tissue_fraction": 0.5}, qc={"tissue_mm2": 1.5, "warnings": []},
                         refused={}, annotation="")
    specs = {"10x": GridSpec("10x", 1.0, 224, 2, 4.0), "40x": GridSpec("40x", 0.25, 224, 0, 1.0)}
    grids = {"10x": GridResult(np.array([[0, 0], [896, 0]]), np.array([1.0, 0.6], np.float32), None),
             "40x": GridResult(np.array([[0, 0], [224, 0], [896, 224]]), np.array([1, 1, 0.5], np.float32),
                               np.array([0, 0, 1]))}
    mask = np.zeros((94, 125), bool)
    mask[:20, :50] = True
    return TileStoreWriter.write(path, record, specs, grids, mask, 8.0, "10x")


def test_round_trip_follows_the_contract(tmp_path):
    path = _write(tile_store_path(tmp_path, "a"))
    assert path == tmp_path / "a.h5"
    with open_tile_store(path) as store:
        assert (store.slide_id, store.source_path, store.fingerprint) == ("a", "/slides/a.svs", "quickhash1-abc")
        assert (store.mpp, store.mpp_source, store.dimensions) == (0.25, "metadata", (4000, 3000))
        assert store.resolutions == ["10x", "40x"]
        assert store.grid("10x") == GridSpec("10x", 1.0, 224, 2, 4.0) and store.grid("40x").tile_um == 56.0
        assert store.coords("40x").dtype == np.int64 and store.coords("40x").shape == (3, 2)
        assert store.tissue_fraction("10x").dtype == np.float32
        assert store.parent("40x").tolist() == [0, 0, 1] and store.parent_resolution("40x") == "10x"
        mask, mask_mpp = store.tissue_mask()
        assert mask_mpp == 8.0 and mask.dtype == bool and mask.sum() == 1000
        with pytest.raises(TileStoreError, match="no '20x' grid"):
            store.coords("20x")
        with pytest.raises(TileStoreError, match="base grid"):
            store.parent("10x")
    with h5py.File(path, "r") as h5:
        assert set(h5.attrs) == {"format_version", "slide_id", "source_path", "fingerprint", "dimensions", "mpp",
                                 "mpp_source", "tissue_params", "tiling", "qc", "refused", "annotation",
                                 "package_version", "complete"}
        assert set(h5["10x"].attrs) == {"mpp", "tile_px", "tile_um", "level", "downsample"}
        assert set(h5["40x"]) == {"coords", "tissue_fraction", "parent"}


def test_writes_are_byte_identical(tmp_path):
    one = _write(tmp_path / "one" / "a.h5")
    two = _write(tmp_path / "two" / "a.h5")
    assert one.read_bytes() == two.read_bytes()


def test_incomplete_missing_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(TileStoreError, match="not found"):
        open_tile_store(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(TileStoreError, match="junk.h5"):
        open_tile_store(tmp_path / "junk.h5")
    path = _write(tmp_path / "a.h5")
    with h5py.File(path, "a") as h5:
        h5.attrs["complete"] = False
    with pytest.raises(TileStoreError, match="incomplete"):
        open_tile_store(path)


def test_verify_slide_detects_a_changed_slide(tmp_path, cmu_slide, slides_dir):
    path = _write(tmp_path / "a.h5", fingerprint=slide_fingerprint(cmu_slide), source=str(cmu_slide))
    with open_tile_store(path) as store:
        store.verify_slide(cmu_slide)
        with pytest.raises(FingerprintMismatchError, match="changed since it was tiled"):
            store.verify_slide(slides_dir / "small.svs")
