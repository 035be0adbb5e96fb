"""Deep-zoom tiles of the scored slides: OpenSlide's `DeepZoomGenerator`, JPEG, two LRU caches.

- The server process keeps a small LRU of open slides (`SlideCache`) for the pyramid geometry:
  the DZI descriptor and the tile grid of every level, against which a URL's level, column and
  row are checked before any pixel is read (out of range -> None -> 404).
- A pool of worker processes (`TileService`, spawn start method) reads and JPEG-encodes tiles;
  each worker keeps its own LRU of open slides. Encoding is CPU work that holds the GIL in PIL
  and openslide, so processes, not threads, let two cores encode two tiles at once.
- Encoded tiles are kept in an LRU by bytes (`BytesLRU`), so panning back is free.
- Deep-zoom levels at least 2x coarser than the slide's smallest pyramid level (the first screens
  of a slide whose pyramid stops at 1/32) are cropped, with the generator's tile geometry, from
  one cached image of that level per worker (`_Overview`) instead of re-reading the level per tile.

Only the main image pyramid is ever read: never `associated_images` (label, macro, thumbnail)
and never `properties` beyond what the geometry needs.
"""

from __future__ import annotations

import asyncio
import io
import logging
import multiprocessing
import os
import threading
from collections import OrderedDict
from collections.abc import Hashable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TILE_SIZE = 254       # + 1 px overlap on each side: 256-px JPEGs inside the pyramid
OVERLAP = 1
JPEG_QUALITY = 80


@dataclass(frozen=True)
class Geometry:
    """The deep-zoom pyramid of one slide (what the DZI says, and what a tile URL may ask)."""

    dimensions: tuple[int, int]
    level_tiles: tuple[tuple[int, int], ...]   # (columns, rows) per deep-zoom level
    dzi: str

    def valid(self, level: int, col: int, row: int) -> bool:
        if not 0 <= level < len(self.level_tiles):
            return False
        cols, rows = self.level_tiles[level]
        return 0 <= col < cols and 0 <= row < rows


class BytesLRU:
    """A thread-safe LRU of bytes values bounded by their total size."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._data: OrderedDict[Hashable, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> bytes | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._size -= len(old)
            self._data[key] = value
            self._size += len(value)
            while self._size > self.max_bytes and self._data:
                _, dropped = self._data.popitem(last=False)
                self._size -= len(dropped)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._size = 0

    def __len__(self) -> int:
        return len(self._data)


class _OpenSlides:
    """LRU of (OpenSlide, DeepZoomGenerator) by path; closes what it drops. Not thread-safe by itself."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._open: OrderedDict[str, tuple[Any, Any]] = OrderedDict()

    def get(self, path: str) -> Any:
        item = self._open.get(path)
        if item is not None:
            self._open.move_to_end(path)
            return item[1]
        import openslide
        from openslide.deepzoom import DeepZoomGenerator

        handle = openslide.OpenSlide(path)
        dz = DeepZoomGenerator(handle, tile_size=TILE_SIZE, overlap=OVERLAP, limit_bounds=False)
        self._open[path] = (handle, dz)
        while len(self._open) > self.capacity:
            dropped, (old, _) = self._open.popitem(last=False)
            old.close()
            self._dropped(dropped)
        return dz

    def _dropped(self, path: str) -> None:
        """Called when `path` is closed (subclasses drop what they keep for it)."""

    def close(self) -> None:
        for handle, _ in self._open.values():
            handle.close()
        self._open.clear()


class SlideCache:
    """The server process's open slides, for geometry only (thread-safe)."""

    def __init__(self, capacity: int = 16) -> None:
        self._slides = _OpenSlides(capacity)
        self._geometry: dict[str, Geometry] = {}
        self._lock = threading.Lock()

    def geometry(self, path: Path) -> Geometry:
        key = str(path)
        with self._lock:
            cached = self._geometry.get(key)
            if cached is not None:
                return cached
            dz = self._slides.get(key)
            geometry = Geometry(dimensions=tuple(dz.level_dimensions[-1]),
                                level_tiles=tuple(tuple(t) for t in dz.level_tiles), dzi=dz.get_dzi("jpeg"))
            self._geometry[key] = geometry
            return geometry

    def cached(self, path: Path) -> Geometry | None:
        """The geometry if the slide was opened before (never opens it)."""
        return self._geometry.get(str(path))

    def close(self) -> None:
        with self._lock:
            self._slides.close()
            self._geometry.clear()


