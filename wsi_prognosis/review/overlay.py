"""What the viewer draws over a slide, built from score's outputs (never from the slide's label).

- `tile_scores`: per resolution, the tiles' level-0 corners, side and scores (the ensemble of
  the resolution's members and each member), from `slides/<id>.npz` (tile logits -> sigmoid,
  exactly as `scoring.exports` paints the heatmap PNG).
- `tissue_outline`: the tissue mask of the slide's tile store as polygons in level-0 pixels.
- `thumbnail`: score's heatmap PNG, reduced for the batch table.
- `colormap_lut`: the heatmap colour map (`scoring.exports.COLORMAP`) as 256 RGB triples, so
  the browser paints the same colours as the PNGs.
"""

from __future__ import annotations

import io
from functools import lru_cache
from typing import Any

import numpy as np

from wsi_prognosis.review.entry import SlideEntry


@lru_cache(maxsize=1)
def colormap_lut() -> list[list[int]]:
    from matplotlib import colormaps

    from wsi_prognosis.scoring.exports import COLORMAP

    return (colormaps[COLORMAP](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(int).tolist()


def _tile_sides(entry: SlideEntry) -> dict[str, float]:
    """Level-0 side of each resolution's tile, from the tile store's grids (empty if unreadable)."""
    from wsi_prognosis.errors import WsiPrognosisError

    if entry.tile_store is None or not entry.tile_store.is_file():
        return {}
    try:
        from wsi_prognosis.tiling import open_tile_store

        with open_tile_store(entry.tile_store) as store:
            return {res: store.grid(res).tile_um / store.mpp for res in store.resolutions}
    except (WsiPrognosisError, OSError, KeyError, ValueError):
        return {}


def _side_from_coords(coords: np.ndarray) -> float | None:
    """Smallest positive step between tile corners (when the tile store is gone)."""
    steps = []
    for axis in (0, 1):
        values = np.unique(coords[:, axis])
        if len(values) > 1:
            steps.append(float(np.diff(values).min()))
    return min(steps) if steps else None


def tile_scores(entry: SlideEntry) -> dict[str, Any]:
    """`{"resolutions": {res: {"side", "x", "y", "layers": {"ensemble": [...], member: [...]}}}}`.

    Scores are tile probabilities in [0, 1] rounded to 4 decimals. Empty `resolutions` when the
    slide has no tile scores; `note` says why.
    """
    if entry.tile_scores is None:
        return {"resolutions": {}, "note": "; ".join(entry.notes) or "no tile scores"}
    try:
        with np.load(entry.tile_scores) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        return {"resolutions": {}, "note": f"tile scores unreadable ({type(exc).__name__}): no heatmap"}
    sides = _tile_sides(entry)
    out: dict[str, Any] = {}
    for key in sorted(arrays):
        if not key.startswith("coords_"):
            continue
        res = key[len("coords_"):]
        coords = np.asarray(arrays[key], dtype=np.int64).reshape(-1, 2)
        logits = np.asarray(arrays.get(f"logits_{res}", np.zeros((0, len(coords)))), dtype=np.float64)
        names = [str(n) for n in arrays.get(f"members_{res}", np.asarray([f"{res}_{i}" for i in range(len(logits))]))]
        if logits.ndim != 2 or logits.shape[1] != len(coords) or len(coords) == 0:
            continue
        probs = 1.0 / (1.0 + np.exp(-logits))
        side = sides.get(res) or _side_from_coords(coords)
        if side is None:
            continue
        layers = {"ensemble": np.round(probs.mean(axis=0), 4).tolist()}
        layers.update({name: np.round(p, 4).tolist() for name, p in zip(names, probs)})
        out[res] = {"side": round(float(side), 4), "x": coords[:, 0].tolist(), "y": coords[:, 1].tolist(),
                    "members": names, "layers": layers}
    return {"resolutions": out, "note": "" if out else "tile scores hold no tiles: no heatmap"}


def tissue_outline(entry: SlideEntry, dimensions: tuple[int, int] | None = None) -> list[Any]:
    """GeoJSON-style polygons ([[ring], ...] per piece) in level-0 pixels; [] when unknown.

    The same outline as score's GeoJSON (`scoring.exports.tissue_polygons`, the mask scaled by its
    own mpp), simplified by 1 mask pixel.
    """
    from wsi_prognosis.errors import WsiPrognosisError
    from wsi_prognosis.scoring.exports import tissue_polygons

    if entry.tile_store is None or not entry.tile_store.is_file():
        return []
    try:
        from wsi_prognosis.tiling import open_tile_store

        with open_tile_store(entry.tile_store) as store:
            mask, mask_mpp = store.tissue_mask()
            slide_mpp, dims = store.mpp, tuple(store.dimensions)
    except (WsiPrognosisError, OSError, KeyError, ValueError):
        return []
    return tissue_polygons(mask, mask_mpp, slide_mpp, dimensions or dims, tolerance_px=1.0)


def thumbnail(entry: SlideEntry, max_px: int = 200) -> bytes | None:
    """score's heatmap PNG for the slide, reduced to `max_px` on its long side, as PNG bytes."""
    if entry.heatmap is None:
        return None
    from PIL import Image

    try:
        with Image.open(entry.heatmap) as image:
            image = image.convert("RGB")
            image.thumbnail((max_px, max_px))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", optimize=False)
    except (OSError, ValueError):
        return None
    return buffer.getvalue()
