"""Grid geometry: area-weighted tissue fractions, exact subdivision, parents, raster order."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from wsi_prognosis.tiling.grid import build_grids, subdivision, summed_area_table, tissue_fractions


def _brute_force_fraction(mask, x0, y0, side, oversample=64):
    """Average of the mask sampled on a fine regular grid inside the square (independent method)."""
    offsets = (np.arange(oversample) + 0.5) / oversample * side
    xs, ys = x0 + offsets, y0 + offsets
    cols = np.clip(np.floor(xs).astype(int), 0, mask.shape[1] - 1)
    rows = np.clip(np.floor(ys).astype(int), 0, mask.shape[0] - 1)
    inside = ((xs < mask.shape[1])[None, :] & (ys < mask.shape[0])[:, None])
    return float((mask[np.ix_(rows, cols)] & inside).mean())


def test_fractions_weight_partial_mask_pixels_by_area():
    mask = np.zeros((4, 4), bool)
    mask[1, 1] = True                                           # one tissue pixel
    table = summed_area_table(mask)
    # a 2x2 square starting at (0.5, 0.5) covers a quarter of... the full pixel (1,1): 1/4 of the square
    got = tissue_fractions(table, np.array([[1, 1]]), 4.0, slide_mpp=1.0, mask_mpp=2.0)
    assert got[0] == pytest.approx(0.25)
    # shifted by half a mask pixel: the square covers half of pixel (1, 1) -> 0.5 / 4
    got = tissue_fractions(table, np.array([[3, 2]]), 4.0, slide_mpp=1.0, mask_mpp=2.0)
    assert got[0] == pytest.approx(0.125)


def test_fractions_match_brute_force_on_a_random_mask():
    rng = np.random.default_rng(1)
    mask = rng.random((40, 50)) < 0.4
    table = summed_area_table(mask)
    coords = rng.integers(0, 300, size=(30, 2))
    side = 57.0                                                  # level-0 px, 7.125 mask px
    got = tissue_fractions(table, coords, side, slide_mpp=0.5, mask_mpp=4.0)
    expected = [_brute_force_fraction(mask, x * 0.125, y * 0.125, side * 0.125, 256) for x, y in coords]
    assert np.allclose(got, expected, atol=0.01)


def test_subdivision_must_be_exact():
    assert subdivision(224.0, 56.0) == 4 and subdivision(224.0, 224.0) == 1
    with pytest.raises(ValueError, match="does not subdivide"):
        subdivision(224.0, 60.0)


def test_build_grids_invariants_on_a_blob():
    slide_mpp, dims = 0.25, (12_000, 9_000)                      # 3000 x 2250 µm
    yy, xx = np.mgrid[0:282, 0:375]                               # mask at 8 µm/px
    mask = ((xx - 180) ** 2 / 120**2 + (yy - 140) ** 2 / 90**2) < 1
    grids = build_grids(dims, slide_mpp, {"10x": 224.0, "40x": 56.0}, mask, 8.0, 0.5)
    base, fine = grids["10x"], grids["40x"]
    assert base.parent is None and len(base.coords) > 10 and len(fine.coords) > 16 * len(base.coords) // 2
    assert np.all(base.tissue_fraction >= 0.5) and np.all(fine.tissue_fraction >= 0.5)
    # base lattice: multiples of 896 level-0 px, inside the slide
    assert np.all(base.coords % 896 == 0) and np.all(base.coords + 896 <= dims)
    # every 40x tile lies inside its 10x parent, on the 224-px sub-lattice
    parent_xy = base.coords[fine.parent]
    offset = fine.coords - parent_xy
    assert np.all(offset >= 0) and np.all(offset + 224 <= 896) and np.all(offset % 224 == 0)
    # raster order (rows, then columns) at both resolutions
    for grid in (base, fine):
        keys = grid.coords[:, 1] * 10**9 + grid.coords[:, 0]
        assert np.all(np.diff(keys) > 0)


def test_non_integer_level0_steps_round_consistently():
    grids = build_grids((2220, 2967), 0.499, {"10x": 224.0, "40x": 56.0}, np.ones((186, 139), bool), 8.0, 0.5)
    base, fine = grids["10x"], grids["40x"]
    assert len(base.coords) == 4 * 6 and len(fine.coords) == 16 * 24
    first_children = fine.coords[np.isin(fine.coords, base.coords).all(axis=1)]
    assert len(first_children) == len(base.coords)                 # a parent and its first child share x, y
    assert np.array_equal(np.unique(base.coords[:, 0]), np.rint(np.arange(4) * 224 / 0.499).astype(int))


def test_empty_mask_gives_empty_grids():
    grids = build_grids((4000, 4000), 0.25, {"10x": 224.0, "40x": 56.0}, np.zeros((125, 125), bool), 8.0, 0.5)
    assert grids["10x"].coords.shape == (0, 2) and grids["40x"].coords.shape == (0, 2)


def test_grid_module_imports_no_slide_or_hdf5_library():
    code = ("import sys; import wsi_prognosis.tiling.grid; "
            "bad = [m for m in ('openslide', 'h5py', 'tifffile', 'torch') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
