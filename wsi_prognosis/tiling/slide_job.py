"""One slide through the `tile` stage (`tile_one_slide`): the work behind each row of summary.csv.

Open the slide and resolve its MPP, plan each grid's pyramid level (a grid needing more upsampling
than allowed is *refused*: recorded in the store and the summary's warnings, the other grids are
still written), thumbnail at the mask MPP, tissue mask (pen excluded), optional annotation
restriction, aligned grids, a blur measure over a sample of base tiles, the QC thumbnail, and the
store written atomically. A store that is complete and still matches (same slide fingerprint,
configuration, manifest mpp and annotation) is reused. The batch around it is `tiling.pipeline`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from wsi_prognosis.errors import ResolutionError, TileStoreError, WsiPrognosisError
from wsi_prognosis.slides.fingerprint import slide_fingerprint
from wsi_prognosis.slides.slide import Slide
from wsi_prognosis.tiling.config import TilingConfig
from wsi_prognosis.tiling.grid import GridSpec, build_grids
from wsi_prognosis.tiling.store import SlideRecord, TileStoreWriter, open_tile_store, tile_store_path

__all__ = ["tile_one_slide", "summary_columns", "QC_DIR", "PEN_WARNING_FRACTION"]

log = logging.getLogger("wsi_prognosis.tiling.pipeline")  # the stage's lines under one logger

BLUR_WINDOW_PX = 224      # blur windows, px at tissue.BLUR_REFERENCE_MPP (the scale its threshold is set for)
PEN_WARNING_FRACTION = 0.05
QC_DIR = "qc"
QC_MAX_PX = 1600          # long side of the QC PNG, px


def summary_columns(config: TilingConfig) -> list[str]:
    counts = [f"n_tiles_{r.name}" for r in config.resolutions]
    return ["slide_id", "status", "error", "mpp", "mpp_source", *counts, "tissue_mm2", "seconds",
            "pen_fraction", "blur", "warnings"]


def _annotation_for(row: Mapping[str, Any], config: TilingConfig) -> Path | None:
    value = row.get("annotation")
    if isinstance(value, str) and value.strip():
        return Path(value)
    if config.annotations_dir is not None:
        candidate = config.annotations_dir / f"{row['slide_id']}.geojson"
        if candidate.is_file():
            return candidate
    return None


def _manifest_mpp(row: Mapping[str, Any]) -> float | None:
    value = row.get("mpp")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _slide_inputs(row: Mapping[str, Any], config: TilingConfig) -> dict[str, Any]:
    """Per-slide inputs besides the slide file that change the result (compared on rerun)."""
    annotation = _annotation_for(row, config)
    digest = None
    if annotation is not None and annotation.is_file():
        digest = hashlib.sha256(annotation.read_bytes()).hexdigest()
    return {"manifest_mpp": _manifest_mpp(row), "annotation": str(annotation) if annotation else "",
            "annotation_sha256": digest}


def _row_from_store(store, config: TilingConfig, seconds: float) -> dict[str, Any]:
    row: dict[str, Any] = {
        "slide_id": store.slide_id, "status": "ok", "error": "", "mpp": store.mpp,
        "mpp_source": store.mpp_source, "seconds": round(seconds, 3),
    }
    for spec in config.resolutions:
        row[f"n_tiles_{spec.name}"] = store.n_tiles(spec.name) if spec.name in store.resolutions else None
    qc = store.qc
    row.update(tissue_mm2=qc.get("tissue_mm2"), pen_fraction=qc.get("pen_fraction"), blur=qc.get("blur"),
               warnings="; ".join(qc.get("warnings", [])))
    return row


def _reusable(path: Path, row: Mapping[str, Any], config: TilingConfig, inputs: Mapping[str, Any]) -> bool:
    """True when `path` is a complete store for this slide, configuration and inputs."""
    if not path.is_file():
        return False
    try:
        with open_tile_store(path) as store:
            same = (store.tiling == {**config.to_dict(), "inputs": dict(inputs)}
                    and store.slide_id == str(row["slide_id"]))
            fingerprint = store.fingerprint
    except TileStoreError:
        return False
    if not same:
        return False
    try:
        return slide_fingerprint(row["path"]) == fingerprint
    except WsiPrognosisError:
        return False


def _blur(slide: Slide, coords: np.ndarray, tile_level0_px: float, n: int) -> float | None:
    """Mean Laplacian variance over up to `n` base tiles spread over the kept ones (1.0 µm/px)."""
    from wsi_prognosis.tissue import BLUR_REFERENCE_MPP as BLUR_MPP
    from wsi_prognosis.tissue import blur_score, to_gray

    if n <= 0 or len(coords) == 0:
        return None
    try:
        slide.plan_read(BLUR_MPP)
    except ResolutionError:
        return None  # a slide coarser than 1 µm/px: no comparable blur score
    window_px = max(8, min(BLUR_WINDOW_PX, int(tile_level0_px * slide.mpp / BLUR_MPP)))
    spread = np.linspace(0, len(coords) - 1, num=min(n, len(coords))).round().astype(int)
    pick = spread[np.r_[True, np.diff(spread) > 0]]  # unique (sorted); np.unique would import numpy.ma (17 ms)
    tiles = np.stack([slide.read_region(int(x), int(y), window_px, BLUR_MPP) for x, y in coords[pick]])
    return round(float(blur_score(to_gray(tiles))), 3)


def tile_one_slide(row: Mapping[str, Any], out_dir: str | Path, config: TilingConfig) -> dict[str, Any]:
    """Tile one manifest row into `out_dir/<slide_id>.h5`; return its summary row (never raises
    for a bad slide: the error becomes `status=failed` with the message) plus `action`: `tiled`,
    `reused` (the store was complete and current) or `failed`."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    slide_id = str(row["slide_id"])
    result: dict[str, Any] = {"slide_id": slide_id, "status": "failed", "error": "", "mpp": None,
                              "mpp_source": "", "tissue_mm2": None, "pen_fraction": None, "blur": None,
                              "warnings": ""}
    for spec in config.resolutions:
        result[f"n_tiles_{spec.name}"] = None
    final = tile_store_path(out_dir, slide_id)
    try:
        inputs = _slide_inputs(row, config)
        if _reusable(final, row, config, inputs):
            with open_tile_store(final) as store:
                return {**_row_from_store(store, config, time.perf_counter() - started), "action": "reused"}
        final.unlink(missing_ok=True)  # stale: another slide version, config or input
        result.update(_tile(row, final, out_dir, config, inputs))
        result["status"] = "ok"
    except WsiPrognosisError as exc:
        result["error"] = str(exc)
    except Exception as exc:  # a batch never stops at one slide; keep the traceback in the log
        log.exception("%s: unexpected error", slide_id)
        result["error"] = f"{row.get('path')}: unexpected {type(exc).__name__}: {exc}"
    result["seconds"] = round(time.perf_counter() - started, 3)
    result["action"] = "tiled" if result["status"] == "ok" else "failed"
    return result


