"""Tile statistics of the domain-shift check: stain optical densities and sharpness of a tile subsample.

`score` records them per slide (``slides/<id>.json``, key ``tile_stats``); `calibrate` averages
the tuning slides' into the bundle's reference (`shift_reference`); `shift_compare` tests a
cohort's against it. See `wsi_prognosis.scoring.shift` for the whole check.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: tiles per slide for the colour / sharpness statistics (evenly spaced over the tile list)
STATS_TILES = 32
#: a pixel counts as tissue when its mean OD over R, G, B exceeds this (about RGB 220 gray)
TISSUE_OD = 0.15


def _hed_from_rgb() -> np.ndarray:
    from skimage.color import hed_from_rgb

    return np.asarray(hed_from_rgb, dtype=np.float32)


def tile_stats(tiles: np.ndarray) -> dict[str, float]:
    """Colour and sharpness statistics of a set of tissue tiles.

    Parameters
    ----------
    tiles : (N, H, W, 3) uint8 ndarray
        RGB tiles of one resolution (N >= 1, H, W >= 3).

    Returns
    -------
    stats : dict
        ``od_h``, ``od_e``: mean haematoxylin / eosin optical density (natural-log OD,
        colour-deconvolved) over tissue pixels; ``od_mean``: mean OD over R, G, B of tissue
        pixels; ``tissue_px``: share of tissue pixels; ``sharpness``: mean variance of the
        Laplacian of the gray tiles (gray levels²; `wsi_prognosis.tissue.blur_score`);
        ``sharpness_rel``: the same per tile divided by the tile's gray variance (contrast-free:
        a denser or paler stain leaves it unchanged, blur lowers it), the one the check compares.
        The OD values are NaN when no pixel is tissue.

    Examples
    --------
    Scaling the stain (OD x 1.5) scales the stain statistics by 1.5:

    >>> rng = np.random.default_rng(0)
    >>> od = rng.uniform(0.2, 1.0, (2, 16, 16, 3)).astype(np.float32)
    >>> to_rgb = lambda o: np.clip(256 * np.exp(-o) - 1, 0, 255).round().astype(np.uint8)
    >>> a, b = tile_stats(to_rgb(od)), tile_stats(to_rgb(1.5 * od))
    >>> round(b["od_h"] / a["od_h"], 1), round(b["od_e"] / a["od_e"], 1)
    (1.5, 1.5)
    """
    from wsi_prognosis.tissue import blur_score, laplacian_variance, to_gray

    tiles = np.asarray(tiles)
    if tiles.ndim != 4 or tiles.shape[-1] != 3 or tiles.dtype != np.uint8 or len(tiles) == 0:
        raise ValueError(f"tiles must be (N, H, W, 3) uint8 with N >= 1, got {tiles.shape} {tiles.dtype}")
    od = -np.log((tiles.reshape(-1, 3).astype(np.float32) + 1.0) / 256.0)
    tissue = od.mean(axis=1) > TISSUE_OD
    if tissue.any():
        hed = od[tissue] @ _hed_from_rgb()
        od_h, od_e = float(hed[:, 0].mean()), float(hed[:, 1].mean())
        od_mean = float(od[tissue].mean())
    else:
        od_h = od_e = od_mean = math.nan
    gray = to_gray(tiles)
    lap = laplacian_variance(gray)
    contrast = gray[:, 1:-1, 1:-1].reshape(len(gray), -1).astype(np.float64).var(axis=1)
    return {"od_h": od_h, "od_e": od_e, "od_mean": od_mean, "tissue_px": float(tissue.mean()),
            "sharpness": blur_score(gray), "sharpness_rel": float((lap / np.maximum(contrast, 1.0)).mean())}


def subsample_indices(n: int, k: int = STATS_TILES) -> np.ndarray:
    """At most `k` evenly spaced indices into `n` tiles (deterministic: the same slide, the same tiles)."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def stats_resolution(grids: Mapping[str, Any]) -> str:
    """The coarsest resolution of a slide's grids (largest mpp: 10x), where colour and focus read best."""
    return max(grids, key=lambda res: float(grids[res].mpp))


def slide_tile_stats(path: str, grids: Mapping[str, Any], coords: Mapping[str, np.ndarray], slide_mpp: float,
                     n_tiles: int = STATS_TILES) -> dict[str, Any]:
    """`tile_stats` of a slide's tile subsample, with where it came from; ``{"error": ...}`` if unreadable.

    `grids` / `coords`: the slide's `GridSpec` and (N, 2) level-0 coordinates per resolution. Never
    raises: the statistics are a check, not a reason to fail a slide.
    """
    from wsi_prognosis.slides import TileReader

    try:
        res = stats_resolution(grids)
        idx = subsample_indices(len(coords[res]), n_tiles)
        if len(idx) == 0:
            return {"error": f"no {res} tiles"}
        reader = TileReader(str(path), grids[res], float(slide_mpp))
        try:
            tiles = reader.read(np.asarray(coords[res])[idx])
        finally:
            reader.close()
        stats = tile_stats(tiles)
        return {"resolution": res, "mpp": float(grids[res].mpp), "n_tiles": int(len(idx)),
                **{k: (None if isinstance(v, float) and math.isnan(v) else round(float(v), 6)) for k, v in stats.items()}}
    except Exception as exc:  # noqa: BLE001 - recorded, never fatal
        log.warning("%s: tile statistics for the shift check failed: %s", path, exc)
        return {"error": f"{type(exc).__name__}: {exc}"}


def backfill_tile_stats(out: Path, record: dict[str, Any]) -> dict[str, Any]:
    """A record of an ok slide scored before the check existed gets its `tile_stats` (rewritten in place)."""
    from wsi_prognosis.scoring import records
    from wsi_prognosis.tiling import open_tile_store

    if record.get("status") != "ok" or "tile_stats" in record or not record.get("tile_store"):
        return record
    try:
        with open_tile_store(record["tile_store"]) as store:
            res_names = [r for r in store.resolutions if r in (record.get("n_tiles") or {})] or list(store.resolutions)
            grids = {r: store.grid(r) for r in res_names}
            coords = {r: store.coords(r) for r in res_names}
            mpp = store.mpp
    except Exception as exc:  # noqa: BLE001
        stats: dict[str, Any] = {"error": f"tile store unreadable: {exc}"}
    else:
        stats = slide_tile_stats(record["path"], grids, coords, mpp)
    record = {**record, "tile_stats": stats}
    records.write_record(out, {k: v for k, v in record.items() if k != "record_version"})
    return record


__all__ = ["STATS_TILES", "TISSUE_OD", "tile_stats", "subsample_indices", "stats_resolution", "slide_tile_stats",
           "backfill_tile_stats"]
