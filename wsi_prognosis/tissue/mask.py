"""Tissue mask of a slide thumbnail: Otsu on saturation, morphology in microns, minus pen."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from wsi_prognosis.tissue.color import channels, check_rgb, saturation_from_max_min
from wsi_prognosis.tissue.morphology import close, dilate, fill_small_holes, remove_small
from wsi_prognosis.tissue.params import TissueParams, pixel_sizes
from wsi_prognosis.tissue.pen import _ink

__all__ = [
    "TissueMask", "otsu_threshold", "saturation_threshold", "tissue_fraction_per_tile", "tissue_mask",
]

# An image given much finer than params.mask_mpp is block-averaged down to about mask_mpp
# first: the mask is meant to be computed at that resolution, and it is faster there.
_DOWNSCALE_RATIO = 1.5


@dataclass(frozen=True, eq=False)
class TissueMask:
    """Result of `tissue_mask`.

    Attributes
    ----------
    mask : (H, W) bool ndarray
        Tissue, pen excluded; same shape as the input image.
    pen : (H, W) bool ndarray
        Pen ink (dilated), all False when pen detection is off.
    mpp : float
        µm/px of `mask` and `pen` (that of the input image).
    tissue_area_mm2 : float
        Area of `mask`, mm².
    pen_fraction : float
        Pen pixels / (tissue or pen) pixels, in [0, 1]; 0 when both are empty.
    threshold : float
        Saturation threshold applied, in [0, 1]: a pixel is tissue when its saturation is
        above it.
    """

    mask: np.ndarray
    pen: np.ndarray
    mpp: float
    tissue_area_mm2: float
    pen_fraction: float
    threshold: float

    @property
    def tissue_fraction(self) -> float:
        """Share of the image that is tissue, in [0, 1]."""
        return float(self.mask.mean()) if self.mask.size else 0.0


def saturation_threshold(sat: np.ndarray, *, params: TissueParams = TissueParams()) -> float:
    """The saturation threshold of `params` for a saturation image.

    Parameters
    ----------
    sat : (H, W) uint8 ndarray
        `saturation_u8` of the thumbnail (saturation x 255).
    params : TissueParams
        `threshold_method`, `min_saturation`, `max_saturation`, `fixed_saturation`.

    Returns
    -------
    threshold : float
        In [0, 1]. For "otsu": Otsu's threshold of the 256-bin histogram, clipped to
        [min_saturation, max_saturation]; a flat image (one grey level, e.g. blank
        glass) has no Otsu threshold and gets `min_saturation`.
    """
    if params.threshold_method == "fixed":
        return float(params.fixed_saturation)
    # Otsu needs only the histogram; a 2 x 2-strided sample of a large thumbnail gives the
    # same threshold at a quarter of the cost.
    sample = sat[::2, ::2] if sat.size > 1_000_000 else sat
    hist = np.bincount(sample.ravel(), minlength=256)
    if np.count_nonzero(hist) < 2:
        return float(params.min_saturation)
    otsu = otsu_threshold(hist) / 255.0
    return float(min(max(otsu, params.min_saturation), params.max_saturation))


def otsu_threshold(hist: np.ndarray) -> float:
    """Otsu's threshold of a histogram whose bin i holds the count of value i.

    The same value as ``skimage.filters.threshold_otsu(hist=hist)`` (tested), in float64 and
    without importing `skimage.filters`, whose import costs more than the whole mask.

    Parameters
    ----------
    hist : (K,) ndarray
        Counts, at least two of them non-zero.

    Returns
    -------
    threshold : float
        The value t maximising the between-class variance of {<= t} and {> t}; values
        above it are foreground.

    Examples
    --------
    >>> otsu_threshold(np.array([0, 5, 5, 0, 0, 0, 3, 4, 0]))
    2.0
    """
    counts = np.asarray(hist, dtype=np.float64)
    values = np.arange(counts.size, dtype=np.float64)
    nonzero = np.flatnonzero(counts)
    if nonzero.size < 2:
        raise ValueError("Otsu's threshold needs at least two distinct values")
    counts = counts[nonzero[0]: nonzero[-1] + 1]
    values = values[nonzero[0]: nonzero[-1] + 1]
    weight1 = np.cumsum(counts)
    weight2 = np.cumsum(counts[::-1])[::-1]
    mean1 = np.cumsum(counts * values) / weight1
    mean2 = (np.cumsum((counts * values)[::-1]) / weight2[::-1])[::-1]
    between = weight1[:-1] * weight2[1:] * (mean1[:-1] - mean2[1:]) ** 2
    return float(values[int(np.argmax(between))])


def tissue_mask(rgb: np.ndarray, *, mpp: float, params: TissueParams = TissueParams()) -> TissueMask:
    """Segment tissue on a low-resolution RGB image of a slide.

    Steps: saturation (uint8) → threshold (`saturation_threshold`) → minus pen
    (`pen_mask` rules) → closing (`closing_um`) → fill holes up to `max_hole_area_um2` →
    drop pieces up to `min_tissue_area_um2` → minus pen again. Sizes are converted to
    pixels at the working resolution by `pixel_sizes`.

    Parameters
    ----------
    rgb : (H, W, 3) uint8 ndarray
        Thumbnail, transparent areas composited onto white. Ideally at `params.mask_mpp`;
        an image more than 1.5x finer is block-averaged to about that resolution first
        and the result scaled back up, so the output always has shape (H, W).
    mpp : float
        µm/px of `rgb`.
    params : TissueParams

    Returns
    -------
    TissueMask
        `.mask` (H, W) bool tissue without pen, `.pen`, `.mpp` (= `mpp`),
        `.tissue_area_mm2`, `.pen_fraction`, `.threshold`.

    Examples
    --------
    >>> rgb = np.full((60, 60, 3), 245, np.uint8)   # glass
    >>> rgb[10:50, 10:50] = (220, 140, 190)          # a pink piece of tissue
    >>> result = tissue_mask(rgb, mpp=8.0)
    >>> int(result.mask.sum()), round(result.tissue_area_mm2, 4)
    (1600, 0.1024)
    """
    rgb = check_rgb(rgb)
    try:
        mpp = float(mpp)
    except (TypeError, ValueError):
        mpp = math.nan
    if not (math.isfinite(mpp) and mpp > 0):
        raise ValueError(f"mpp must be a positive number of µm/px, got {mpp!r}")
    height, width = rgb.shape[:2]
    factor = int(params.mask_mpp // mpp) if params.mask_mpp / mpp >= _DOWNSCALE_RATIO else 1
    work = _block_mean(rgb, factor) if factor > 1 else rgb
    work_mpp = mpp * factor
    sizes = pixel_sizes(params, work_mpp)

    r, g, b = channels(work)
    mx = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    sat = saturation_from_max_min(mx, mn)
    threshold = saturation_threshold(sat, params=params)
    foreground = sat > np.uint8(math.floor(threshold * 255))  # == sat / 255 > threshold

    if params.detect_pen:
        ink = remove_small(_ink(r, g, b, mx, mn, sat, params), sizes.min_pen_px)
        pen = dilate(ink, sizes.pen_dilation_px)
    else:
        pen = np.zeros_like(foreground)

    tissue = foreground & ~pen
    tissue = close(tissue, sizes.closing_radius_px)
    tissue = fill_small_holes(tissue, sizes.max_hole_px)
    tissue = remove_small(tissue, sizes.min_tissue_px)
    tissue &= ~pen

    if factor > 1:
        tissue = _upscale(tissue, factor, height, width)
        pen = _upscale(pen, factor, height, width)

    n_tissue = int(np.count_nonzero(tissue))
    n_either = int(np.count_nonzero(tissue | pen))
    return TissueMask(
        mask=tissue,
        pen=pen,
        mpp=float(mpp),
        tissue_area_mm2=n_tissue * (mpp / 1000.0) ** 2,
        pen_fraction=(n_either - n_tissue) / n_either if n_either else 0.0,
        threshold=threshold,
    )


def _block_mean(rgb: np.ndarray, factor: int) -> np.ndarray:
    """Mean of `factor` x `factor` blocks (edge-padded to a multiple), uint8."""
    height, width = rgb.shape[:2]
    pad_h, pad_w = -height % factor, -width % factor
    if pad_h or pad_w:
        rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    h, w = rgb.shape[0] // factor, rgb.shape[1] // factor
    blocks = rgb.reshape(h, factor, w, factor, 3).sum(axis=(1, 3), dtype=np.uint32)
    return ((blocks + factor * factor // 2) // (factor * factor)).astype(np.uint8)


def _upscale(mask: np.ndarray, factor: int, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour enlargement by `factor`, cropped to (height, width)."""
    return mask.repeat(factor, axis=0).repeat(factor, axis=1)[:height, :width]


