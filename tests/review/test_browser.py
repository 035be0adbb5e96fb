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
    # the overlay is drawn: at opacity 1 a large part of the viewer shows exactly the colour map's
    # colours (score's RdYlGn_r), at opacity 0 (same view) almost none does; outline hidden for both
    lut = np.asarray(browser.evaluate("JSON.parse(document.getElementById('slide-data').textContent).lut"), dtype=int)

    def lut_share(opacity: float, name: str) -> float:
        browser.evaluate("(() => { const o = document.getElementById('opacity'); o.value = '%s';"
                         " o.dispatchEvent(new Event('input'));"
                         " const c = document.getElementById('outline'); c.checked = false;"
                         " c.dispatchEvent(new Event('change')); return true; })()" % opacity)
        browser.pump(0.8)
        png = browser.screenshot(tmp_path / name)
        pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)[::3, 360::3].reshape(-1, 3)
        distance = np.abs(pixels[:, None, :] - lut[None, ::2, :]).sum(axis=2).min(axis=1)
        return float((distance <= 12).mean())

    on, off = lut_share(1.0, "overlay-on.png"), lut_share(0.0, "overlay-off.png")
    assert on > 0.15 and on > 4 * off, (on, off)
    # the tile score under the mouse: somewhere over the slide a move shows a number in the side panel
    shown = []
    for x in range(420, 1260, 60):
        browser.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=300)
        browser.pump(0.05)
        shown.append(browser.evaluate("document.getElementById('hover-score').textContent"))
    assert any(text[:1].isdigit() and "(ensemble, " in text for text in shown), shown
    assert any("no scored tile here" in text for text in shown), shown


def test_viewer_without_tile_scores_opens_and_says_why(served, browser) -> None:
    browser.open(f"{served}/slide/P0002-training-1")
    note = browser.wait_for("window.reviewState && window.reviewState.opened && window.reviewState.note")
    assert "No heatmap" in note and "no tile scores" in note
    assert browser.evaluate("window.reviewState.overlayDrawn") is False
    browser.wait_for("window.reviewState.tilesLoaded > 0")


def test_keys_n_and_p_follow_the_filter(served, browser) -> None:
    browser.open(f"{served}/slide/P0001-training-1?cohort=training")
    browser.call("Input.dispatchKeyEvent", type="keyDown", key="n", text="n")
    assert browser.wait_for("location.pathname === '/slide/P0002-training-1' && location.search", 15) == "?cohort=training"
    browser.wait_for("document.readyState === 'complete'")
    assert browser.evaluate("document.getElementById('next').getAttribute('href')") == "/slide/MOVED-1?cohort=training"
    browser.call("Input.dispatchKeyEvent", type="keyDown", key="p", text="p")
    browser.wait_for("location.pathname === '/slide/P0001-training-1'", 15)
