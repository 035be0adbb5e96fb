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

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from wsi_prognosis.errors import SlideReadError
from wsi_prognosis.slides.direct import DEFAULT_CACHE_MB, DirectLevel, open_direct_level
from wsi_prognosis.slides.plan import ReadPlan
from wsi_prognosis.slides.slide import open_openslide, read_openslide_window, read_tile


class TileGrid(Protocol):
    """The grid values a reader needs; `tiling.GridSpec` is one (slides never imports tiling)."""

    @property
    def mpp(self) -> float: ...          # target µm/px of a tile
    @property
    def tile_px(self) -> int: ...
    @property
    def level(self) -> int: ...          # pyramid level read
    @property
    def downsample(self) -> float: ...   # that level's downsample


class TileReader:
    """Read square tiles of one grid (e.g. a `tiling.GridSpec`) of one slide as RGB uint8 arrays.

    Picklable: the slide is opened lazily, once per process (DataLoader workers, pools).
    `direct=False` forces OpenSlide (for comparisons).
    """

    def __init__(
        self, slide_path: str | Path, grid: TileGrid, slide_mpp: float, *,
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

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_pid=None, _openslide=None, _direct=None)
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
        return open_direct_level(self.slide_path, self._openslide, self.plan.level, self.cache_mb)

    def _openslide_window(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        return read_openslide_window(self._openslide, self.slide_path, level, x, y, w, h)

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
        downsample = self.plan.downsample
        exact = self._direct is not None and not self.plan.resamples and downsample == int(downsample)
        for i, (x, y) in enumerate(coords.tolist()):
            if exact and x % downsample == 0 and y % downsample == 0:
                # fast path: level pixels are the tile, decoded straight into the batch array
                try:
                    self._direct.window(int(x // downsample), int(y // downsample), size, size, out=out[i])
                except Exception as exc:
                    raise SlideReadError(f"{self.slide_path}: JPEG tile cannot be decoded ({exc}).") from exc
            else:
                out[i] = read_tile(self._window, self.plan, x, y, size)
        return out

    @property
    def jpeg_tiles_decoded(self) -> int:
        return self._direct.decoded if self._direct is not None else 0

    def __enter__(self) -> "TileReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
        if self._openslide is not None:
            self._openslide.close()
        self._pid = self._openslide = self._direct = None
