"""What a pathologist looks at: a heatmap PNG and a QuPath GeoJSON per slide.

Both are built from arrays (thumbnail, tile coordinates, scores, tissue mask) so they never
touch the slide file, and so never its label or macro image. Coordinates in the GeoJSON are
level-0 pixels, as QuPath expects for an image opened at full resolution.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsi_prognosis.atomic import atomic_path, write_text_atomic

COLORMAP = "RdYlGn_r"      # green = low score (good), red = high score (poor)
HEATMAP_ALPHA = 0.55
TILE_COLORS = {"10x": [70, 130, 180], "40x": [218, 112, 214]}


@dataclass(frozen=True)
class TileScores:
    """Scores of one resolution's tiles of one slide.

    coords : (N, 2) int64 level-0 x, y top-left; tile_l0_px : side in level-0 pixels;
    score : (N,) tile probability averaged over the resolution's members;
    members : name -> (N,) tile probability of that member.
    """

    resolution: str
    coords: np.ndarray
    tile_l0_px: float
    score: np.ndarray
    members: Mapping[str, np.ndarray]


# --------------------------------------------------------------------------------------------
# tissue outline


def tissue_polygons(
    mask: np.ndarray, mask_mpp: float, slide_mpp: float, dimensions: tuple[int, int], *, min_area_px: int = 4,
    tolerance_px: float = 0.75,
) -> list[list[list[list[float]]]]:
    """Outline of a tissue mask as GeoJSON polygon coordinates in level-0 pixels.

    mask : (H, W) bool at `mask_mpp` µm/px anchored at the slide's top-left corner.
    Returns one polygon per connected piece ([exterior ring, hole rings...], rings closed),
    pieces smaller than `min_area_px` mask pixels dropped, rings simplified by `tolerance_px`.

    A piece is 8-connected (pixels touching at a corner belong together) and a hole 4-connected,
    and each ring is traced with the same rule (`find_contours(fully_connected=...)`): traced with
    the default rule, a piece joined only at a corner split into several contours of which one was
    kept, so a coarse mask (4-8 µm/px, where ragged tissue often touches at corners) lost tissue.
    """
    from scipy.ndimage import binary_fill_holes
    from skimage.measure import approximate_polygon, find_contours, label, regionprops

    scale = mask_mpp / slide_mpp
    width0, height0 = dimensions

    def ring(sub: np.ndarray, top: int, left: int, connected: str) -> list[list[float]] | None:
        contours = find_contours(np.pad(sub.astype(np.float32), 1), 0.5, fully_connected=connected)
        if not contours:
            return None
        contour = max(contours, key=len)  # one contour: `sub` is a single piece under the same connectivity
        contour = approximate_polygon(contour, tolerance=tolerance_px)
        if len(contour) < 4:
            return None
        # contour (row, col) in padded-pixel-centre units; pixel edges sit at centre +- 0.5
        ys = np.clip((contour[:, 0] - 1 + 0.5 + top) * scale, 0, height0)
        xs = np.clip((contour[:, 1] - 1 + 0.5 + left) * scale, 0, width0)
        points = [[round(float(x), 2), round(float(y), 2)] for x, y in zip(xs, ys)]
        if points[0] != points[-1]:
            points.append(points[0])
        return points

    polygons = []
    labelled = label(np.asarray(mask, dtype=bool), connectivity=2)
    for region in regionprops(labelled):
        if region.area < min_area_px:
            continue
        top, left, _, _ = region.bbox
        filled = binary_fill_holes(region.image)  # background 4-connected, as the holes below
        exterior = ring(filled, top, left, "high")
        if exterior is None:
            continue
        rings = [exterior]
        holes = label(filled & ~region.image, connectivity=1)
        for hole in regionprops(holes):
            if hole.area < min_area_px:
                continue
            h_top, h_left, h_bottom, h_right = hole.bbox
            sub = holes[h_top:h_bottom, h_left:h_right] == hole.label
            interior = ring(sub, top + h_top, left + h_left, "low")
            if interior is not None:
                rings.append(interior)
        polygons.append(rings)
    return polygons


# --------------------------------------------------------------------------------------------
# GeoJSON


def _object_id(*parts: object) -> str:
    """A UUID, as QuPath (0.4+) gives every object; derived from the slide and tile so reruns match."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "wsi-prognosis/" + "/".join(map(str, parts))))


def _square(x: float, y: float, side: float) -> list[list[list[float]]]:
    x1, y1 = round(x + side, 3), round(y + side, 3)
    return [[[float(x), float(y)], [x1, float(y)], [x1, y1], [float(x), y1], [float(x), float(y)]]]