# ------------------------------------------------------------------ worker side

class _Overview:
    """Deep-zoom levels coarser than the slide's smallest pyramid level, cut from one cached image.

    DeepZoomGenerator reads a coarse tile from the smallest pyramid level and shrinks it: when the
    pyramid stops at 1/32 (2,500 px for an 80,000-px slide), each of the first screens' tiles reads
    up to the whole level again (0.05-0.3 s each, seconds on a busy machine). Here that level is
    read once per worker and slide, shrunk once per deep-zoom level, and tiles are cropped from it
    with the generator's own tile geometry (size, overlap).
    """

    MAX_PIXELS = 16_000_000   # a slide without a small level (no pyramid) keeps DeepZoomGenerator's path

    def __init__(self, handle: Any, dz: Any) -> None:
        from PIL import Image

        self.dz = dz
        smallest = handle.level_count - 1
        width, height = handle.level_dimensions[smallest]
        self.usable = width * height <= self.MAX_PIXELS
        self.width = width
        self._levels: dict[int, Any] = {}
        self._base = None
        if self.usable:
            rgba = handle.read_region((0, 0), smallest, (width, height))
            alpha = rgba.getchannel("A")
            if alpha.getextrema() == (255, 255):   # opaque everywhere (most scans): no compositing
                self._base = rgba.convert("RGB")
            else:
                background = "#" + handle.properties.get("openslide.background-color", "ffffff")
                base = Image.new("RGB", rgba.size, background)
                base.paste(rgba, mask=alpha)
                self._base = base

    def covers(self, level: int) -> bool:
        """True for deep-zoom levels at least 2x coarser than the smallest pyramid level."""
        return self.usable and self.dz.level_dimensions[level][0] * 2 <= self.width

    def tile(self, level: int, col: int, row: int) -> Any:
        from PIL import Image

        if not self._levels:
            # every covered level at once, each from the next finer one (a halving: cheap)
            image = self._base
            for z in range(len(self.dz.level_dimensions) - 1, -1, -1):
                if self.covers(z):
                    size = self.dz.level_dimensions[z]
                    if size == tuple(-(-side // 2) for side in image.size):
                        image = image.reduce(2)     # an exact halving: 2 x 2 box average, fast
                    else:
                        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
                    self._levels[z] = image
        image = self._levels[level]
        size, overlap = TILE_SIZE, OVERLAP
        cols, rows = self.dz.level_tiles[level]
        width, height = image.size
        left = col * size - (overlap if col > 0 else 0)
        top = row * size - (overlap if row > 0 else 0)
        right = min(col * size + size, width) + (overlap if col < cols - 1 else 0)
        bottom = min(row * size + size, height) + (overlap if row < rows - 1 else 0)
        return image.crop((left, top, min(right, width), min(bottom, height)))


class _WorkerSlides(_OpenSlides):
    """A worker's open slides, each with its overview for the coarse levels."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self._overviews: OrderedDict[str, _Overview] = OrderedDict()

    def _dropped(self, path: str) -> None:
        self._overviews.pop(path, None)

    def tile(self, path: str, level: int, col: int, row: int) -> Any:
        dz = self.get(path)
        overview = self._overviews.get(path)
        if overview is None:
            handle = self._open[path][0]
            smallest = handle.level_dimensions[-1]
            if dz.level_dimensions[level][0] * 2 > smallest[0]:
                return dz.get_tile(level, (col, row))   # a fine level: no overview needed yet
            overview = _Overview(handle, dz)
            self._overviews[path] = overview
            while len(self._overviews) > min(4, self.capacity):   # ~15 MB each
                self._overviews.popitem(last=False)
        self._overviews.move_to_end(path)
        if overview.covers(level):
            return overview.tile(level, col, row)
        return dz.get_tile(level, (col, row))


_WORKER_SLIDES: _WorkerSlides | None = None


def _init_worker(capacity: int) -> None:
    global _WORKER_SLIDES
    _WORKER_SLIDES = _WorkerSlides(capacity)


def _ping() -> int:
    return os.getpid()


def _prepare(path: str) -> None:
    """Open the slide and build its coarse levels in this worker before the viewer asks for tiles."""
    global _WORKER_SLIDES
    if _WORKER_SLIDES is None:
        _WORKER_SLIDES = _WorkerSlides(8)
    try:
        _WORKER_SLIDES.tile(path, 0, 0, 0)
    except Exception:  # a broken slide shows up when its tiles are asked for (404 with the reason logged)
        pass


def render_tile(path: str, level: int, col: int, row: int, quality: int = JPEG_QUALITY) -> bytes:
    """One deep-zoom tile as JPEG bytes (runs in a worker; also callable in-process)."""
    global _WORKER_SLIDES
    if _WORKER_SLIDES is None:
        _WORKER_SLIDES = _WorkerSlides(8)
    image = _WORKER_SLIDES.tile(path, level, col, row)
    if image.mode != "RGB":
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


class TileService:
    """Validated, cached, pooled deep-zoom tiles. `workers=0` renders in the calling thread (tests)."""

    def __init__(self, workers: int = 2, slide_cache: int = 16, tile_cache_mb: int = 256,
                 quality: int = JPEG_QUALITY) -> None:
        self.slides = SlideCache(slide_cache)
        self.tiles = BytesLRU(tile_cache_mb * 1024 * 1024)
        self.quality = quality
        self.workers = workers
        self._slide_capacity = slide_cache
        self._pool_lock = threading.Lock()
        self._prepared: set[str] = set()
        self._pool: ProcessPoolExecutor | None = self._new_pool() if workers > 0 else None

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(self._slide_capacity,))

    def warm_up(self) -> None:
        """Start the worker processes now, not on the first tile a pathologist asks for."""
        if self._pool is not None:
            for future in [self._pool.submit(_ping) for _ in range(self.workers)]:
                future.result()

    def prepare(self, path: Path) -> None:
        """Let every worker open `path` now (the viewer page is being sent; its tiles follow)."""
        pool = self._pool
        if pool is None or str(path) in self._prepared:
            return
        self._prepared.add(str(path))
        try:
            for _ in range(self.workers):
                pool.submit(_prepare, str(path))
        except (BrokenProcessPool, RuntimeError):
            pass   # the next tile request restarts the pool

    async def tile(self, slide_id: str, path: Path, level: int, col: int, row: int) -> bytes | None:
        """JPEG bytes, or None when (level, col, row) is outside the slide's pyramid."""
        loop = asyncio.get_running_loop()
        geometry = await loop.run_in_executor(None, self.slides.geometry, path)
        if not geometry.valid(level, col, row):
            return None
        key = (slide_id, level, col, row)
        cached = self.tiles.get(key)
        if cached is not None:
            return cached
        if self._pool is None:
            data = await loop.run_in_executor(None, render_tile, str(path), level, col, row, self.quality)
        else:
            pool = self._pool
            try:
                data = await asyncio.wrap_future(pool.submit(render_tile, str(path), level, col, row, self.quality))
            except BrokenProcessPool:
                # a worker died (e.g. a decoder crashed on a corrupt tile): start a fresh pool for the
                # next requests, and answer this one as unreadable
                self._restart(pool)
                raise
        self.tiles.put(key, data)
        return data

    def _restart(self, broken: ProcessPoolExecutor) -> None:
        with self._pool_lock:
            if self._pool is not broken:
                return   # another request restarted it already
            log.error("a deep-zoom tile worker died; starting a new worker pool")
            broken.shutdown(wait=False, cancel_futures=True)
            self._prepared.clear()
            self._pool = self._new_pool()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.slides.close()
