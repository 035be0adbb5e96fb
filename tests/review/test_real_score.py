"""`review` over what the real `score` stage writes (tiny random-weight bundle, the tiny cohort),
so a change to score's outputs that review depends on fails here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCORING_CONFTEST = Path(__file__).resolve().parents[1] / "scoring" / "conftest.py"


@pytest.fixture(scope="module")
def real_scores(scored_batch, tmp_path_factory) -> Path:
    spec = importlib.util.spec_from_file_location("scoring_conftest_for_review", SCORING_CONFTEST)
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    from wsi_prognosis.cli import main

    root = tmp_path_factory.mktemp("real-score")
    bundle = helpers.make_bundle(root / "bundle", helpers.SMALL_RESOLUTIONS)
    manifest = Path(scored_batch).parent / "manifest.csv"
    out = root / "scores"
    assert main(["score", f"bundle={bundle}", f"manifest={manifest}", f"tiles={Path(scored_batch).parent / 'tiles'}",
                 f"out={out}", *helpers.FAST_ENGINE]) == 0
    return out


def test_review_serves_a_real_score_output(real_scores) -> None:
    from starlette.testclient import TestClient

    from wsi_prognosis.review.app import create_app
    from wsi_prognosis.review.deepzoom import TileService
    from wsi_prognosis.review.index import build_index

    index = build_index(real_scores)
    assert len(index.entries) == 4
    for entry in index.entries:
        index.check(entry)
        assert entry.status == "ok" and entry.available, entry.reason
        assert entry.tile_scores is not None and entry.heatmap is not None and entry.qc["blur"] is not None
        assert len(entry.members) == 2
    tiles = TileService(workers=0)
    try:
        with TestClient(create_app(index, tiles)) as client:
            slide_id = index.entries[0].slide_id
            assert f'data-slide="{slide_id}"' in client.get("/").text
            scores = client.get(f"/api/slide/{slide_id}/scores").json()["resolutions"]
            assert {r: len(v["x"]) for r, v in scores.items()} == index.entries[0].n_tiles
            assert client.get(f"/api/slide/{slide_id}/tissue").json()["polygons"]
            assert client.get(f"/dz/{slide_id}_files/8/0_0.jpeg").status_code == 200
            assert client.get(f"/thumb/{slide_id}.png").headers["content-type"] == "image/png"
    finally:
        tiles.close()