def slide_geojson(
    slide_id: str, tiles: Sequence[TileScores], tissue: list[list[list[list[float]]]], *, slide_score: float | None = None
) -> dict[str, Any]:
    """A FeatureCollection QuPath imports (File > Import objects): the tissue outline as one
    annotation (MultiPolygon, class "Tissue"), every tile as a detection (Polygon square, class
    "<res> tile") with measurements {score, member_<name>...}."""
    features: list[dict[str, Any]] = []
    if tissue:
        features.append({
            "type": "Feature",
            "id": _object_id(slide_id, "tissue"),
            "geometry": {"type": "MultiPolygon", "coordinates": tissue},
            "properties": {
                "objectType": "annotation",
                "name": "Tissue",
                "classification": {"name": "Tissue", "color": [0, 160, 0]},
                "isLocked": True,
                **({"measurements": {"slide_score": float(slide_score)}} if slide_score is not None and not math.isnan(slide_score) else {}),
            },
        })
    for t in tiles:
        names = list(t.members)
        member_values = np.stack([np.asarray(t.members[n], dtype=float) for n in names], axis=1) if names else None
        for i, ((x, y), score) in enumerate(zip(t.coords.tolist(), np.asarray(t.score, dtype=float).tolist())):
            measurements = {"score": round(score, 6)}
            if member_values is not None:
                measurements.update({f"member_{n}": round(float(v), 6) for n, v in zip(names, member_values[i])})
            features.append({
                "type": "Feature",
                "id": _object_id(slide_id, t.resolution, i),
                "geometry": {"type": "Polygon", "coordinates": _square(x, y, t.tile_l0_px)},
                "properties": {
                    "objectType": "detection",
                    "classification": {"name": f"{t.resolution} tile", "color": TILE_COLORS.get(t.resolution, [128, 128, 128])},
                    "measurements": measurements,
                },
            })
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: str | Path, collection: Mapping[str, Any]) -> None:
    write_text_atomic(path, json.dumps(collection, separators=(",", ":")) + "\n")


# --------------------------------------------------------------------------------------------
# heatmap


def heatmap_mpp(dimensions: tuple[int, int], slide_mpp: float, max_px: int) -> float:
    """Thumbnail µm/px so that the longer side is at most `max_px` (never finer than the slide)."""
    return max(slide_mpp, max(dimensions) * slide_mpp / max(max_px, 1))


def heatmap_image(thumbnail: np.ndarray, thumb_mpp: float, slide_mpp: float, tiles: TileScores) -> np.ndarray:
    """(H, W, 3) uint8: the thumbnail with each tile painted in its score's colour."""
    from matplotlib import colormaps

    h, w = thumbnail.shape[:2]
    value = np.full((h, w), np.nan, dtype=np.float32)
    factor = slide_mpp / thumb_mpp
    side = tiles.tile_l0_px * factor
    for (x, y), s in zip(np.asarray(tiles.coords, dtype=float), np.asarray(tiles.score, dtype=float)):
        x0, y0 = int(round(x * factor)), int(round(y * factor))
        x1, y1 = max(x0 + 1, int(round(x * factor + side))), max(y0 + 1, int(round(y * factor + side)))
        value[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)] = s
    painted = ~np.isnan(value)
    colours = (colormaps[COLORMAP](np.nan_to_num(value, nan=0.0))[..., :3] * 255).astype(np.float32)
    out = thumbnail.astype(np.float32)
    out[painted] = (1 - HEATMAP_ALPHA) * out[painted] + HEATMAP_ALPHA * colours[painted]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def write_heatmap(
    path: str | Path, thumbnail: np.ndarray, thumb_mpp: float, slide_mpp: float, tiles: Sequence[TileScores],
    title: str = "",
) -> None:
    """One PNG: a panel per resolution (thumbnail + tile scores) and a 0..1 colour bar."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    panels = [heatmap_image(thumbnail, thumb_mpp, slide_mpp, t) for t in tiles] or [thumbnail]
    labels = [f"{t.resolution} tiles ({len(t.coords)})" for t in tiles] or ["no tiles"]
    h, w = thumbnail.shape[:2]
    gap, header, bar_h = 8, 18, 14
    canvas = Image.new("RGB", (len(panels) * (w + gap) + gap, h + 2 * header + bar_h + 2 * gap), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (panel, text) in enumerate(zip(panels, labels)):
        left = gap + i * (w + gap)
        canvas.paste(Image.fromarray(panel), (left, header))
        draw.text((left, 3), text, fill="black")
    bar_w = max(64, min(canvas.width - 2 * gap, 256))
    ramp = (colormaps[COLORMAP](np.linspace(0, 1, bar_w))[:, :3] * 255).astype(np.uint8)
    bar = np.repeat(ramp[None], bar_h, axis=0)
    top = header + h + gap
    canvas.paste(Image.fromarray(bar), (gap, top))
    draw.text((gap, top + bar_h + 2), "0 (good)", fill="black")
    draw.text((gap + bar_w - 48, top + bar_h + 2), "1 (poor)", fill="black")
    if title:
        draw.text((gap + bar_w + 12, top), title, fill="black")
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
