"""Thin wrappers over `skimage.morphology` with sizes in pixels and cheap early exits.

scikit-image 0.26 renamed `min_size`/`area_threshold` (strictly smaller) to `max_size`
(this size or smaller); the wrappers take "remove / fill components of at most `max_px`
pixels" and call whichever the installed version has.
"""

from __future__ import annotations

import inspect

import numpy as np
from scipy import ndimage
from skimage import morphology

__all__ = ["remove_small", "fill_small_holes", "close", "dilate"]

_HAS_MAX_SIZE = "max_size" in inspect.signature(morphology.remove_small_objects).parameters


def remove_small(mask: np.ndarray, max_px: int) -> np.ndarray:
    """Drop 8-connected components of `max_px` pixels or fewer from a bool mask."""
    if max_px <= 0 or not mask.any():
        return mask
    if _HAS_MAX_SIZE:
        return morphology.remove_small_objects(mask, max_size=max_px, connectivity=2)
    return morphology.remove_small_objects(mask, min_size=max_px + 1, connectivity=2)  # pragma: no cover


def fill_small_holes(mask: np.ndarray, max_px: int) -> np.ndarray:
    """Fill 4-connected holes of `max_px` pixels or fewer in a bool mask.

    Background touching the image border is never a hole.
    """
    if max_px <= 0 or not mask.any():
        return mask
    if _HAS_MAX_SIZE:
        return morphology.remove_small_holes(mask, max_size=max_px, connectivity=1)
    return morphology.remove_small_holes(mask, area_threshold=max_px + 1, connectivity=1)  # pragma: no cover


def close(mask: np.ndarray, radius_px: int) -> np.ndarray:
    """Binary closing with a disk of `radius_px`; the image border does not erode."""
    if radius_px <= 0 or not mask.any():
        return mask
    # Edge padding: the erosion step must not eat tissue that touches the image border.
    # (scipy's binary morphology: skimage 0.26 deprecates its binary_* wrappers of it.)
    padded = np.pad(mask, radius_px, mode="edge")
    closed = ndimage.binary_closing(padded, structure=morphology.disk(radius_px).astype(bool))
    return closed[radius_px:-radius_px, radius_px:-radius_px]


def dilate(mask: np.ndarray, radius_px: int) -> np.ndarray:
    """Binary dilation with a disk of `radius_px`."""
    if radius_px <= 0 or not mask.any():
        return mask
    return ndimage.binary_dilation(mask, structure=morphology.disk(radius_px).astype(bool))
