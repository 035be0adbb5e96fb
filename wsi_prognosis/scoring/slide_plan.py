"""Per slide, before the engine: tile what has no store, and check a store can feed every member.

`plan_slide` opens the slide's tile store, checks the slide is unchanged and each member's grid
(tile px, µm/px) is there with tiles, and finds feature stores that can stand in for embedding
(checked against the member's encoder, weights, stain target and the tile store). Anything that
cannot be scored raises a `WsiPrognosisError` with the fix; the batch records it and goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

MPP_TOLERANCE = 0.02   # relative: a store's grid mpp must match the member's within 2 %


@dataclass
class SlidePlan:
    row: dict[str, Any]
    key: str
    store_path: Path
    slide_mpp: float
    dimensions: tuple[int, int]
    tile_l0_px: dict[str, float]
    coords: dict[str, np.ndarray]
    grids: dict[str, Any]
    stored: dict[str, dict[str, Path]] = field(default_factory=dict)  # res -> feature-set key -> feature store


def failed_record(row: Mapping[str, Any], key: str, bundle_id: str, error: str) -> dict[str, Any]:
    return {
        "slide_id": row["slide_id"], "patient_id": row["patient_id"], "cohort": row["cohort"], "path": row["path"],
        "key": key, "bundle_id": bundle_id, "status": "failed", "error": error, "score": None, "members": {},
        "n_tiles": {},
    }


def tile_missing(rows: list[dict[str, Any]], tiles_out: Path, bundle: Any, workers: int,
                 claims: Any = None) -> dict[str, str]:
    """Tile slides with the bundle's tile spec; return slide_id -> tiling error for those that failed.

    `claims` (a `claims.ClaimSettings`): other score workers may be tiling other slides into `tiles_out`
    at the same time, so it is tiled as one of several workers (each keeps the others' temporary files)."""
    if not rows:
        return {}
    from wsi_prognosis.tiling.pipeline import TilingConfig, tile_manifest

    config = TilingConfig.from_tile_spec(bundle.tile_spec)
    summary = tile_manifest(pd.DataFrame(rows), tiles_out, config, workers=workers, claims=claims)
    errors: dict[str, str] = {}
    if summary is not None and len(summary) and "slide_id" in summary.columns:
        for rec in summary.to_dict("records"):
            status = str(rec.get("status", "ok"))
            message = rec.get("error")
            if status not in ("ok", "skipped", "done") and isinstance(message, str) and message:
                errors[str(rec["slide_id"])] = message
    return errors


def stored_features(store: Any, slide_id: str, res: str, bundle: Any, features: Path | None) -> dict[str, Path]:
    """Feature stores under `features` that can feed the heads of `res` (checked: encoder, weights, stain target,
    tile store); a store made otherwise is refused by name (the slide fails, with the fix)."""
    from wsi_prognosis.errors import FeatureStoreError
    from wsi_prognosis.features import feature_store_path, open_feature_store
    from wsi_prognosis.scoring.members import member_feature_spec

    if features is None:
        return {}
    found: dict[str, Path] = {}
    for member in bundle.members:
        if member.resolution != res or not member.on_features or member.finetuned:
            continue  # a fine-tuned member's features are its own: always embedded
        spec = member_feature_spec(member)
        path = feature_store_path(features, spec, slide_id)
        if spec.key in found or not path.is_file():
            continue
        with open_feature_store(path) as feature_store:
            feature_store.check(spec, store.content_fingerprint())
            if len(feature_store.coords(res)) != store.n_tiles(res):
                raise FeatureStoreError(f"{path}: {len(feature_store.coords(res))} {res} tiles, the tile store has "
                                        f"{store.n_tiles(res)}. Fix: rerun `wsi-prognosis embed ... remake=true`.")
        found[spec.key] = path
    return found


def plan_slide(row: dict[str, Any], key: str, store_path: Path, bundle: Any, verify: bool,
                features: Path | None = None) -> SlidePlan:
    """Open the slide's tile store and check it can feed every member; raise a WsiPrognosisError if not."""
    from wsi_prognosis.errors import TileStoreError
    from wsi_prognosis.tiling import open_tile_store

    with open_tile_store(store_path) as store:
        if verify:
            store.verify_slide(row["path"])
        coords, grids, tile_l0 = {}, {}, {}
        for member in bundle.members:
            res = member.resolution
            if res in coords:
                continue
            if res not in store.resolutions:
                reason = store.refused.get(res, "not in the tile store")
                raise TileStoreError(f"{row['path']}: cannot score the {res} members: {reason}")
            grid = store.grid(res)
            want_px = int(member.preprocessing.get("tile_px", grid.tile_px))
            want_mpp = float(member.preprocessing.get("mpp", grid.mpp))
            if grid.tile_px != want_px or abs(grid.mpp - want_mpp) > MPP_TOLERANCE * want_mpp:
                raise TileStoreError(
                    f"{store_path}: the {res} grid is {grid.tile_px} px at {grid.mpp} µm/px but member {member.name} "
                    f"needs {want_px} px at {want_mpp} µm/px. Fix: omit tiles= so score tiles with the bundle's spec."
                )
            c = store.coords(res)
            if len(c) == 0:
                raise TileStoreError(
                    f"{row['path']}: no {res} tiles with enough tissue (min tissue fraction "
                    f"{bundle.tile_spec.get('min_tissue_fraction', '?')}); nothing to score. Fix: check the slide or "
                    "its annotation."
                )
            coords[res], grids[res] = c, grid
            tile_l0[res] = grid.tile_um / store.mpp
        stored = {res: stored_features(store, str(row["slide_id"]), res, bundle, features) for res in coords}
        return SlidePlan(row=row, key=key, store_path=store_path, slide_mpp=store.mpp, dimensions=tuple(store.dimensions),
                     tile_l0_px=tile_l0, coords=coords, grids=grids, stored=stored)
