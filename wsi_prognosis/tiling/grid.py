"""Aligned multi-resolution tile grids: pure geometry on numpy arrays (no slide, no file).

Every grid lives on one lattice in microns anchored at the slide's top-left corner. The
coarsest resolution (10x by default, 224 µm tiles) is the *base*; every finer resolution must
divide the base tile an integer number of times (40x: 56 µm tiles, 4 x 4 per 10x tile), so a
fine tile lies exactly inside one base tile, its *parent*. Positions are counted in units of
the finest tile (`n * fine_um`) and converted to level-0 pixels in one function, so a parent
and its first child share the very same integer coordinate.

Only base tiles that lie wholly inside the slide are considered; fine tiles are the children
of *kept* base tiles that pass the tissue threshold themselves (so `parent` always points at a
stored base tile). Tissue fractions are area-weighted averages of the tissue mask over each
tile's square (partial mask pixels count by their overlap).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

LATTICE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class GridSpec:
    """One resolution of one slide's grid."""

    name: str                  # "10x" | "40x"
    mpp: float                 # target µm/px of a tile
    tile_px: int
    level: int = 0             # pyramid level read
    downsample: float = 1.0    # that level's downsample

    @property
    def tile_um(self) -> float:
        return self.mpp * self.tile_px

    def level0_tile_px(self, slide_mpp: float) -> float:
        """Side of one tile in level-0 pixels (may be fractional)."""
        return self.tile_um / slide_mpp


@dataclass(frozen=True)
class GridResult:
    """Kept tiles of one resolution."""

    coords: np.ndarray           # (N, 2) int64 level-0 x, y of the top-left corners
    tissue_fraction: np.ndarray  # (N,) float32
    parent: np.ndarray | None    # (N,) int64 index into the base grid, None for the base


def lattice_to_level0(n: np.ndarray, unit_um: float, slide_mpp: float) -> np.ndarray:
    """Level-0 pixel coordinate of lattice position `n` (in units of `unit_um`): the one conversion."""
    return np.rint(np.asarray(n, dtype=np.float64) * unit_um / slide_mpp).astype(np.int64)


def subdivision(base_um: float, fine_um: float) -> int:
    """How many fine tiles fit along one base tile; `ValueError` unless it is an integer >= 1."""
    ratio = base_um / fine_um
    k = int(round(ratio))
    if k < 1 or abs(ratio - k) > LATTICE_TOLERANCE * max(1.0, ratio):
        raise ValueError(
            f"a {fine_um:g} µm tile does not subdivide a {base_um:g} µm tile exactly (ratio {ratio:g}); "
            "choose MPPs and tile sizes whose tile_um divide each other"
        )
    return k


def summed_area_table(mask: np.ndarray) -> np.ndarray:
    """(H+1, W+1) cumulative sums of a 0/1 `mask` (int32, or int64 for huge masks), zero first row/column.

    Integer sums in place: several times faster than float cumulative sums, and exact.
    """
    dtype = np.int32 if mask.size < 2**31 else np.int64
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=dtype)
    table[1:, 1:] = mask
    np.cumsum(table, axis=0, out=table)
    np.cumsum(table, axis=1, out=table)
    return table


