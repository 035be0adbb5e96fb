"""Benchmark of the project's pixel reader (`TileReader`, what training and scoring use).

Reads every 40x tile of the benchmark slide's tile store as RGB uint8 arrays with 2 worker
processes, three ways in the same run:
  reader      wsi_prognosis.slides.TileReader (direct JPEG decode + tile cache, else OpenSlide)
  direct      the limit: each JPEG tile under the tiles decoded exactly once (tifffile+imagecodecs),
              no cutting or copying
  openslide   openslide read_region per tile
and prints tiles/s and the reader's share of the limit. Target (issue 2): reader >= 0.8 x direct.

Usage:
  .venv/bin/python scripts/bench_read.py             # tiles the benchmark slide first if needed
  .venv/bin/python scripts/bench_read.py --tiles DIR/benchmark.h5 [--max-tiles N]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

WORK = Path("/tmp/wsi-bench")


def _reader(slide: str, grid, slide_mpp: float, coords: np.ndarray) -> int:
    from wsi_prognosis.slides import TileReader

    reader = TileReader(slide, grid, slide_mpp)
    total = 0
    for start in range(0, len(coords), 256):                 # batches, as a DataLoader would ask
        total += len(reader.read(coords[start : start + 256]))
    return total


def _openslide(slide: str, grid, slide_mpp: float, coords: np.ndarray) -> int:
    import openslide

    handle = openslide.OpenSlide(slide)
    size = grid.tile_px
    for x, y in coords:
        np.ascontiguousarray(np.asarray(handle.read_region((int(x), int(y)), grid.level, (size, size)))[..., :3])
    return len(coords)


def _direct(slide: str, grid, slide_mpp: float, coords: np.ndarray) -> int:
    """Decode each JPEG tile under `coords` once: the floor any tile reader on this file pays."""
    import tifffile

    side = int(round(grid.tile_px * grid.mpp / (slide_mpp * grid.downsample)))
    with tifffile.TiffFile(slide) as tif:
        page = next(level.keyframe for level in tif.series[0].levels
                    if abs(tif.series[0].levels[0].keyframe.imagewidth / level.keyframe.imagewidth - grid.downsample) < 1e-6)
        tw, th = page.tilewidth, page.tilelength
        across = -(-page.imagewidth // tw)
        needed = set()
        for x, y in coords // int(grid.downsample):
            for ty in range(y // th, (y + side - 1) // th + 1):
                for tx in range(x // tw, (x + side - 1) // tw + 1):
                    needed.add(ty * across + tx)
        fd = os.open(slide, os.O_RDONLY)
        for index in sorted(needed):
            data = os.pread(fd, int(page.databytecounts[index]), int(page.dataoffsets[index]))
            page.decode(data, index, jpegtables=page.jpegtables)
        os.close(fd)
    return len(coords)


def _timed(method, *args) -> tuple[int, float]:
    """(tiles, CPU seconds of this worker): CPU time is robust to a shared, loaded machine."""
    started = time.process_time()
    n = method(*args)
    return n, time.process_time() - started


def _noop() -> int:
    import numpy  # noqa: F401  (warm the worker: imports done before timing)
    import openslide  # noqa: F401
    import tifffile  # noqa: F401

    import wsi_prognosis.slides  # noqa: F401
    return os.getpid()


def measure(pool: ProcessPoolExecutor, method, slide: str, grid, slide_mpp: float, coords: np.ndarray,
            processes: int) -> tuple[float, float, int]:
    """(wall s, CPU s summed over workers, tiles)."""
    chunks = np.array_split(coords, processes)               # contiguous halves in raster order
    started = time.perf_counter()
    futures = [pool.submit(_timed, method, slide, grid, slide_mpp, chunk) for chunk in chunks]
    results = [f.result() for f in futures]
    return time.perf_counter() - started, sum(r[1] for r in results), sum(r[0] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiles", type=Path, default=WORK / "tiles" / "benchmark.h5")
    parser.add_argument("--resolution", default="40x")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--max-tiles", type=int, default=0, help="first N tiles in raster order (0: all)")
    parser.add_argument("--methods", default="direct,reader,openslide", help="comma-separated subset")
    args = parser.parse_args()
    if not args.tiles.is_file():
        subprocess.run([sys.executable, str(Path(__file__).with_name("bench_tiling.py")), "--repeats", "1"], check=True)

    from wsi_prognosis.tiling import open_tile_store

    with open_tile_store(args.tiles) as store:
        slide, slide_mpp = store.source_path, store.mpp
        grid, coords = store.grid(args.resolution), store.coords(args.resolution)
    if args.max_tiles:
        coords = coords[: args.max_tiles]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.processes, mp_context=context) as pool:
        for future in [pool.submit(_noop) for _ in range(args.processes * 2)]:
            future.result()
        rates, cpu_rates = {}, {}
        methods = {"direct": _direct, "reader": _reader, "openslide": _openslide}
        for name in args.methods.split(","):
            method = methods[name]
            seconds, cpu, n = measure(pool, method, slide, grid, slide_mpp, coords, args.processes)
            rates[name], cpu_rates[name] = n / seconds, n / cpu
            print(f"{name:<10} {n} tiles in {seconds:6.2f} s wall, {cpu:6.2f} s CPU: {rates[name]:7.0f} tiles/s "
                  f"({cpu_rates[name]:.0f} tiles per CPU-second)", flush=True)
    print(f"slide: {slide}; {args.resolution}: {len(coords)} tiles of {grid.tile_px} px, level {grid.level}; "
          f"{args.processes} processes")
    if "direct" in rates:
        for name in ("reader", "openslide"):
            if name in rates:
                print(f"{name} / direct-decode limit: {rates[name] / rates['direct']:.2f} wall, "
                      f"{cpu_rates[name] / cpu_rates['direct']:.2f} CPU" + (" (target >= 0.8)" if name == "reader" else ""))
    print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
