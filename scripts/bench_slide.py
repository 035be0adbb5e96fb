"""Build (once, cached) the benchmark slide of issue 2: an 80,000 x 60,000 px 40x (0.25 µm/px)
pyramidal tiled TIFF, JPEG 256-px tiles, ~38 % of its area tissue with real H&E texture.

Texture: 256-px crops (with flips and rotations) of the real colorectal H&E tiles in
tests/data/tiles. Shape: a smooth random field thresholded at its 62nd percentile on a
32-px cell lattice (level 5 = one pixel per cell). Each distinct tile is JPEG-encoded once
(libjpeg-turbo via imagecodecs) and written as is by tifffile, so building takes about a minute.

Usage: python scripts/bench_slide.py [--out /tmp/wsi-bench/benchmark-80000x60000.tiff]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PATH = Path("/tmp/wsi-bench/benchmark-80000x60000.tiff")
WIDTH, HEIGHT, MPP, TILE, CELL = 80_000, 60_000, 0.25, 256, 32
TISSUE_SHARE = 0.38
GLASS = (243, 242, 246)
QUALITY = 85


def texture_bank() -> list[np.ndarray]:
    """256 x 256 real H&E crops, 8 orientations each."""
    from PIL import Image

    bank = []
    for path in sorted((REPO / "tests" / "data" / "tiles").glob("TCGA-*.jpg")):
        image = np.asarray(Image.open(path).convert("RGB"))
        for y in (0, 256):
            for x in (0, 256):
                crop = image[y : y + 256, x : x + 256]
                for k in range(4):
                    rotated = np.rot90(crop, k)
                    bank.extend([np.ascontiguousarray(rotated), np.ascontiguousarray(rotated[:, ::-1])])
    return bank


def tissue_cells(seed: int = 0) -> np.ndarray:
    """(HEIGHT/CELL, WIDTH/CELL) bool: smooth blobs covering TISSUE_SHARE of the cells."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    rows, cols = HEIGHT // CELL, WIDTH // CELL
    noise = gaussian_filter(rng.normal(size=(rows, cols)), sigma=45)
    yy, xx = np.mgrid[0:rows, 0:cols]
    envelope = -(((xx - cols / 2) / (cols * 0.42)) ** 2 + ((yy - rows / 2) / (rows * 0.42)) ** 2)
    field = noise / noise.std() + 2.5 * envelope
    return field > np.quantile(field, 1 - TISSUE_SHARE)


def _encode(tile: np.ndarray) -> bytes:
    import imagecodecs

    return imagecodecs.jpeg8_encode(tile, level=QUALITY, colorspace="RGB", outcolorspace="YCBCR",
                                    subsampling="420")


def _level_tiles(cells: np.ndarray, level: int, bank: list[np.ndarray]):
    """JPEG bytes of every tile of `level`, raster order; distinct content encoded once."""
    scale = 2**level
    width, height = -(-WIDTH // scale), -(-HEIGHT // scale)
    cell_px = CELL / scale                    # cell side in this level's pixels (32 ... 1)
    glass = np.empty((TILE, TILE, 3), np.uint8)
    glass[:] = GLASS
    cache: dict[object, bytes] = {}
    for ty in range(-(-height // TILE)):
        for tx in range(-(-width // TILE)):
            # cells under this tile, one value per pixel (repeat) or several cells per pixel (any)
            y0, x0 = ty * TILE * scale // CELL, tx * TILE * scale // CELL
            n = max(1, int(TILE / cell_px)) if cell_px >= 1 else TILE
            block = cells[y0 : y0 + n, x0 : x0 + n]
            full = np.zeros((n, n), bool)
            full[: block.shape[0], : block.shape[1]] = block
            texture_index = (tx * 7919 + ty * 104729 + level) % len(bank)
            if not full.any():
                key: object = "glass"
            elif full.all():
                key = ("tissue", texture_index)
            else:
                key = None
            if key is not None and key in cache:
                yield cache[key]
                continue
            if key == "glass":
                tile = glass
            else:
                tile = bank[texture_index]
                if key is None:
                    pixel_mask = np.repeat(np.repeat(full, TILE // n, axis=0), TILE // n, axis=1)
                    tile = np.where(pixel_mask[..., None], tile, glass)
            encoded = _encode(np.ascontiguousarray(tile))
            if key is not None:
                cache[key] = encoded
            yield encoded


def build(path: Path = DEFAULT_PATH, seed: int = 0) -> Path:
    """Write the benchmark slide to `path` unless it is already there."""
    import tifffile

    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    bank, cells = texture_bank(), tissue_cells(seed)
    tmp = path.with_suffix(".part")
    with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for level in range(6):
            scale = 2**level
            tif.write(
                _level_tiles(cells, level, bank),
                shape=(-(-HEIGHT // scale), -(-WIDTH // scale), 3), dtype=np.uint8, tile=(TILE, TILE),
                photometric="ycbcr", subsampling=(2, 2), compression="jpeg",
                resolution=(1e4 / MPP / scale, 1e4 / MPP / scale), resolutionunit="CENTIMETER",
                subfiletype=0 if level == 0 else 1, metadata=None,
            )
    tmp.rename(path)
    print(f"built {path} ({path.stat().st_size / 2**20:.0f} MiB, tissue cells {cells.mean():.1%}) "
          f"in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH)
    args = parser.parse_args()
    print(build(args.out))


if __name__ == "__main__":
    main()
