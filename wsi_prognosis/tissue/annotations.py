"""Tumour annotations from QuPath GeoJSON exports, rasterised onto a mask grid.

DoMore scores the tumour area, so an annotation restricts tiling to the annotated regions.
QuPath writes polygons in level-0 pixel coordinates (x right, y down) as a FeatureCollection,
a single Feature, a bare geometry or a plain list of Features, depending on version and
export menu; all are read here.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from wsi_prognosis.errors import AnnotationError

__all__ = ["Polygon", "read_qupath_geojson", "annotation_mask", "check_polygons_inside"]

log = logging.getLogger(__name__)

# Geometries without area: skipped with a warning (QuPath exports points and lines too).
_NO_AREA = {"Point", "MultiPoint", "LineString", "MultiLineString"}
# QuPath object types that are not regions (cell and tile detections can be millions).
_NOT_REGIONS = {"detection", "cell", "tile"}


class Polygon(NamedTuple):
    """One annotated region in level-0 pixels.

    exterior : (K, 2) float64 ndarray of x, y vertices (K >= 3)
    holes : tuple of (M, 2) float64 ndarrays, regions cut out of the exterior
    """

    exterior: np.ndarray
    holes: tuple[np.ndarray, ...] = ()


def read_qupath_geojson(path: str | os.PathLike[str], *,
                        classes: Collection[str] | None = None) -> list[Polygon]:
    """Read the polygons of a QuPath GeoJSON export.

    Parameters
    ----------
    path : path-like
        A `.geojson`/`.json` file: FeatureCollection, Feature, bare geometry or a list of
        Features. Polygon, MultiPolygon and GeometryCollection are read; points and lines
        are skipped with a warning; features whose `properties.objectType` is a detection,
        cell or tile are skipped (only annotations are regions).
    classes : collection of str, optional
        Keep only features whose QuPath classification name is one of these (e.g.
        ``{"Tumor"}``). Default: all features.

    Returns
    -------
    polygons : list of Polygon
        Exterior (K, 2) and holes, float64 level-0 x, y.

    Raises
    ------
    AnnotationError
        Naming the file: it is missing or not JSON, has an unsupported or malformed
        geometry, or holds no polygon (after the `classes` filter).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AnnotationError(
            f"{path}: cannot read the annotation file ({exc.strerror or exc}); "
            "check the manifest's annotation column"
        ) from exc
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnnotationError(
            f"{path}: not valid JSON ({exc}); export the annotations from QuPath as GeoJSON"
        ) from exc

    polygons: list[Polygon] = []
    skipped: dict[str, int] = {}
    try:
        for geometry in _geometries(doc, classes, skipped):
            polygons.extend(_polygons_of(geometry, skipped))
    except _BadGeometry as exc:
        raise AnnotationError(f"{path}: {exc}; export the annotations from QuPath as GeoJSON") from None
    if skipped:
        log.warning("%s: skipped %s", path, ", ".join(f"{n} {k}" for k, n in sorted(skipped.items())))
    if not polygons:
        what = f" of class {sorted(classes)}" if classes is not None else ""
        found = f" (found: {', '.join(sorted(skipped))})" if skipped else ""
        raise AnnotationError(
            f"{path}: no polygon annotation{what}{found}; draw the tumour area as an area "
            "annotation (polygon, brush, rectangle) and export it as GeoJSON"
        )
    return polygons


class _BadGeometry(ValueError):
    """A GeoJSON object that is not what it claims to be (message without the file)."""


def _geometries(doc: Any, classes: Collection[str] | None, skipped: dict[str, int]) -> Iterable[Any]:
    """Yield the geometries of a FeatureCollection, Feature, list of Features or geometry."""
    if isinstance(doc, list):
        for item in doc:
            yield from _geometries(item, classes, skipped)
        return
    if not isinstance(doc, dict) or "type" not in doc:
        raise _BadGeometry(f"expected a GeoJSON object with a 'type', got {_short(doc)}")
    kind = doc["type"]
    if kind == "FeatureCollection":
        features = doc.get("features")
        if not isinstance(features, list):
            raise _BadGeometry("FeatureCollection without a 'features' list")
        for feature in features:
            yield from _geometries(feature, classes, skipped)
    elif kind == "Feature":
        props = doc.get("properties") or {}
        if not isinstance(props, dict):
            props = {}
        if str(props.get("objectType", "annotation")).lower() in _NOT_REGIONS:
            skipped[f"{props['objectType']} objects"] = skipped.get(f"{props['objectType']} objects", 0) + 1
            return
        if classes is not None and _class_name(props) not in classes:
            skipped["features of other classes"] = skipped.get("features of other classes", 0) + 1
            return
        geometry = doc.get("geometry")
        if geometry is None:
            skipped["features without geometry"] = skipped.get("features without geometry", 0) + 1
            return
        yield geometry
    else:
        yield doc


def _class_name(props: dict[str, Any]) -> str | None:
    """QuPath's classification name: {"classification": {"name": ...}} or a plain string."""
    cls = props.get("classification")
    if isinstance(cls, dict):
        return cls.get("name")
    return cls if isinstance(cls, str) else None


