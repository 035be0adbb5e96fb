"""The served pages in a real browser: headless Chromium (Debian's, as `.ci/run` installs it)
drives the batch page and the viewer over the DevTools protocol.

Checks, from the DOM, the network log and a screenshot:
- the batch table has one row per slide of scores.csv, with the heatmap thumbnails loaded;
- the viewer opened the slide: deep-zoom tiles were requested and every one returned 200;
- the heatmap overlay was added as a second image with one cell per scored tile, and the
  screenshot shows its colours over the viewer; the tissue outline was drawn;
- a slide without tile scores opens without an overlay and says why.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from cdp import Browser, find_chromium

pytestmark = pytest.mark.skipif(find_chromium() is None,
                                reason="chromium is absent: install Debian's chromium (apt-get install -y chromium)")

OK = "V0001-validation-1"


@pytest.fixture(scope="module")
def served(scored_batch):
    from wsi_prognosis.review.app import create_app
    from wsi_prognosis.review.deepzoom import TileService
    from wsi_prognosis.review.index import build_index
    from wsi_prognosis.review.server import BackgroundServer

    index = build_index(scored_batch)
    index.check_all_in_background()
    tiles = TileService(workers=1)      # the real worker-process pool
    tiles.warm_up()
    try:
        with BackgroundServer(create_app(index, tiles)) as server:
            assert index.wait_checked(60)
            yield server.url
    finally:
        tiles.close()


@pytest.fixture(scope="module")
def browser():
    with Browser(width=1280, height=800) as b:
        yield b


def test_batch_page_shows_every_row_with_thumbnails(served, browser) -> None:
    browser.open(served + "/")
    rows = browser.evaluate("Array.from(document.querySelectorAll('#slides tbody tr')).map(r => r.dataset.slide)")
    assert rows == ["P0001-training-1", "P0002-training-1", "T0001-tuning-1", "V0001-validation-1", "MOVED-1",
                    "FAILED-1"]
    loaded = browser.wait_for("Array.from(document.querySelectorAll('td.thumb img'))"
                              ".every(i => i.complete && i.naturalWidth > 0) && document.querySelectorAll('td.thumb img').length")
    assert loaded == 3
    assert browser.evaluate("document.querySelector('tr[data-slide=\"T0001-tuning-1\"]').innerText").count("unavailable")


def test_viewer_loads_deep_zoom_tiles_and_draws_the_overlay(served, browser, tmp_path) -> None:
    from PIL import Image

    browser.responses.clear()
    browser.open(f"{served}/slide/{OK}")
    state = browser.wait_for("window.reviewState && window.reviewState.overlayDrawn && "
                             "window.reviewState.outlinePolygons > 0 && window.reviewState.tilesLoaded > 0 && "
                             "JSON.stringify(window.reviewState)")
    state = json.loads(state)
    browser.pump(1.0)   # let the last tiles paint
    tiles = [(url, status) for url, status in browser.responses if f"/dz/{OK}_files/" in url]
    assert tiles, browser.responses
    assert all(status == 200 for _, status in tiles), tiles
    assert any(url.endswith(".dzi") and status == 200 for url, status in browser.responses)
    assert state["tileErrors"] == 0 and state["overlayTiles"] > 0 and state["resolution"] in ("10x", "40x")
    assert browser.evaluate("document.querySelectorAll('#layer option').length") == 3   # ensemble + 2 members
    png = browser.screenshot(tmp_path / "viewer.png")
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    area = pixels[:, 330:]          # right of the side panel
    r, g, b = area[..., 0], area[..., 1], area[..., 2]
    # the colour map's ends: saturated red (poor) and green (good) cells, which H&E pixels never are
    red = (r > 150) & (g < 110) & (b < 110)
    green = (g > 130) & (r < 130) & (b < 120)
    assert red.sum() > 200 and green.sum() > 200, (red.sum(), green.sum())


def test_viewer_without_tile_scores_opens_and_says_why(served, browser) -> None:
    browser.open(f"{served}/slide/P0002-training-1")
    note = browser.wait_for("window.reviewState && window.reviewState.opened && window.reviewState.note")
    assert "No heatmap" in note and "no tile scores" in note
    assert browser.evaluate("window.reviewState.overlayDrawn") is False
    browser.wait_for("window.reviewState.tilesLoaded > 0")