def _tile(row: Mapping[str, Any], final: Path, out_dir: Path, config: TilingConfig,
          inputs: Mapping[str, Any]) -> dict[str, Any]:
    from wsi_prognosis.tissue import annotation_mask, check_polygons_inside, read_qupath_geojson, tissue_mask

    warnings: list[str] = []
    annotation = Path(inputs["annotation"]) if inputs["annotation"] else None
    polygons = None
    if annotation is not None:
        polygons = read_qupath_geojson(annotation)  # parse before any pixel work: fail fast
    elif config.annotations_dir is not None:
        warnings.append(f"no {row['slide_id']}.geojson in {config.annotations_dir}: whole tissue used")

    with Slide.from_path(row["path"], mpp=inputs["manifest_mpp"],
                         allow_objective_power=config.allow_objective_power) as slide:
        warnings.extend(slide.mpp_warnings)
        specs: dict[str, GridSpec] = {}
        refused: dict[str, str] = {}
        for spec in config.resolutions:
            try:
                plan = slide.plan_read(spec.mpp, config.max_upsample)
            except ResolutionError as exc:
                refused[spec.name] = str(exc)
                continue
            specs[spec.name] = GridSpec(spec.name, spec.mpp, spec.tile_px, plan.level, plan.downsample)
        if not specs:
            raise ResolutionError("; ".join(refused.values()))
        for name, why in refused.items():
            warnings.append(f"{name} refused: {why}")

        thumb, thumb_mpp = slide.thumbnail(config.tissue.mask_mpp)
        tissue = tissue_mask(thumb, mpp=thumb_mpp, params=config.tissue)
        mask = tissue.mask
        if polygons is not None:
            width, height = slide.dimensions
            check_polygons_inside(polygons, width, height, annotation)
            mask = mask & annotation_mask(polygons, shape=mask.shape, scale=slide.mpp / thumb_mpp)
        tissue_mm2 = float(np.count_nonzero(mask)) * (thumb_mpp / 1000.0) ** 2

        grids = build_grids(slide.dimensions, slide.mpp, {n: s.tile_um for n, s in specs.items()},
                            mask, thumb_mpp, config.min_tissue_fraction)
        base = max(specs.values(), key=lambda s: s.tile_um)
        base_coords = grids[base.name].coords
        # The QC PNG (zlib, GIL released) is encoded on a thread while the blur windows are read and
        # decoded (also GIL-free): the two longest steps after the mask overlap.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="qc-png") as background:
            qc_png = (background.submit(_write_qc, out_dir / QC_DIR / f"{row['slide_id']}.png", thumb, mask,
                                        tissue.pen, base_coords, base.level0_tile_px(slide.mpp), slide.mpp / thumb_mpp)
                      if config.qc_thumbnails else None)
            blur = _blur(slide, base_coords, base.level0_tile_px(slide.mpp), config.blur_tiles)
        if qc_png is not None:
            qc_png.result()  # the PNG is complete (or its error raised) before the store is written

        if tissue_mm2 == 0:
            warnings.append("no tissue found (blank slide?): zero tiles")
        elif all(len(g.coords) == 0 for g in grids.values()):
            warnings.append(f"tissue found ({tissue_mm2:.2f} mm²) but no tile reaches "
                            f"min_tissue_fraction={config.min_tissue_fraction}")
        if tissue.pen_fraction > PEN_WARNING_FRACTION:
            warnings.append(f"pen ink covers {tissue.pen_fraction:.0%} of the tissue area (excluded)")
        from wsi_prognosis.tissue import BLUR_WARNING_THRESHOLD

        if blur is not None and blur < BLUR_WARNING_THRESHOLD:
            warnings.append(f"possibly out of focus (blur score {blur:.0f} < {BLUR_WARNING_THRESHOLD:.0f})")

        qc = {"tissue_mm2": round(tissue_mm2, 4), "pen_fraction": round(float(tissue.pen_fraction), 4),
              "blur": blur, "warnings": warnings, "mask_threshold": round(float(tissue.threshold), 4)}
        record = SlideRecord(
            slide_id=str(row["slide_id"]), source_path=str(slide.path), fingerprint=slide.fingerprint,
            dimensions=slide.dimensions, mpp=slide.mpp, mpp_source=slide.mpp_source,
            tissue_params=config.tissue.to_dict(), tiling={**config.to_dict(), "inputs": dict(inputs)},
            qc=qc, refused=refused, annotation=str(annotation or ""),
        )
        TileStoreWriter.write(final, record, specs, grids, mask, thumb_mpp, base.name)
        out = {"mpp": slide.mpp, "mpp_source": slide.mpp_source, "tissue_mm2": qc["tissue_mm2"],
               "pen_fraction": qc["pen_fraction"], "blur": blur, "warnings": "; ".join(warnings)}
        for spec in config.resolutions:
            out[f"n_tiles_{spec.name}"] = len(grids[spec.name].coords) if spec.name in grids else None
        return out


def _write_qc(path: Path, thumb: np.ndarray, mask: np.ndarray, pen: np.ndarray, coords: np.ndarray,
              tile_level0_px: float, scale: float) -> None:
    """The QC thumbnail: the slide's own pixels at the mask MPP (never its label or macro image),
    reduced by an integer factor to at most QC_MAX_PX on its long side (PNG encoding of a
    2500-px thumbnail of real tissue costs more than the whole mask)."""
    from PIL import Image

    from wsi_prognosis.tissue import qc_thumbnail, save_png

    factor = -(-max(thumb.shape[:2]) // QC_MAX_PX)
    if factor > 1:
        def reduce(binary: np.ndarray) -> np.ndarray:
            return np.asarray(Image.fromarray(binary.astype(np.uint8) * 255).reduce(factor)) >= 128

        thumb = np.asarray(Image.fromarray(thumb).reduce(factor))
        mask, pen = reduce(mask), reduce(pen)
        scale /= factor
    boxes = np.concatenate([coords, coords + tile_level0_px], axis=1) * scale if len(coords) else None
    save_png(path, qc_thumbnail(thumb, mask, tile_boxes=boxes, pen=pen))
