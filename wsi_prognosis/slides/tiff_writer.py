"""Write pyramidal tiled JPEG TIFFs that OpenSlide opens (generic TIFF, MPP in resolution tags).

For tests and benchmarks: small slides from arrays, and large ones from a tile generator
without holding the image in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

TILE_PX = 256


def _tiles(height: int, width: int, tile_px: int,
           render: Callable[[int, int, int, int], np.ndarray]) -> Iterator[np.ndarray]:
    for y in range(0, height, tile_px):
        for x in range(0, width, tile_px):
            h, w = min(tile_px, height - y), min(tile_px, width - x)
            block = render(x, y, w, h)
            if (h, w) != (tile_px, tile_px):
                padded = np.full((tile_px, tile_px, 3), 255, np.uint8)
                padded[:h, :w] = block
                block = padded
            yield block


def write_pyramid_tiff(
    path: str | Path,
    levels: list[tuple[int, int, Callable[[int, int, int, int], np.ndarray]]],
    mpp: float,
    *,
    tile_px: int = TILE_PX,
    quality: int = 85,
    photometric: str = "rgb",           # RGB input; tifffile stores it as YCbCr JPEG
) -> Path:
    """Write `levels` [(width, height, render(x, y, w, h) -> (h, w, 3) uint8), ...] finest first.

    Level 0 carries the resolution (`mpp` µm/px as pixels per centimetre), which OpenSlide
    reports as `openslide.mpp-x/-y`.
    """
    import tifffile

    path = Path(path)
    per_cm = 1e4 / mpp
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for index, (width, height, render) in enumerate(levels):
            downsample = levels[0][0] / width
            tif.write(
                _tiles(height, width, tile_px, render),
                shape=(height, width, 3),
                dtype=np.uint8,
                tile=(tile_px, tile_px),
                photometric=photometric,
                compression="jpeg",
                compressionargs={"level": quality},
                resolution=(per_cm / downsample, per_cm / downsample),
                resolutionunit="CENTIMETER",
                subfiletype=0 if index == 0 else 1,
                metadata=None,
            )
    return path


def write_array_pyramid(path: str | Path, rgb: np.ndarray, mpp: float, *, n_levels: int = 3, **options) -> Path:
    """A pyramid (downsamples 1, 2, 4, ...) of an in-memory RGB uint8 image."""
    from PIL import Image

    images = [rgb]
    for _ in range(1, n_levels):
        prev = images[-1]
        if min(prev.shape[:2]) < 2 * TILE_PX // 4:
            break
        images.append(np.asarray(Image.fromarray(prev).reduce(2)))
    levels = [(im.shape[1], im.shape[0], (lambda im: lambda x, y, w, h: im[y:y + h, x:x + w])(im)) for im in images]
    return write_pyramid_tiff(path, levels, mpp, **options)
