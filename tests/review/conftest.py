"""A small scored batch for the review tests, written with score's own writers (no network run).

Slides (a tiny synthetic cohort, tiled with the scoring tests' small spec):
  P0001-training-1    ok, tile scores, heatmap
  P0002-training-1    ok, but its tile scores and heatmap are missing (viewer without overlay)
  T0001-tuning-1      changed: its file is now another slide's pixels (fingerprint mismatch)
  V0001-validation-1  ok, tile scores, heatmap (an .svs file)
  MOVED-1             its file moved away after scoring (record path missing)
  FAILED-1            scoring failed (no record beyond the error)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

THRESHOLDS = {"low": 0.4, "high": 0.6}
MEMBERS = {"10x": ["10x_0", "10x_1"], "40x": ["40x_0", "40x_1"]}
RESOLUTIONS = {"10x": {"mpp": 2.0, "tile_px": 32}, "40x": {"mpp": 1.0, "tile_px": 32}}
TISSUE = {"mask_mpp": 2.0, "min_tissue_area_um2": 2000, "max_hole_area_um2": 2000, "closing_um": 8}


def _score_slide(out: Path, row: dict, store_path: Path, rng: np.random.Generator, heatmap: bool = True) -> dict:
    from wsi_prognosis.scoring import records
    from wsi_prognosis.scoring.exports import TileScores, write_heatmap
    from wsi_prognosis.slides import Slide
    from wsi_prognosis.tiling import open_tile_store

    arrays, tiles, member_scores = {}, [], {}
    with open_tile_store(store_path) as store:
        mpp = store.mpp
        for res, names in MEMBERS.items():
            coords = store.coords(res)
            # a left-to-right gradient plus noise: the overlay has visibly different colours
            base = (coords[:, 0] / max(coords[:, 0].max(), 1) - 0.5) * 6
            logits = np.stack([base + rng.normal(0, 0.5, len(coords)) for _ in names]).astype(np.float32)
            arrays[f"coords_{res}"], arrays[f"logits_{res}"], arrays[f"members_{res}"] = coords, logits, np.asarray(names)
            probs = 1 / (1 + np.exp(-logits.astype(float)))
            tiles.append(TileScores(res, coords, store.grid(res).tile_um / mpp, probs.mean(0), dict(zip(names, probs))))
            member_scores.update({n: float(p.mean()) for n, p in zip(names, probs)})
    records.write_tile_scores(out, row["slide_id"], arrays)
    if heatmap:
        with Slide.from_path(row["path"]) as slide:
            thumb, thumb_mpp = slide.thumbnail(mpp * 4)
        write_heatmap(out / "heatmaps" / f"{row['slide_id']}.png", thumb, thumb_mpp, mpp, tiles)
    score = float(np.mean(list(member_scores.values())))
    return {"slide_id": row["slide_id"], "patient_id": row["patient_id"], "cohort": row["cohort"], "path": row["path"],
            "key": "test", "bundle_id": "test-bundle", "status": "ok", "error": "", "score": score,
            "members": member_scores, "n_tiles": {r: int(len(arrays[f"coords_{r}"])) for r in MEMBERS}, "mpp": mpp,
            "tile_store": str(store_path), "exports": {}, "export_error": ""}


@pytest.fixture(scope="session")
def scored_batch(tmp_path_factory) -> Path:
    """The scores folder described in the module docstring."""
    from wsi_prognosis.cohort import read_manifest
    from wsi_prognosis.scoring import records
    from wsi_prognosis.scoring.aggregate import slide_table, write_table
    from wsi_prognosis.synth import SynthConfig, make_cohort
    from wsi_prognosis.tiling.config import TilingConfig
    from wsi_prognosis.tiling.pipeline import tile_manifest

    root = tmp_path_factory.mktemp("review")
    make_cohort(root, SynthConfig.from_preset("tiny", seed=3, n_training=2, n_tuning=1, n_validation=1, with_test=False,
                                              width_px=768, height_px=640, workers=1))
    manifest = read_manifest(root / "manifest.csv")
    config = TilingConfig.from_mapping(tiling={"resolutions": RESOLUTIONS, "min_tissue_fraction": 0.5}, tissue=TISSUE)
    summary = tile_manifest(manifest, root / "tiles", config, workers=1)
    assert (summary["status"] == "ok").all(), summary
    out = root / "scores"
    rng = np.random.default_rng(0)
    rows = manifest.to_dict("records")
    by_id = {r["slide_id"]: r for r in rows}
    for row in rows:
        rec = _score_slide(out, row, root / "tiles" / f"{row['slide_id']}.h5", rng,
                           heatmap=row["slide_id"] != "P0002-training-1")
        records.write_record(out, rec)
    (out / "slides" / "P0002-training-1.npz").unlink()
    # T0001's file replaced by V0001's pixels after scoring
    changed = root / "slides" / "changed" / "T0001-tuning-1.svs"
    changed.parent.mkdir(parents=True)
    shutil.copy(by_id["V0001-validation-1"]["path"], changed)
    rec = records.read_record(out, "T0001-tuning-1")
    records.write_record(out, {**rec, "path": str(changed)})
    # a slide whose file moved away after scoring (same pixels as P0001, stored elsewhere at scoring time)
    moved = dict(by_id["P0001-training-1"], slide_id="MOVED-1", patient_id="P0009")
    moved_rec = {**records.read_record(out, "P0001-training-1"), "slide_id": "MOVED-1", "patient_id": "P0009",
                 "path": str(root / "gone" / "MOVED-1.tiff")}
    records.write_record(out, moved_rec)
    shutil.copy(out / "slides" / "P0001-training-1.npz", out / "slides" / "MOVED-1.npz")
    failed = {"slide_id": "FAILED-1", "patient_id": "P0010", "cohort": "validation", "path": str(root / "x.tiff")}
    records.write_record(out, {**failed, "key": "k", "bundle_id": "test-bundle", "status": "failed",
                               "error": f"{root / 'x.tiff'}: slide file not found. Fix: correct the manifest's `path`.",
                               "score": None, "members": {}, "n_tiles": {}})
    table_rows = pd.DataFrame([*rows, moved, failed])[["slide_id", "patient_id", "path", "cohort"]]
    recs = {r: records.read_record(out, r) for r in table_rows["slide_id"]}
    names = [n for res in MEMBERS.values() for n in res]
    write_table(slide_table(table_rows, recs, names, THRESHOLDS), out / "scores.csv")
    (out / "run_score.json").write_text(json.dumps({"stage": "score", "bundle_id": "test-bundle",
                                                     "thresholds": THRESHOLDS}))
    return out