def tissue_fraction_per_tile(mask: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Exact share of each box covered by the mask, boxes in (fractional) mask pixels.

    Each mask pixel (r, c) is the unit square [c, c+1) x [r, r+1); a box covers parts of
    pixels, weighted by the overlapping area (bilinear lookup in the summed-area table,
    which is exact for a piecewise-constant mask). Parts of a box outside the mask count
    as background.

    Parameters
    ----------
    mask : (H, W) bool ndarray
    boxes : (N, 4) float ndarray
        [x0, y0, x1, y1] in mask pixels (level-0 coordinates times mask px per level-0 px),
        x1 > x0, y1 > y0.

    Returns
    -------
    fraction : (N,) float32 ndarray
        In [0, 1].

    Examples
    --------
    >>> mask = np.array([[1, 1, 0, 0]], bool)
    >>> tissue_fraction_per_tile(mask, np.array([[0, 0, 2, 1], [1.5, 0, 3.5, 1], [0, 0, 8, 1]]))
    array([1.  , 0.25, 0.25], dtype=float32)
    """
    mask = np.asarray(mask, dtype=bool)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    if boxes.size == 0:
        return np.zeros(0, dtype=np.float32)
    x0, y0, x1, y1 = boxes.T
    area = (x1 - x0) * (y1 - y0)
    if np.any(area <= 0):
        raise ValueError("every box needs x1 > x0 and y1 > y0")
    height, width = mask.shape
    table = np.zeros((height + 1, width + 1), dtype=np.float64)
    np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1, out=table[1:, 1:])

    def integral(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x = np.clip(x, 0, width)
        y = np.clip(y, 0, height)
        ix = np.minimum(np.floor(x).astype(np.int64), max(width - 1, 0))
        iy = np.minimum(np.floor(y).astype(np.int64), max(height - 1, 0))
        fx, fy = x - ix, y - iy
        ix1, iy1 = np.minimum(ix + 1, width), np.minimum(iy + 1, height)
        return (table[iy, ix] * (1 - fx) * (1 - fy) + table[iy, ix1] * fx * (1 - fy)
                + table[iy1, ix] * (1 - fx) * fy + table[iy1, ix1] * fx * fy)

    covered = integral(x1, y1) - integral(x0, y1) - integral(x1, y0) + integral(x0, y0)
    return np.clip(covered / area, 0.0, 1.0).astype(np.float32)