def _integral(table: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mask area in [0, x) x [0, y) (mask-pixel units): bilinear interpolation of the table is exact."""
    h, w = table.shape[0] - 1, table.shape[1] - 1
    x = np.clip(x, 0.0, w)
    y = np.clip(y, 0.0, h)
    ix = np.minimum(np.floor(x).astype(np.int64), max(w - 1, 0))
    iy = np.minimum(np.floor(y).astype(np.int64), max(h - 1, 0))
    fx, fy = x - ix, y - iy
    s00 = table[iy, ix].astype(np.float64)
    s01 = table[iy, ix + 1].astype(np.float64)
    s10 = table[iy + 1, ix].astype(np.float64)
    s11 = table[iy + 1, ix + 1].astype(np.float64)
    return s00 + fx * (s01 - s00) + fy * (s10 - s00) + fx * fy * (s11 - s01 - s10 + s00)


def tissue_fractions(
    table: np.ndarray, coords: np.ndarray, tile_level0_px: float, slide_mpp: float, mask_mpp: float
) -> np.ndarray:
    """Area-weighted tissue fraction of square tiles at level-0 `coords` from a summed-area table."""
    if len(coords) == 0:
        return np.zeros(0, dtype=np.float32)
    to_mask = slide_mpp / mask_mpp
    x0 = coords[:, 0] * to_mask
    y0 = coords[:, 1] * to_mask
    side = tile_level0_px * to_mask
    area = (
        _integral(table, x0 + side, y0 + side)
        - _integral(table, x0, y0 + side)
        - _integral(table, x0 + side, y0)
        + _integral(table, x0, y0)
    )
    return np.clip(area / (side * side), 0.0, 1.0).astype(np.float32)


def build_grids(
    dimensions: tuple[int, int],
    slide_mpp: float,
    tile_um: Mapping[str, float],
    mask: np.ndarray,
    mask_mpp: float,
    min_tissue_fraction: float,
) -> dict[str, GridResult]:
    """Kept tiles per resolution for a slide of `dimensions` (w, h) level-0 px at `slide_mpp`.

    `tile_um` maps resolution name -> tile side in µm; the largest is the base. `mask` is a
    (H, W) bool/0-1 array at `mask_mpp` µm/px anchored at the slide's top-left corner.
    Raises `ValueError` when a finer tile does not subdivide the base tile.
    """
    if not tile_um:
        return {}
    base_name = max(tile_um, key=lambda name: tile_um[name])
    base_um = tile_um[base_name]
    per_base = {name: subdivision(base_um, um) for name, um in tile_um.items()}
    unit_um = base_um / max(per_base.values())  # == finest_um up to rounding; exact lattice unit
    width0, height0 = dimensions
    n_x = int(np.floor(width0 * slide_mpp / base_um + 1e-9))
    n_y = int(np.floor(height0 * slide_mpp / base_um + 1e-9))
    table = summed_area_table(np.asarray(mask))
    units_per_base = max(per_base.values())

    # base grid: raster order (row by row)
    rows, cols = np.mgrid[0:n_y, 0:n_x]
    base_nx = cols.ravel() * units_per_base
    base_ny = rows.ravel() * units_per_base
    base_coords = np.stack([lattice_to_level0(base_nx, unit_um, slide_mpp),
                            lattice_to_level0(base_ny, unit_um, slide_mpp)], axis=1)
    base_fraction = tissue_fractions(table, base_coords, base_um / slide_mpp, slide_mpp, mask_mpp)
    keep = base_fraction >= min_tissue_fraction
    results = {base_name: GridResult(base_coords[keep], base_fraction[keep], None)}
    kept_nx, kept_ny = base_nx[keep], base_ny[keep]

    for name, k in per_base.items():
        if name == base_name:
            continue
        step = units_per_base // k
        sub_y, sub_x = np.mgrid[0:k, 0:k]
        child_nx = (kept_nx[:, None] + sub_x.ravel()[None, :] * step).ravel()
        child_ny = (kept_ny[:, None] + sub_y.ravel()[None, :] * step).ravel()
        parent = np.repeat(np.arange(len(kept_nx), dtype=np.int64), k * k)
        order = np.lexsort((child_nx, child_ny))  # raster order: by row, then column
        child_nx, child_ny, parent = child_nx[order], child_ny[order], parent[order]
        coords = np.stack([lattice_to_level0(child_nx, unit_um, slide_mpp),
                           lattice_to_level0(child_ny, unit_um, slide_mpp)], axis=1)
        fraction = tissue_fractions(table, coords, tile_um[name] / slide_mpp, slide_mpp, mask_mpp)
        keep_child = fraction >= min_tissue_fraction
        results[name] = GridResult(coords[keep_child], fraction[keep_child], parent[keep_child])
    return results
