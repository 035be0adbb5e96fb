"""Pyramidal tiled JPEG TIFF writer (generic TIFF or Aperio-style SVS) that OpenSlide reads.

Tiles are JPEG-encoded here with imagecodecs (YCbCr, 2x2 chroma subsampling, the layout tifffile
itself writes) and handed to tifffile as bytes, so identical tiles (plain glass) are encoded
once and a large slide can be encoded by worker processes.

- flavour "tiff": one IFD per level, resolution tags in centimetres; OpenSlide's generic-TIFF
  reader reports `openslide.mpp-x/-y` from them.
- flavour "svs": an Aperio ImageDescription (`Aperio Image Library ... |AppMag = 40|MPP = 0.25`)
  on the first IFD; OpenSlide's Aperio reader reports the MPP from it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile
from PIL import Image

from wsi_prognosis.atomic import atomic_path

BACKGROUND_RGB = (241, 242, 240)  # glass, as render.GLASS_RGB


@dataclass(frozen=True)
class PyramidLayout:
    """Where the pixels go: tile size, level downsamples, JPEG quality and file flavour."""

    tile_px: int = 256
    downsamples: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    jpeg_quality: int = 85
    flavour: str = "tiff"          # "tiff" | "svs"


def level_downsamples(width_px: int, height_px: int, step: int, max_levels: int, min_px: int = 16) -> tuple[int, ...]:
    """Downsamples 1, step, step², ... while the level keeps at least `min_px` on its short side."""
    out = [1]
    while len(out) < max_levels and min(width_px, height_px) // (out[-1] * step) >= min_px:
        out.append(out[-1] * step)
    return tuple(out)


def encode_tile(tile: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of one (tile_px, tile_px, 3) uint8 tile, as tifffile would store it."""
    return bytes(imagecodecs.jpeg_encode(tile, level=quality, colorspace="RGB", outcolorspace="YCBCR",
                                         subsampling=(2, 2)))


def downsample2(rgb: np.ndarray) -> np.ndarray:
    """2x2 box average (odd edges dropped), uint8 in and out."""
    h, w = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb[:h, :w])).reduce(2))


def build_levels(rgb: np.ndarray, downsamples: Iterable[int]) -> list[np.ndarray]:
    """The image at each downsample (powers of two), by repeated 2x2 averaging."""
    levels, current, current_ds = [], rgb, 1
    for ds in downsamples:
        while current_ds < ds:
            current, current_ds = downsample2(current), current_ds * 2
        levels.append(current)
    return levels


def iter_encoded_tiles(image: np.ndarray, tile_px: int, quality: int,
                       cache: dict[bytes, bytes] | None = None) -> Iterator[bytes]:
    """Row-major encoded tiles of `image`, edge tiles padded with glass; repeats reuse bytes."""
    h, w = image.shape[:2]
    cache = {} if cache is None else cache
    pad = np.empty((tile_px, tile_px, 3), np.uint8)
    for y in range(0, h, tile_px):
        for x in range(0, w, tile_px):
            tile = image[y:y + tile_px, x:x + tile_px]
            if tile.shape[:2] != (tile_px, tile_px):
                pad[:] = BACKGROUND_RGB
                pad[: tile.shape[0], : tile.shape[1]] = tile
                tile = pad
            key = hashlib.blake2b(np.ascontiguousarray(tile).data, digest_size=16).digest()
            if key not in cache:
                cache[key] = encode_tile(tile, quality)
            yield cache[key]


def svs_description(width: int, height: int, tile_px: int, quality: int, mpp: float, level: int = 0) -> str:
    app_mag = int(round(10.0 / mpp))
    head = "Aperio Image Library v12.0.16 \r\n"
    return (f"{head}{width}x{height} [0,0 {width}x{height}] ({tile_px}x{tile_px}) JPEG/RGB Q={quality}"
            + (f"|AppMag = {app_mag}|MPP = {mpp:.4f}" if level == 0 else ""))


def write_levels(path: Path, shapes: list[tuple[int, int]], tiles_for_level: Callable[[int], Iterator[bytes]],
                 *, mpp: float, layout: PyramidLayout, bigtiff: bool = False) -> None:
    """Write a pyramid whose level `i` has `shapes[i]` = (height, width) and encoded tiles from
    `tiles_for_level(i)` (row-major). Atomic: a temp file renamed on success."""
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tif:
        base_h, base_w = shapes[0]
        for index, ((h, w), ds) in enumerate(zip(shapes, layout.downsamples)):
            level_mpp = mpp * ds
            extra: dict[str, object] = {}
            if layout.flavour == "svs":
                extra["description"] = svs_description(base_w, base_h, layout.tile_px, layout.jpeg_quality,
                                                       mpp, index)
            tif.write(
                tiles_for_level(index),
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(layout.tile_px, layout.tile_px),
                compression="jpeg",
                photometric="rgb",
                subsampling=(2, 2),
                resolution=(1e4 / level_mpp, 1e4 / level_mpp),
                resolutionunit="CENTIMETER",
                subfiletype=0 if index == 0 else 1,
                metadata=None,
                software=False,
                **extra,
            )


def write_pyramid(path: str | Path, rgb: np.ndarray, *, mpp: float, layout: PyramidLayout) -> None:
    """Write an in-memory (H, W, 3) uint8 image as a pyramidal tiled JPEG TIFF/SVS at `mpp`."""
    levels = build_levels(rgb, layout.downsamples)
    cache: dict[bytes, bytes] = {}
    write_levels(
        Path(path),
        [lvl.shape[:2] for lvl in levels],
        lambda i: iter_encoded_tiles(levels[i], layout.tile_px, layout.jpeg_quality, cache),
        mpp=mpp,
        layout=layout,
        bigtiff=rgb.nbytes > 2**31,
    )
