"""blur_score: variance of the Laplacian, lower for blurred tissue, threshold set on real tiles."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from wsi_prognosis.tissue import (
    BLUR_REFERENCE_MPP,
    BLUR_WARNING_THRESHOLD,
    blur_score,
    laplacian_variance,
    to_gray,
)


def gaussian(gray: np.ndarray, sigma_px: float) -> np.ndarray:
    blurred = ndimage.gaussian_filter(gray.astype(np.float32), sigma_px, axes=(-2, -1))
    return np.clip(np.rint(blurred), 0, 255).astype(np.uint8)


def halve(gray: np.ndarray) -> np.ndarray:
    """2 x 2 block mean: the 0.5 µm/px tiles brought to the 1.0 µm/px the threshold is set for."""
    h, w = (gray.shape[0] // 2) * 2, (gray.shape[1] // 2) * 2
    return np.rint(gray[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))).astype(np.uint8)


@pytest.fixture(scope="module")
def real_gray_tiles(data_dir):
    return [to_gray(np.asarray(Image.open(p).convert("RGB"))) for p in sorted((data_dir / "tiles").iterdir())]


def test_literal_values():
    # Flat tiles have no edges: 0. A 0/255 checkerboard: every interior Laplacian is
    # +-4 * 255 = +-1020, mean 0, so the variance is 1020² = 1,040,400.
    assert blur_score(np.full((3, 8, 8), 200, np.uint8)) == 0.0
    checker = (np.indices((8, 8)).sum(0) % 2 * 255).astype(np.uint8)
    assert blur_score(checker) == pytest.approx(1020.0**2)
    # One tile given as (H, W) equals the same tile as (1, H, W); the score is a mean over tiles.
    assert blur_score(checker) == blur_score(checker[None])
    assert blur_score(np.stack([checker, np.zeros_like(checker)])) == pytest.approx(1020.0**2 / 2)


def test_equals_scipy_laplace_on_the_interior():
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (3, 20, 30), dtype=np.uint8)
    expected = [ndimage.laplace(t.astype(np.float64))[1:-1, 1:-1].var() for t in tiles]
    np.testing.assert_allclose(laplacian_variance(tiles), expected, rtol=1e-6)


def test_edge_cases():
    assert np.isnan(blur_score(np.zeros((0, 16, 16), np.uint8)))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        blur_score(np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        blur_score(np.zeros((2, 8, 8, 3), np.uint8))


def test_score_drops_for_a_blurred_copy_of_a_real_tile(real_gray_tiles):
    for gray in real_gray_tiles:
        sharp = blur_score(gray)
        assert blur_score(gaussian(gray, 1.0)) < sharp / 3
        assert blur_score(gaussian(gray, 2.0)) < blur_score(gaussian(gray, 1.0))


def test_warning_threshold_separates_sharp_from_blurred_real_tissue(real_gray_tiles):
    # The documented calibration: at 1.0 µm/px, in-focus real tissue scores far above the
    # threshold and a sigma-1.5 µm blur (1.5 px at 1.0 µm/px) well below it.
    assert BLUR_REFERENCE_MPP == 1.0
    for gray in real_gray_tiles:
        at_reference = halve(gray)
        assert blur_score(at_reference) > 3 * BLUR_WARNING_THRESHOLD
        assert blur_score(gaussian(at_reference, 1.5)) < BLUR_WARNING_THRESHOLD


def test_to_gray():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [200, 200, 200]]], np.uint8)
    np.testing.assert_array_equal(to_gray(rgb), [[76, 150, 29, 200]])
    assert to_gray(np.zeros((2, 4, 4, 3), np.uint8)).shape == (2, 4, 4)
