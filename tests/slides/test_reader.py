"""`TileReader`: the direct JPEG path returns exactly OpenSlide's pixels, decodes each JPEG tile
once in raster order, survives pickling, and falls back to OpenSlide elsewhere."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from wsi_prognosis.slides import TileReader
from wsi_prognosis.slides.tiff_writer import write_array_pyramid
from wsi_prognosis.tiling import GridSpec


@pytest.fixture(scope="module")
def synthetic_tiff(tmp_path_factory, data_dir):
    """1500 x 1000 px real H&E texture, 3 levels, 256-px JPEG (YCbCr) tiles, 0.25 µm/px."""
    texture = np.asarray(Image.open(data_dir / "tiles" / "TCGA-AD-6964-01Z-00-DX1_tile_22016_11776.jpg").convert("RGB"))
    rgb = np.tile(texture, (2, 3, 1))[:1000, :1500]
    return write_array_pyramid(tmp_path_factory.mktemp("tiff") / "synthetic.tiff", rgb, 0.25)


def _pair(path, grid, slide_mpp):
    return TileReader(path, grid, slide_mpp), TileReader(path, grid, slide_mpp, direct=False)


def _coords(width, height, side, n=12, seed=0):
    rng = np.random.default_rng(seed)
    xy = np.stack([rng.integers(0, width - side, n), rng.integers(0, height - side, n)], axis=1)
    return np.concatenate([xy, [[0, 0], [width - side, height - side]]]).astype(np.int64)


def test_direct_decode_equals_openslide_on_cmu(cmu_slide):
    native = GridSpec("20x", 0.499, 240)                      # CMU-1's own tile size: aligned and not
    fast, slow = _pair(cmu_slide, native, 0.499)
    coords = _coords(2220, 2967, 240)
    assert fast.backend == "direct" and slow.backend == "openslide"
    assert np.array_equal(fast.read(coords), slow.read(coords))
    tenx = GridSpec("10x", 1.0, 224)                          # resampled 449 -> 224 px, same filter
    fast, slow = _pair(cmu_slide, tenx, 0.499)
    coords = _coords(2220, 2967, 449)
    assert np.array_equal(fast.read(coords), slow.read(coords))


@pytest.mark.parametrize("level,downsample", [(0, 1.0), (1, 2.0)])
def test_direct_decode_equals_openslide_on_synthetic_tiff(synthetic_tiff, level, downsample):
    grid = GridSpec("g", 0.25 * downsample, 224, level, downsample)
    fast, slow = _pair(synthetic_tiff, grid, 0.25)
    side = int(224 * downsample)
    coords = _coords(1500, 1000, side, seed=level) // int(downsample) * int(downsample)
    tiles = fast.read(coords)
    assert fast.backend == "direct" and tiles.shape == (len(coords), 224, 224, 3)
    assert np.array_equal(tiles, slow.read(coords))


def test_raster_order_decodes_each_jpeg_tile_once(synthetic_tiff):
    reader = TileReader(synthetic_tiff, GridSpec("40x", 0.25, 224), 0.25)
    ys, xs = np.mgrid[0 : 1000 - 224 : 224, 0 : 1500 - 224 : 224]
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1)         # 4 rows x 6 columns, raster order
    reader.read(coords)
    right, bottom = coords[:, 0].max() + 224, coords[:, 1].max() + 224
    touched = (-(-right // 256)) * (-(-bottom // 256))          # JPEG tiles under the grid
    assert reader.jpeg_tiles_decoded == touched
    reader.read(coords[:3])                                      # cached: no new decode
    assert reader.jpeg_tiles_decoded == touched


def test_reader_pickles_and_reopens_lazily(synthetic_tiff):
    reader = TileReader(synthetic_tiff, GridSpec("40x", 0.25, 224), 0.25)
    first = reader.read(np.array([[256, 256]]))
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._openslide is None                              # nothing open travels
    assert np.array_equal(clone.read(np.array([[256, 256]])), first)


def test_other_formats_fall_back_to_openslide(tcga_no_mpp_slide, slides_dir):
    jpeg2000 = TileReader(tcga_no_mpp_slide, GridSpec("10x", 1.0, 64, 1, 2.0005055500659967), 0.5)
    tiles = jpeg2000.read(np.array([[1000, 1000]]))
    assert jpeg2000.backend == "openslide" and tiles.shape == (1, 64, 64, 3)
    boxes = TileReader(slides_dir / "boxes.tiff", GridSpec("x", 352.77777983377013, 32), 352.77777983377013)
    assert boxes.read(np.array([[10, 10]])).shape == (1, 32, 32, 3)