def _polygons_of(geometry: Any, skipped: dict[str, int]) -> list[Polygon]:
    if not isinstance(geometry, dict) or "type" not in geometry:
        raise _BadGeometry(f"expected a geometry object, got {_short(geometry)}")
    kind = geometry["type"]
    if kind == "Polygon":
        return [_polygon(geometry.get("coordinates"))]
    if kind == "MultiPolygon":
        coords = geometry.get("coordinates")
        if not isinstance(coords, list):
            raise _BadGeometry("MultiPolygon without a coordinates list")
        return [_polygon(part) for part in coords]
    if kind == "GeometryCollection":
        parts = geometry.get("geometries")
        if not isinstance(parts, list):
            raise _BadGeometry("GeometryCollection without a 'geometries' list")
        return [p for part in parts for p in _polygons_of(part, skipped)]
    if kind in _NO_AREA:
        skipped[f"{kind} geometries"] = skipped.get(f"{kind} geometries", 0) + 1
        return []
    raise _BadGeometry(
        f"unsupported geometry type {kind!r} (supported: Polygon, MultiPolygon, GeometryCollection)"
    )


def _polygon(rings: Any) -> Polygon:
    if not isinstance(rings, list) or not rings:
        raise _BadGeometry(f"a Polygon needs a list of rings, got {_short(rings)}")
    arrays = [_ring(ring) for ring in rings]
    return Polygon(exterior=arrays[0], holes=tuple(arrays[1:]))


def _ring(ring: Any) -> np.ndarray:
    try:
        xy = np.asarray(ring, dtype=np.float64)
    except (TypeError, ValueError):
        raise _BadGeometry(f"a polygon ring must be a list of [x, y] numbers, got {_short(ring)}") from None
    if xy.ndim != 2 or xy.shape[1] < 2 or len(xy) < 3 or not np.isfinite(xy[:, :2]).all():
        raise _BadGeometry(f"a polygon ring needs >= 3 finite [x, y] points, got {_short(ring)}")
    return np.ascontiguousarray(xy[:, :2])


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value) if not isinstance(value, np.ndarray) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def annotation_mask(polygons: Sequence[Polygon], *, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Rasterise polygons onto a mask grid.

    Parameters
    ----------
    polygons : sequence of Polygon
        Level-0 pixel coordinates (from `read_qupath_geojson`).
    shape : (H, W)
        Shape of the output mask.
    scale : float
        Mask pixels per level-0 pixel (e.g. slide_mpp / mask_mpp).

    Returns
    -------
    mask : (H, W) bool ndarray
        True where a mask pixel's centre lies inside a polygon's exterior and outside its
        holes (a centre on an edge counts as inside, as in `skimage.draw.polygon`); the
        union over polygons. Mask pixel (r, c) covers level-0
        [c / scale, (c + 1) / scale) x [r / scale, (r + 1) / scale).

    Examples
    --------
    >>> square = Polygon(np.array([[0, 0], [40, 0], [40, 40], [0, 40]], float))
    >>> annotation_mask([square], shape=(8, 8), scale=0.1).sum()   # 4 x 4 mask pixels
    np.int64(16)
    """
    if not (scale > 0):
        raise ValueError(f"scale must be positive mask px per level-0 px, got {scale!r}")
    height, width = shape
    out = np.zeros((height, width), dtype=bool)
    for poly in polygons:
        region = _fill(poly.exterior, shape, scale)
        if region is None:
            continue
        (r, c) = region
        if not poly.holes:
            out[r, c] = True
            continue
        # Holes cut only their own polygon: draw it alone, then merge.
        own = np.zeros_like(out)
        own[r, c] = True
        for hole in poly.holes:
            cut = _fill(hole, shape, scale)
            if cut is not None:
                own[cut] = False
        out |= own
    return out


def _fill(xy: np.ndarray, shape: tuple[int, int], scale: float) -> tuple[np.ndarray, np.ndarray] | None:
    # Pixel (r, c) is inside when its centre (c + 0.5, r + 0.5) in mask units is; draw.polygon
    # tests integer points, so shift the vertices by half a pixel.
    from skimage.draw import polygon as draw_polygon

    rows = xy[:, 1] * scale - 0.5
    cols = xy[:, 0] * scale - 0.5
    rr, cc = draw_polygon(rows, cols, shape=shape)
    return (rr, cc) if rr.size else None


def check_polygons_inside(polygons: Sequence[Polygon], width: int, height: int,
                          path: str | os.PathLike[str]) -> None:
    """Refuse annotations that lie entirely outside the slide.

    A polygon that overlaps the slide only partly is fine (drawn past the edge); one that
    misses it altogether means the file belongs to another slide or is not in level-0
    pixels (e.g. exported in µm or from a downsampled image).

    Parameters
    ----------
    polygons : sequence of Polygon
    width, height : int
        Slide level-0 dimensions, px.
    path : path-like
        The annotation file, for the message.

    Raises
    ------
    AnnotationError
        When any polygon's bounding box does not intersect [0, width] x [0, height].
    """
    outside = []
    for i, poly in enumerate(polygons):
        x0, y0 = poly.exterior.min(axis=0)
        x1, y1 = poly.exterior.max(axis=0)
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            outside.append((i, x0, y0, x1, y1))
    if outside:
        i, x0, y0, x1, y1 = outside[0]
        raise AnnotationError(
            f"{path}: {len(outside)} of {len(polygons)} polygon(s) lie entirely outside the "
            f"slide ({width} x {height} px level 0), e.g. polygon {i} spans x {x0:.0f}-{x1:.0f}, "
            f"y {y0:.0f}-{y1:.0f}; check that the file belongs to this slide and that QuPath "
            "exported level-0 pixel coordinates"
        )
