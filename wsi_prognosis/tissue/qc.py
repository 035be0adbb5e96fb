"""QC thumbnail: what the pipeline kept, drawn on the slide's thumbnail (never label/macro)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from wsi_prognosis.atomic import atomic_path
from wsi_prognosis.tissue.color import check_rgb
from wsi_prognosis.tissue.morphology import bounding_box

__all__ = ["qc_thumbnail", "save_png", "inner_boundary", "MASK_COLOUR", "TILE_COLOUR", "PEN_COLOUR"]

MASK_COLOUR = (0, 200, 0)      # tissue outline: green, unlike any H&E colour
TILE_COLOUR = (255, 170, 0)    # kept tiles: amber box outlines
PEN_COLOUR = (255, 0, 0)       # pen: red tint over the excluded ink


def qc_thumbnail(rgb: np.ndarray, mask: np.ndarray, *, tile_boxes: np.ndarray | None = None,
                 pen: np.ndarray | None = None) -> np.ndarray:
    """Draw the tissue outline, pen and kept tiles on a thumbnail.

    Parameters
    ----------
    rgb : (H, W, 3) uint8 ndarray
        The slide's thumbnail (not its label or macro image).
    mask : (H, W) bool ndarray
        Tissue mask (after any annotation restriction); its inner boundary (mask pixels
        with a 4-neighbour outside it) is drawn in green.
    tile_boxes : (N, 4) ndarray, optional
        Kept tiles as [x0, y0, x1, y1] in thumbnail pixels (level-0 coords x thumbnail px
        per level-0 px); outlined in amber. Boxes are rounded and clipped to the image.
    pen : (H, W) bool ndarray, optional
        Pen ink, tinted red.

    Returns
    -------
    image : (H, W, 3) uint8 ndarray
        A new image; `rgb` is not modified.
    """
    rgb = check_rgb(rgb)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} differs from the thumbnail's {rgb.shape[:2]}")
    out = rgb.copy()
    if pen is not None:
        pen = np.asarray(pen, dtype=bool)
        if pen.shape != mask.shape:
            raise ValueError(f"pen shape {pen.shape} differs from the thumbnail's {mask.shape}")
        box = bounding_box(pen)
        if box is not None:
            region = out[box]
            tinted = (region.astype(np.uint16) + np.array(PEN_COLOUR, np.uint16)) // 2
            out[box] = np.where(pen[box][..., None], tinted.astype(np.uint8), region)
    if tile_boxes is not None:
        _draw_boxes(out, np.asarray(tile_boxes, dtype=np.float64).reshape(-1, 4), TILE_COLOUR)
    out[inner_boundary(mask)] = MASK_COLOUR
    return out


def inner_boundary(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask; the image border is not a boundary.

    Equal to ``skimage.segmentation.find_boundaries(mask, mode="inner")`` (tested), in a few
    shifted ANDs instead of its grey-level morphology: 10 ms instead of 300 ms on a
    2500 x 1900 thumbnail.
    """
    interior = mask.copy()
    interior[1:] &= mask[:-1]
    interior[:-1] &= mask[1:]
    interior[:, 1:] &= mask[:, :-1]
    interior[:, :-1] &= mask[:, 1:]
    return mask & ~interior


def _draw_boxes(image: np.ndarray, boxes: np.ndarray, colour: tuple[int, int, int]) -> None:
    """Outline boxes (1 px) in place, vectorised over boxes."""
    height, width = image.shape[:2]
    if boxes.size == 0:
        return
    b = np.rint(boxes).astype(np.int64)
    x0 = np.clip(b[:, 0], 0, width - 1)
    y0 = np.clip(b[:, 1], 0, height - 1)
    x1 = np.clip(b[:, 2] - 1, 0, width - 1)   # last pixel inside the box
    y1 = np.clip(b[:, 3] - 1, 0, height - 1)
    keep = (b[:, 2] > 0) & (b[:, 3] > 0) & (b[:, 0] < width) & (b[:, 1] < height)
    x0, y0, x1, y1 = x0[keep], y0[keep], x1[keep], y1[keep]
    if x0.size == 0:
        return
    edge = np.zeros((height, width), dtype=bool)
    for a, b_, fixed, horizontal in ((x0, x1, y0, True), (x0, x1, y1, True),
                                     (y0, y1, x0, False), (y0, y1, x1, False)):
        lengths = b_ - a + 1
        starts = np.repeat(a, lengths)
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        along = starts + offsets
        across = np.repeat(fixed, lengths)
        if horizontal:
            edge[across, along] = True
        else:
            edge[along, across] = True
    image[edge] = colour


def save_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write an (H, W, 3) or (H, W) uint8 image as PNG, atomically (no half-written file)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W[, 3]) uint8, got {image.shape} {image.dtype}")
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG", compress_level=1)  # 2x faster than 6, 4 % larger
