"""`TileReader`: THE pixel reader of training and scoring.

Fast path: for tiled TIFF/SVS levels stored as 8-bit RGB JPEG tiles, decode the file's own
JPEG tiles (tifffile + imagecodecs) and cut tiles out of them, with an LRU cache of decoded
tiles so grid tiles read in raster order decode each JPEG tile once. It is used only where
it returns OpenSlide's pixels: on first use in a process it decodes one window both ways and
falls back to OpenSlide on any difference. Every other format reads through OpenSlide.

Both paths fetch the same integer window of level pixels and resample it with the same
function (`slides.resample`), so a reader's tiles do not depend on the path taken.
"""

from __future__ import annotations

import collections
import logging
import os
from pathlib import Path

import numpy as np

from wsi_prognosis.errors import SlideReadError
from wsi_prognosis.slides.plan import ReadPlan
from wsi_prognosis.slides.slide import open_openslide, read_tile
from wsi_prognosis.slides.resample import rgba_to_rgb_on_white
from wsi_prognosis.tiling.grid import GridSpec

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

    def window(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """RGB uint8 (h, w, 3) of level pixels [x, x+w) x [y, y+h); white outside the level."""
        out = np.empty((h, w, 3), np.uint8)
        x_end, y_end = x + w, y + h
        if x < 0 or y < 0 or x_end > self.width or y_end > self.height:
            out.fill(255)
        for ty in range(max(y, 0) // self.tile_h, (min(y_end, self.height) - 1) // self.tile_h + 1):
            top = ty * self.tile_h
            y0, y1 = max(y, top, 0), min(y_end, top + self.tile_h, self.height)
            if y0 >= y1:
                continue
            for tx in range(max(x, 0) // self.tile_w, (min(x_end, self.width) - 1) // self.tile_w + 1):
                left = tx * self.tile_w
                x0, x1 = max(x, left, 0), min(x_end, left + self.tile_w, self.width)
                if x0 >= x1:
                    continue
                tile = self._tile(ty * self.tiles_across + tx)
                out[y0 - y : y1 - y, x0 - x : x1 - x] = tile[y0 - top : y1 - top, x0 - left : x1 - left]
        return out


class TileReader:
    """Read square tiles of one grid (`GridSpec`) of one slide as RGB uint8 arrays.

    Picklable: the slide is opened lazily, once per process (DataLoader workers, pools).
    `direct=False` forces OpenSlide (for comparisons).
    """

    def __init__(
        self, slide_path: str | Path, grid: GridSpec, slide_mpp: float, *,
        cache_mb: float = DEFAULT_CACHE_MB, direct: bool = True,
    ) -> None:
        self.slide_path = Path(slide_path)
        self.grid = grid
        self.slide_mpp = float(slide_mpp)
        self.cache_mb = cache_mb
        self.direct = direct
        self.plan = ReadPlan(
            target_mpp=grid.mpp, level=grid.level, downsample=grid.downsample,
            scale=grid.mpp / (self.slide_mpp * grid.downsample),
        )
        self._pid: int | None = None
        self._openslide = None
        self._direct: DirectLevel | None = None
        self._tif = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_pid=None, _openslide=None, _direct=None, _tif=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    # -- backends ---------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        """"direct" or "openslide" (opens the slide if needed)."""
        self._ensure_open()
        return "direct" if self._direct is not None else "openslide"

    def _ensure_open(self) -> None:
        if self._pid == os.getpid():
            return
        self._openslide = open_openslide(self.slide_path)
        self._direct = self._open_direct() if self.direct else None
        self._pid = os.getpid()

    def _open_direct(self) -> DirectLevel | None:
        downsample = self.plan.downsample
        if abs(downsample - round(downsample)) > 1e-9:
            return None  # OpenSlide would interpolate sub-pixel positions: not the same pixels
        try:
            import tifffile

            tif = tifffile.TiffFile(self.slide_path)
        except Exception:  # not a TIFF (or unreadable by tifffile): OpenSlide handles it
            return None
        width, height = self._openslide.level_dimensions[self.plan.level]
        page = DirectLevel.find_page(tif, width, height)
        if page is None:
            tif.close()
            return None
        direct = DirectLevel(self.slide_path, page, self.cache_mb)
        if not self._same_pixels(direct):
            log.info("%s: direct JPEG decode differs from OpenSlide; using OpenSlide", self.slide_path)
            direct.close()
            tif.close()
            return None
        self._tif = tif
        return direct

    def _same_pixels(self, direct: DirectLevel) -> bool:
        """Decode a central window both ways (crossing tile borders) and compare exactly."""
        w = min(direct.width, direct.tile_w + 17)
        h = min(direct.height, direct.tile_h + 17)
        x = max(0, min(direct.width - w, direct.width // 2 - w // 2))
        y = max(0, min(direct.height - h, direct.height // 2 - h // 2))
        try:
            ours = direct.window(x, y, w, h)
            theirs = self._openslide_window(self.plan.level, x, y, w, h)
        except Exception:
            return False
        return bool(np.array_equal(ours, theirs))

    def _openslide_window(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        import openslide

        downsample = self._openslide.level_downsamples[level]
        try:
            region = self._openslide.read_region((round(x * downsample), round(y * downsample)), level, (w, h))
        except openslide.OpenSlideError as exc:
            raise SlideReadError(
                f"{self.slide_path}: pixels cannot be read ({exc}). Fix: the file is damaged; re-export or rescan it."
            ) from exc
        return rgba_to_rgb_on_white(np.asarray(region))

    def _window(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        if self._direct is not None:
            try:
                return self._direct.window(x, y, w, h)
            except Exception as exc:
                raise SlideReadError(f"{self.slide_path}: JPEG tile cannot be decoded ({exc}).") from exc
        return self._openslide_window(level, x, y, w, h)

    # -- reading ----------------------------------------------------------------------------
    def read(self, coords: np.ndarray) -> np.ndarray:
        """(N, tile_px, tile_px, 3) uint8 for level-0 top-left `coords` (N, 2)."""
        self._ensure_open()
        coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
        size = self.grid.tile_px
        out = np.empty((len(coords), size, size, 3), np.uint8)
        for i, (x, y) in enumerate(coords):
            out[i] = read_tile(self._window, self.plan, int(x), int(y), size)
        return out

    @property
    def jpeg_tiles_decoded(self) -> int:
        return self._direct.decoded if self._direct is not None else 0

    def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
        if self._tif is not None:
            self._tif.close()
        if self._openslide is not None:
            self._openslide.close()
        self._pid = self._openslide = self._direct = self._tif = None
