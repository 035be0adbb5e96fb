"""Direct access to a tiled TIFF level's own JPEG tiles (tifffile + imagecodecs).

Used only where it gives OpenSlide's pixels: `open_direct_level` decodes a window both ways
and returns None on any difference (or for anything but 8-bit RGB/YCbCr JPEG tiles at an
integer downsample), so callers fall back to OpenSlide.
"""

from __future__ import annotations

import collections
import logging
import os
from pathlib import Path

import numpy as np

from wsi_prognosis.slides.resample import rgba_to_rgb_on_white

log = logging.getLogger(__name__)

JPEG = 7
DEFAULT_CACHE_MB = 128


class DirectLevel:
    """Decoded-JPEG-tile access to one pyramid level of a tiled TIFF, with an LRU tile cache."""

    def __init__(self, path: Path, page, cache_mb: float = DEFAULT_CACHE_MB) -> None:
        self.path = path
        self._page = page
        self._tables = page.jpegtables
        self._offsets = page.dataoffsets
        self._counts = page.databytecounts
        self.width, self.height = page.imagewidth, page.imagelength
        self.tile_w, self.tile_h = page.tilewidth, page.tilelength
        self.tiles_across = -(-self.width // self.tile_w)
        self._fd = os.open(path, os.O_RDONLY)
        self._tif = None  # the TiffFile that owns `page`, closed with this level
        self._cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._capacity = max(4, int(cache_mb * 2**20 // (self.tile_w * self.tile_h * 3)))
        self.decoded = 0  # JPEG tiles decoded so far (for tests and benchmarks)

    @staticmethod
    def find_page(tif, width: int, height: int):
        """The tiled 8-bit RGB JPEG page of exactly (width, height), or None."""
        for series in tif.series:
            for level in series.levels:
                page = level.keyframe
                if (
                    page.imagewidth == width and page.imagelength == height and page.is_tiled
                    and page.compression == JPEG and page.samplesperpixel == 3
                    and page.bitspersample == 8 and page.planarconfig == 1 and page.imagedepth == 1
                    and int(page.photometric) in (2, 6)  # RGB or YCbCr
                ):
                    return page
        return None

    def close(self) -> None:
        os.close(self._fd)
        self._cache.clear()
        if self._tif is not None:
            self._tif.close()

    def _tile(self, index: int) -> np.ndarray:
        cached = self._cache.get(index)
        if cached is not None:
            self._cache.move_to_end(index)
            return cached
        count = int(self._counts[index])
        if count == 0:  # a sparse TIFF's missing tile: OpenSlide shows it transparent -> white
            tile = np.full((self.tile_h, self.tile_w, 3), 255, np.uint8)
        else:
            data = os.pread(self._fd, count, int(self._offsets[index]))
            segment, _, _ = self._page.decode(data, index, jpegtables=self._tables)
            tile = segment.reshape(self.tile_h, self.tile_w, 3)
            self.decoded += 1
        self._cache[index] = tile
        if len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        return tile

    def window(self, x: int, y: int, w: int, h: int, out: np.ndarray | None = None) -> np.ndarray:
        """RGB uint8 (h, w, 3) of level pixels [x, x+w) x [y, y+h); white outside the level.

        Written into `out` when given (no extra copy for callers that fill a batch array).
        """
        if out is None:
            out = np.empty((h, w, 3), np.uint8)
        tile_w, tile_h, width, height = self.tile_w, self.tile_h, self.width, self.height
        x_end, y_end = x + w, y + h
        if x < 0 or y < 0 or x_end > width or y_end > height:
            out.fill(255)
        cx0, cx1 = max(x, 0), min(x_end, width)
        cy0, cy1 = max(y, 0), min(y_end, height)
        cache, get_tile, across = self._cache, self._tile, self.tiles_across
        top = cy0 - cy0 % tile_h
        while top < cy1:
            y0, y1 = max(cy0, top), min(cy1, top + tile_h)
            row = (top // tile_h) * across
            left = cx0 - cx0 % tile_w
            while left < cx1:
                x0, x1 = max(cx0, left), min(cx1, left + tile_w)
                index = row + left // tile_w
                tile = cache.get(index)
                if tile is None:
                    tile = get_tile(index)
                else:
                    cache.move_to_end(index)
                out[y0 - y : y1 - y, x0 - x : x1 - x] = tile[y0 - top : y1 - top, x0 - left : x1 - left]
                left += tile_w
            top += tile_h
        return out


def open_direct_level(path: Path, handle, level: int, cache_mb: float = DEFAULT_CACHE_MB) -> DirectLevel | None:
    """A verified `DirectLevel` for OpenSlide `handle`'s `level`, or None (use OpenSlide)."""
    downsample = float(handle.level_downsamples[level])
    if abs(downsample - round(downsample)) > 1e-9:
        return None  # OpenSlide would interpolate sub-pixel positions: not the same pixels
    try:
        import tifffile

        tif = tifffile.TiffFile(path)
    except Exception:  # not a TIFF, or one tifffile cannot parse: OpenSlide handles it
        return None
    width, height = handle.level_dimensions[level]
    page = DirectLevel.find_page(tif, width, height)
    if page is None:
        tif.close()
        return None
    direct = DirectLevel(Path(path), page, cache_mb)
    direct._tif = tif
    if not _same_pixels(direct, handle, level):
        log.info("%s: direct JPEG decode differs from OpenSlide; using OpenSlide", path)
        direct.close()
        return None
    return direct


def _same_pixels(direct: DirectLevel, handle, level: int) -> bool:
    """Decode a central window both ways (crossing tile borders) and compare exactly."""
    w = min(direct.width, direct.tile_w + 17)
    h = min(direct.height, direct.tile_h + 17)
    x = max(0, min(direct.width - w, direct.width // 2 - w // 2))
    y = max(0, min(direct.height - h, direct.height // 2 - h // 2))
    downsample = handle.level_downsamples[level]
    try:
        ours = direct.window(x, y, w, h)
        region = handle.read_region((round(x * downsample), round(y * downsample)), level, (w, h))
    except Exception:
        return False
    return bool(np.array_equal(ours, rgba_to_rgb_on_white(np.asarray(region))))
