"""The fast morphology equals scikit-image / scipy on random masks; the doc examples hold."""

from __future__ import annotations

import doctest
import importlib
import warnings

import numpy as np
import pytest
from scipy import ndimage
from skimage import morphology
from skimage.segmentation import find_boundaries

from wsi_prognosis.tissue.morphology import close, dilate, erode, fill_small_holes, remove_small
from wsi_prognosis.tissue.qc import inner_boundary


def random_masks():
    rng = np.random.default_rng(7)
    for density in (0.05, 0.3, 0.6, 0.9):
        # Smooth blobs (thresholded blurred noise), like tissue, plus salt noise.
        field = ndimage.gaussian_filter(rng.random((61, 83)), 2.0)
        blobs = field > np.quantile(field, 1 - density)
        yield blobs ^ (rng.random(blobs.shape) < 0.02)
    yield np.zeros((10, 12), bool)
    yield np.ones((10, 12), bool)


MASKS = list(random_masks())


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("radius", [1, 2, 3, 5])
def test_dilate_and_erode_equal_scipy_with_a_disk(mask, radius):
    footprint = morphology.disk(radius).astype(bool)
    np.testing.assert_array_equal(dilate(mask, radius), ndimage.binary_dilation(mask, footprint))
    # Erosion with the outside counted as foreground (the border does not erode).
    np.testing.assert_array_equal(erode(mask, radius),
                                  ndimage.binary_erosion(mask, footprint, border_value=1))
    np.testing.assert_array_equal(close(mask, radius),
                                  ndimage.binary_erosion(ndimage.binary_dilation(mask, footprint),
                                                         footprint, border_value=1) if mask.any() else mask)


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("max_px", [1, 5, 40])
def test_remove_small_equals_skimage(mask, max_px):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage's own keyword deprecations across versions
        expected = _skimage_remove_small_objects(mask, max_px)
    np.testing.assert_array_equal(remove_small(mask, max_px), expected)


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("max_px", [1, 5, 40])
def test_fill_small_holes_equals_skimage_except_at_the_border(mask, max_px):
    # skimage also fills small background pieces that touch the image border; here those are
    # glass, not holes. Surround the mask with a 1-px glass frame that reaches every border
    # piece, and skimage agrees once the frame is taken off again.
    framed = np.pad(mask, 1)
    framed_expected = _skimage_remove_small_holes(framed, max_px)[1:-1, 1:-1]
    np.testing.assert_array_equal(fill_small_holes(mask, max_px), framed_expected)


def test_fill_small_holes_literal():
    ring = np.ones((7, 7), bool)
    ring[2:5, 2:5] = False          # a 9-px hole
    ring[0, 3] = False              # a 1-px notch at the border: glass, never filled
    assert fill_small_holes(ring, 9)[2:5, 2:5].all()
    assert not fill_small_holes(ring, 8)[2:5, 2:5].any()
    assert not fill_small_holes(ring, 9)[0, 3]


@pytest.mark.parametrize("mask", MASKS)
def test_inner_boundary_equals_find_boundaries(mask):
    np.testing.assert_array_equal(inner_boundary(mask), find_boundaries(mask, mode="inner"))


def _skimage_remove_small_objects(mask, max_px):
    try:
        return morphology.remove_small_objects(mask, max_size=max_px, connectivity=2)
    except TypeError:  # scikit-image < 0.26
        return morphology.remove_small_objects(mask, min_size=max_px + 1, connectivity=2)


def _skimage_remove_small_holes(mask, max_px):
    try:
        return morphology.remove_small_holes(mask, max_size=max_px, connectivity=1)
    except TypeError:  # scikit-image < 0.26
        return morphology.remove_small_holes(mask, area_threshold=max_px + 1, connectivity=1)


@pytest.mark.parametrize("module", ["color", "mask", "pen", "blur", "annotations", "params"])
def test_docstring_examples(module):
    mod = importlib.import_module(f"wsi_prognosis.tissue.{module}")
    result = doctest.testmod(mod, extraglobs={"np": np}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def spiral(n: int) -> np.ndarray:
    """One long 1-px path winding inwards: the slowest case for label propagation."""
    mask = np.zeros((n, n), bool)
    top, left, bottom, right = 0, 0, n - 1, n - 1
    while top <= bottom and left <= right:
        mask[top, left:right + 1] = True
        mask[top:bottom + 1, right] = True
        mask[bottom, left:right + 1] = True
        mask[top + 2:bottom + 1, left] = True
        if top + 2 <= bottom:
            mask[top + 2, left:left + 2] = True
        top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
    return mask


def diagonal_steps() -> np.ndarray:
    # Pixels touching only at corners: one 8-connected component, many 4-connected ones.
    return np.eye(9, dtype=bool) | np.eye(9, k=2, dtype=bool)


@pytest.mark.parametrize("mask", [*MASKS, spiral(41), spiral(40), diagonal_steps(),
                                  np.random.default_rng(2).random((50, 70)) < 0.5])
@pytest.mark.parametrize("connectivity", [4, 8])
def test_run_components_equal_scipy_label(mask, connectivity):
    from wsi_prognosis.tissue.morphology import _Runs

    structure = np.ones((3, 3), bool) if connectivity == 8 else None
    labels, count = ndimage.label(mask, structure=structure)
    runs = _Runs.of(mask)
    component, sizes = runs.components(connectivity=connectivity)
    assert sizes.size == count
    # Same partition: each run lies in one scipy component, and the mapping is one-to-one.
    scipy_label_of_run = labels[runs.rows, runs.starts]
    pairs = set(zip(component.tolist(), scipy_label_of_run.tolist(), strict=True))
    assert len(pairs) == count == len({a for a, _ in pairs}) == len({b for _, b in pairs})
    expected_sizes = np.bincount(labels.ravel())[1:]
    np.testing.assert_array_equal(np.sort(sizes), np.sort(expected_sizes))
    # Painting every run gives back the mask.
    np.testing.assert_array_equal(runs.paint(np.ones(component.size, bool)), mask)


@pytest.mark.parametrize("radius", range(0, 9))
def test_disk_equals_skimage(radius):
    from wsi_prognosis.tissue.morphology import disk

    np.testing.assert_array_equal(disk(radius), morphology.disk(radius).astype(bool))


def test_otsu_equals_skimage_on_histograms():
    from skimage.filters import threshold_otsu

    from wsi_prognosis.tissue.mask import otsu_threshold

    rng = np.random.default_rng(5)
    for _ in range(50):
        # Bimodal saturation-like histograms: glass near 0-10, tissue around 40-150, with
        # empty bins at both ends (which skimage trims).
        values = np.concatenate([rng.normal(rng.uniform(2, 10), 3, rng.integers(100, 5000)),
                                 rng.normal(rng.uniform(40, 150), 20, rng.integers(100, 5000))])
        hist = np.bincount(np.clip(np.rint(values), 0, 255).astype(int), minlength=256)
        assert otsu_threshold(hist) == threshold_otsu(hist=hist)
    with pytest.raises(ValueError, match="two distinct"):
        otsu_threshold(np.array([0, 7, 0]))
