"""Benchmark-size slides (e.g. 80,000 x 60,000 px) from a bank of rendered patches, in 2 processes.

Rendering 4.8 gigapixels cell by cell would take hours; this engine instead
1. renders a small bank of full-tissue patches (BLOCK_PX square) for the patient's risk with
   the same renderer as the small slides (so the morphology and its signal are the same);
2. lays the slide out at low resolution (a smooth tissue field, CELL_UM per cell, thresholded
   at the configured tissue fraction);
3. assigns every BLOCK_PX block of the slide one bank patch and one of four flips;
4. builds each pyramid tile directly from the (pre-downsampled) bank and the field upsampled to
   that tile: glass tiles are one shared encoded tile, a tissue tile that copies one region of
   one patch is encoded once per worker and reused, edge tiles are blended with glass;
5. encodes tiles with imagecodecs in worker processes while the main process writes the TIFF.
Every level is made from the same bank and field, so levels agree with each other.
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image

from wsi_prognosis.synth.render import FieldSpec, render_field, tissue_field
from wsi_prognosis.synth.slides import SlideJob, field_spec, layout_for
from wsi_prognosis.synth.writer import BACKGROUND_RGB, PyramidLayout, encode_tile, write_levels

BLOCK_PX = 1024        # bank patch size (level-0 px); one patch per block of the slide
N_PATCHES = 12
CELL_UM = 16.0         # tissue-field resolution


@dataclass
class _Plan:
    """Everything a worker needs (inherited by fork, never pickled per task)."""

    bank: list[list[np.ndarray]]    # bank[level][patch] = (BLOCK_PX / ds, BLOCK_PX / ds, 3) uint8
    assignment: np.ndarray           # (blocks_y, blocks_x) int: patch * 4 + flip
    field: np.ndarray                # (grid_h, grid_w) float32
    threshold: float
    cell_px: float                   # level-0 px per field cell
    shapes: list[tuple[int, int]]    # (height, width) per level
    layout: PyramidLayout


_PLAN: _Plan | None = None


def _interp_matrix(n_out: int, start_px: float, step_px: float, cell_px: float, n_cells: int) -> tuple[np.ndarray, int]:
    """Bilinear weights (n_out, window) from field cells to output pixels; returns (matrix, first cell)."""
    pos = (start_px + (np.arange(n_out) + 0.5) * step_px) / cell_px - 0.5   # in cell units
    pos = np.clip(pos, 0, n_cells - 1)
    lo = np.floor(pos).astype(int)
    first = int(lo.min())
    hi = np.minimum(lo + 1, n_cells - 1)
    window = int(hi.max()) - first + 1
    frac = (pos - lo).astype(np.float32)
    matrix = np.zeros((n_out, window), np.float32)
    matrix[np.arange(n_out), lo - first] += 1 - frac
    matrix[np.arange(n_out), hi - first] += frac
    return matrix, first


def _flip(patch: np.ndarray, flip: int) -> np.ndarray:
    if flip & 1:
        patch = patch[:, ::-1]
    if flip & 2:
        patch = patch[::-1]
    return patch


def _tile_pixels(plan: _Plan, level: int, ty: int, tx: int) -> tuple[np.ndarray | None, tuple[int, ...] | None]:
    """Pixels of tile (ty, tx) of `level` (None for plain glass) and, for a tile that is a pure
    copy of one bank patch region, a key that identifies its content (so its JPEG can be reused)."""
    tile_px = plan.layout.tile_px
    ds = plan.layout.downsamples[level]
    x0, y0 = tx * tile_px * ds, ty * tile_px * ds          # level-0 origin
    span = tile_px * ds                                       # level-0 extent
    grid_h, grid_w = plan.field.shape
    # the field cells that bilinear interpolation over this tile can touch
    cy0 = max(int(y0 / plan.cell_px - 0.5), 0)
    cx0 = max(int(x0 / plan.cell_px - 0.5), 0)
    cy1 = min(int((y0 + span) / plan.cell_px + 0.5) + 1, grid_h - 1)
    cx1 = min(int((x0 + span) / plan.cell_px + 0.5) + 1, grid_w - 1)
    window = plan.field[cy0:cy1 + 1, cx0:cx1 + 1]
    if window.max() <= plan.threshold:
        return None, None
    key = None
    block_level = BLOCK_PX // ds                              # a block's size at this level
    ly0, lx0 = y0 // ds, x0 // ds                             # tile origin in level pixels
    by0, bx0 = y0 // BLOCK_PX, x0 // BLOCK_PX
    by1, bx1 = (y0 + span - 1) // BLOCK_PX, (x0 + span - 1) // BLOCK_PX
    n_by, n_bx = plan.assignment.shape
    if by0 == by1 and bx0 == bx1 and by0 < n_by and bx0 < n_bx:   # inside one block: a view
        code = int(plan.assignment[by0, bx0])
        patch = _flip(plan.bank[level][code // 4], code % 4)
        oy, ox = ly0 - by0 * block_level, lx0 - bx0 * block_level
        tissue = patch[oy:oy + tile_px, ox:ox + tile_px]
        key = (level, code, oy, ox)
    else:
        tissue = np.empty((tile_px, tile_px, 3), np.uint8)
        tissue[:] = BACKGROUND_RGB
        for by in range(by0, min(by1, n_by - 1) + 1):
            for bx in range(bx0, min(bx1, n_bx - 1) + 1):
                code = int(plan.assignment[by, bx])
                patch = _flip(plan.bank[level][code // 4], code % 4)
                oy0, ox0 = max(by * block_level, ly0), max(bx * block_level, lx0)
                oy1 = min((by + 1) * block_level, ly0 + tile_px)
                ox1 = min((bx + 1) * block_level, lx0 + tile_px)
                tissue[oy0 - ly0:oy1 - ly0, ox0 - lx0:ox1 - lx0] = \
                    patch[oy0 - by * block_level:oy1 - by * block_level, ox0 - bx * block_level:ox1 - bx * block_level]
    if window.min() > plan.threshold:
        return tissue, key
    ay, fy = _interp_matrix(tile_px, y0, ds, plan.cell_px, grid_h)
    ax, fx = _interp_matrix(tile_px, x0, ds, plan.cell_px, grid_w)
    # the field at this tile's pixels; einsum, not BLAS matmul: on tiny matrices a BLAS thread
    # pool costs ~50x more than the arithmetic
    window = plan.field[fy:fy + ay.shape[1], fx:fx + ax.shape[1]]
    up = np.einsum("ik,lk->il", np.einsum("ij,jk->ik", ay, window), ax)
    weight = np.clip((up - plan.threshold) * (40.0 * 256) + 128.0, 0.0, 256.0).astype(np.uint16)
    if not weight.any():
        return None, None
    if weight.min() == 256:
        return tissue, key
    # integer blend with glass: (glass * (256 - w) + tissue * w) / 256
    weight = weight[..., None]
    glass = np.asarray(BACKGROUND_RGB, np.uint16) * (256 - weight)
    glass += tissue * weight
    glass >>= 8
    return glass.astype(np.uint8), None


_ENCODED: dict[tuple[int, ...], bytes] = {}   # per worker: JPEG of full-tissue tiles by content key


def _encode_row(args: tuple[int, int]) -> list[bytes | None]:
    level, ty = args
    plan = _PLAN
    assert plan is not None
    h, w = plan.shapes[level]
    n_x = -(-w // plan.layout.tile_px)
    out: list[bytes | None] = []
    for tx in range(n_x):
        pixels, key = _tile_pixels(plan, level, ty, tx)
        if pixels is None:
            out.append(None)
        elif key is not None:
            if key not in _ENCODED:
                _ENCODED[key] = encode_tile(np.ascontiguousarray(pixels), plan.layout.jpeg_quality)
            out.append(_ENCODED[key])
        else:
            out.append(encode_tile(np.ascontiguousarray(pixels), plan.layout.jpeg_quality))
    return out


def _render_patch(args: tuple[FieldSpec, tuple[int, ...]]) -> tuple[np.ndarray, dict[str, float]]:
    spec, entropy = args
    result = render_field(spec, np.random.default_rng(np.random.SeedSequence(list(entropy))))
    return result.rgb, result.stats


def render_bank(job: SlideJob, spec: FieldSpec, downsamples: tuple[int, ...], workers: int,
                n_patches: int | None = None) -> tuple[list[list[np.ndarray]], dict[str, float]]:
    """Full-tissue patches for this slide's risk, at every level's downsample."""
    n_patches = n_patches or N_PATCHES
    patch_spec = replace(spec, width_px=BLOCK_PX, height_px=BLOCK_PX, full_tissue=True, artefacts=())
    tasks = [(patch_spec, (*job.entropy, 1000 + k)) for k in range(n_patches)]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        results = pool.map(_render_patch, tasks)
    bank: list[list[np.ndarray]] = []
    for ds in downsamples:
        size = BLOCK_PX // ds
        bank.append([rgb if ds == 1 else np.asarray(Image.fromarray(rgb).reduce(ds)) for rgb, _ in results][:])
        assert all(p.shape[0] == size for p in bank[-1])
    keys = results[0][1].keys()
    stats = {k: float(np.nanmean([r[1][k] for r in results])) for k in keys}
    return bank, stats


def make_big_slide(job: SlideJob, workers: int = 2) -> dict[str, Any]:
    """Write one large slide (atomically) and return its summary row (with timings)."""
    global _PLAN
    started = time.perf_counter()
    rng = np.random.default_rng(np.random.SeedSequence(list(job.entropy)))
    spec = field_spec(job, rng)
    layout = layout_for(job, spec.width_px, spec.height_px)
    if BLOCK_PX % max(layout.downsamples) or BLOCK_PX % layout.tile_px:
        raise ValueError("bigslide: BLOCK_PX must be a multiple of every downsample and of tile_px")
    bank, stats = render_bank(job, spec, layout.downsamples, workers)
    bank_seconds = time.perf_counter() - started
    cell_px = CELL_UM / job.mpp
    grid_w = int(np.ceil(spec.width_px / cell_px))
    grid_h = int(np.ceil(spec.height_px / cell_px))
    field, threshold = tissue_field(rng, grid_w, grid_h, spec.tissue_fraction)
    blocks = (-(-spec.height_px // BLOCK_PX), -(-spec.width_px // BLOCK_PX))
    assignment = rng.integers(0, len(bank[0]) * 4, size=blocks)
    shapes = [(-(-spec.height_px // ds), -(-spec.width_px // ds)) for ds in layout.downsamples]
    _PLAN = _Plan(bank, assignment, field, threshold, cell_px, shapes, layout)
    _ENCODED.clear()
    glass = np.empty((layout.tile_px, layout.tile_px, 3), np.uint8)
    glass[:] = BACKGROUND_RGB
    glass_bytes = encode_tile(glass, layout.jpeg_quality)
    ctx = multiprocessing.get_context("fork")
    try:
        with ctx.Pool(workers) as pool:

            def tiles_for_level(level: int):  # noqa: ANN202
                rows = [(level, ty) for ty in range(-(-shapes[level][0] // layout.tile_px))]
                for row in pool.imap(_encode_row, rows, chunksize=2):
                    for encoded in row:
                        yield glass_bytes if encoded is None else encoded

            write_levels(job.path, shapes, tiles_for_level, mpp=job.mpp, layout=layout, bigtiff=True)
    finally:
        _PLAN = None
        _ENCODED.clear()
    seconds = time.perf_counter() - started
    return {
        "slide_id": job.slide_id,
        "width_px": spec.width_px,
        "height_px": spec.height_px,
        "artefacts": "",
        **{k: round(v, 6) for k, v in stats.items()},
        "tissue_fraction": round(float((field > threshold).mean()), 6),
        "seconds": round(seconds, 2),
        "bank_seconds": round(bank_seconds, 2),
    }
