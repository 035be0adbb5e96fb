"""Per slide, after the engine: member scores (pooled tile logits, or heads on features), the ensemble
score, tile scores, heatmap and GeoJSON, and the slide's record (written last, atomically).

Runs in the finisher thread beside the engine; any error fails this slide only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wsi_prognosis.errors import WsiPrognosisError
from wsi_prognosis.scoring import records
from wsi_prognosis.scoring.aggregate import ensemble_score
from wsi_prognosis.scoring.engine import SlideLogits
from wsi_prognosis.scoring.slide_plan import SlidePlan, failed_record

log = logging.getLogger(__name__)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def _slide_outputs(plan: SlidePlan, result: SlideLogits) -> dict[str, dict[str, np.ndarray]]:
    """Per resolution, what the engine computed plus the features read from stores."""
    from wsi_prognosis.features import open_feature_store

    outputs = {res: dict(result.outputs.get(res, {})) for res in plan.coords}
    for res, stores in plan.stored.items():
        for key, path in stores.items():
            if key not in outputs[res]:
                with open_feature_store(path) as store:
                    outputs[res][key] = store.features(res)
    return outputs


def _finish_slide(plan: SlidePlan, result: SlideLogits, ensemble: Any, bundle: Any, out: Path,
                  options: Any) -> dict[str, Any]:
    """Pool (or run the heads), average, export and build the record of one slide the engine has finished."""
    from wsi_prognosis.scoring.exports import TileScores
    from wsi_prognosis.scoring.shift import slide_tile_stats

    row = plan.row
    if result.error:
        return failed_record(row, plan.key, bundle.id, result.error)
    member_scores: dict[str, float] = {}
    arrays: dict[str, np.ndarray] = {}
    tiles: list[TileScores] = []
    for res, outputs in _slide_outputs(plan, result).items():
        scored = ensemble.score(res, outputs)
        names = list(scored)
        member_scores.update({name: out.score for name, out in scored.items()})
        logits = np.stack([scored[name].tile_logits for name in names]) if names else np.zeros((0, len(plan.coords[res])))
        probs = _sigmoid(logits)
        arrays[f"coords_{res}"] = plan.coords[res]
        arrays[f"logits_{res}"] = logits.astype(np.float32)
        arrays[f"members_{res}"] = np.asarray(names)
        tiles.append(TileScores(res, plan.coords[res], plan.tile_l0_px[res], probs.mean(axis=0),
                                {n: p for n, p in zip(names, probs)}))
    ordered = {m.name: member_scores[m.name] for m in bundle.members if m.name in member_scores}
    score = ensemble_score(ordered, (bundle.aggregation or {}).get("weights"))
    records.write_tile_scores(out, row["slide_id"], arrays)
    exports, export_error = _write_exports(plan, tiles, score, out, options)
    return {
        "slide_id": row["slide_id"], "patient_id": row["patient_id"], "cohort": row["cohort"], "path": row["path"],
        "key": plan.key, "bundle_id": bundle.id, "status": "ok", "error": "", "score": score, "members": ordered,
        "n_tiles": {res: int(len(c)) for res, c in plan.coords.items()}, "mpp": plan.slide_mpp,
        "tile_store": str(plan.store_path), "exports": exports, "export_error": export_error,
        # colour / sharpness of a fixed tile subsample, for the domain-shift check (scoring.shift)
        "tile_stats": slide_tile_stats(row["path"], plan.grids, plan.coords, plan.slide_mpp),
    }


def finish_and_record(plan: SlidePlan, result: SlideLogits, ensemble: Any, bundle: Any, out: Path, options: Any) -> str:
    """`_finish_slide` + write its record; any error fails this slide only. Returns the status."""
    try:
        record = _finish_slide(plan, result, ensemble, bundle, out, options)
    except Exception as exc:  # a batch never stops at one slide; the traceback goes to the log
        log.exception("%s: finishing the slide failed", plan.row["slide_id"])
        record = failed_record(plan.row, plan.key, bundle.id, f"{plan.row['path']}: scoring failed ({type(exc).__name__}: {exc})")
    records.write_record(out, record)
    if record["status"] != "ok":
        log.warning("%s: failed: %s", plan.row["slide_id"], record["error"])
    else:  # one line per slide: workers sharing a folder are checked by these lines (each slide once)
        log.info("%s: scored (%s tiles): %.4f", plan.row["slide_id"],
                 ", ".join(f"{res} {n}" for res, n in record["n_tiles"].items()), record["score"])
    return str(record["status"])


def record_failure(plan: SlidePlan, bundle: Any, out: Path, message: str) -> str:
    log.warning("%s: failed: %s", plan.row["slide_id"], message)
    records.write_record(out, failed_record(plan.row, plan.key, bundle.id, message))
    return "failed"


def _write_exports(plan: SlidePlan, tiles: Sequence[Any], score: float, out: Path, options: Any) -> tuple[dict[str, str], str]:
    """Heatmap PNG and GeoJSON; a failure here is logged and recorded, the score still counts."""
    from wsi_prognosis.scoring import exports as ex

    slide_id = plan.row["slide_id"]
    written: dict[str, str] = {}
    try:
        if options.geojson:
            from wsi_prognosis.tiling import open_tile_store

            with open_tile_store(plan.store_path) as store:
                mask, mask_mpp = store.tissue_mask()
            tissue = ex.tissue_polygons(mask, mask_mpp, plan.slide_mpp, plan.dimensions)
            target = out / "geojson" / f"{slide_id}.geojson"
            ex.write_geojson(target, ex.slide_geojson(slide_id, tiles, tissue, slide_score=score))
            written["geojson"] = str(target.relative_to(out))
        if options.heatmap:
            from wsi_prognosis.slides import Slide

            thumb_mpp = ex.heatmap_mpp(plan.dimensions, plan.slide_mpp, options.heatmap_max_px)
            with Slide.from_path(plan.row["path"], mpp=plan.slide_mpp) as slide:
                thumbnail, actual_mpp = slide.thumbnail(thumb_mpp)
            target = out / "heatmaps" / f"{slide_id}.png"
            ex.write_heatmap(target, thumbnail, actual_mpp, plan.slide_mpp, tiles, title=f"{slide_id}  score {score:.3f}")
            written["heatmap"] = str(target.relative_to(out))
    except (WsiPrognosisError, OSError, ValueError) as exc:
        log.warning("%s: exports failed: %s", slide_id, exc)
        return written, str(exc)
    return written, ""
