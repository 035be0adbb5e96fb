"""The review app over HTTP (Starlette's test client, tiles rendered in-process): pages, tiles, and
everything a URL must not reach."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

OK = "P0001-training-1"


@pytest.fixture(scope="module")
def client(scored_batch):
    from starlette.testclient import TestClient

    from wsi_prognosis.review.app import create_app
    from wsi_prognosis.review.deepzoom import TileService
    from wsi_prognosis.review.index import build_index

    index = build_index(scored_batch)
    index.check_all_in_background()   # as the server does at start-up
    assert index.wait_checked(60)
    tiles = TileService(workers=0)
    with TestClient(create_app(index, tiles), raise_server_exceptions=False) as c:
        yield c
    tiles.close()


def test_batch_page_lists_every_slide_with_its_group_error_and_availability(client) -> None:
    page = client.get("/")
    assert page.status_code == 200
    html = page.text
    for slide_id in (OK, "P0002-training-1", "T0001-tuning-1", "V0001-validation-1", "MOVED-1", "FAILED-1"):
        assert f'data-slide="{slide_id}"' in html
    assert "group-poor" in html and "group-uncertain" in html
    assert "slide file not found. Fix: correct the manifest" in html          # the failed slide's error
    assert "changed since it was scored" in html                              # fingerprint mismatch
    assert "moved or deleted since scoring" in html                            # moved file
    assert f'src="/thumb/{OK}.png"' in html and "no heatmap" in html
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert page.headers["x-content-type-options"] == "nosniff"


def test_filters_sort_and_search_from_the_query_string(client) -> None:
    rows = client.get("/api/slides", params={"group": "poor", "sort": "score", "desc": "1"}).json()["rows"]
    assert [r["slide_id"] for r in rows] == ["T0001-tuning-1", "V0001-validation-1"]
    assert [r["slide_id"] for r in client.get("/api/slides", params={"status": "failed"}).json()["rows"]] == ["FAILED-1"]
    assert [r["slide_id"] for r in client.get("/api/slides", params={"q": "p0009"}).json()["rows"]] == ["MOVED-1"]
    assert client.get("/api/slides", params={"cohort": "tuning"}).json()["selected"] == 1
    # malformed values fall back to defaults, never an error
    assert client.get("/api/slides", params={"page": "x", "per_page": "-3", "sort": "__class__"}).status_code == 200
    html = client.get("/", params={"group": "poor", "sort": "score"}).text
    assert html.index('data-slide="V0001-validation-1"') < html.index('data-slide="T0001-tuning-1"')
    assert 'data-slide="P0001-training-1"' not in html


def test_viewer_page_has_panel_overlay_sources_and_previous_next_in_the_filter(client) -> None:
    html = client.get(f"/slide/{OK}", params={"cohort": "training"}).text
    assert "/static/openseadragon/openseadragon.min.js" in html and "cdn" not in html.lower()
    assert f"/dz/{OK}.dzi" in html and f"/api/slide/{OK}/scores" in html
    assert "good &lt; 0.400 ≤ uncertain &lt; 0.600 ≤ poor" in html
    assert 'id="next" href="/slide/P0002-training-1?cohort=training"' in html   # next within the filter
    assert 'id="prev"' not in html
    html = client.get("/slide/P0002-training-1", params={"cohort": "training"}).text
    assert 'id="prev" href="/slide/P0001-training-1?cohort=training"' in html
    assert "no tile scores for this slide" in html                              # viewer without overlay, says why
    assert client.get("/api/slide/P0002-training-1/scores").json()["resolutions"] == {}


def test_unavailable_slides_show_why_and_serve_no_pixels(client) -> None:
    for slide_id, why in (("T0001-tuning-1", "changed since it was scored"), ("MOVED-1", "moved or deleted")):
        html = client.get(f"/slide/{slide_id}").text
        assert "Slide unavailable" in html and why in html
        assert client.get(f"/dz/{slide_id}.dzi").status_code == 404
        assert client.get(f"/dz/{slide_id}_files/0/0_0.jpeg").status_code == 404
        assert client.get(f"/api/slide/{slide_id}/tissue").status_code == 404


def test_deep_zoom_descriptor_and_tiles(client, scored_batch) -> None:
    import openslide

    from wsi_prognosis.review.index import build_index

    with openslide.OpenSlide(str(build_index(scored_batch).get(OK).path)) as slide:
        width, height = slide.dimensions
    dzi = client.get(f"/dz/{OK}.dzi")
    assert dzi.status_code == 200 and 'TileSize="254"' in dzi.text and 'Overlap="1"' in dzi.text
    assert f'Width="{width}"' in dzi.text and f'Height="{height}"' in dzi.text
    assert 512 < max(width, height) <= 1024
    top = client.get(f"/dz/{OK}_files/10/0_0.jpeg")   # level 10 (2^10 >= the long side): full resolution
    assert top.status_code == 200 and top.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(top.content))
    assert image.format == "JPEG" and image.size == (255, 255)   # 254 + 1 px overlap on the far side
    assert client.get(f"/dz/{OK}_files/10/0_0.jpeg").content == top.content   # cached bytes
    scores = client.get(f"/api/slide/{OK}/scores").json()["resolutions"]
    assert set(scores) == {"10x", "40x"} and scores["10x"]["side"] == 256.0
    assert set(scores["40x"]["layers"]) == {"ensemble", "40x_0", "40x_1"}
    assert client.get(f"/api/slide/{OK}/tissue").json()["polygons"]


@pytest.mark.parametrize("url", [
    "/dz/..%2F..%2Fetc%2Fpasswd",
    "/dz/..%2F..%2Fetc%2Fpasswd.dzi",
    "/dz/%2Fetc%2Fpasswd.dzi",
    "/dz//etc/passwd.dzi",
    "/dz/../../etc/passwd",
    "/dz/%2e%2e%2f%2e%2e%2fetc%2fpasswd_files/0/0_0.jpeg",
    "/dz/NOPE.dzi",
    "/dz/NOPE_files/0/0_0.jpeg",
    "/slide/NOPE",
    "/slide/..%2Fscores.csv",
    "/thumb/..%2Fscores.csv",
    "/thumb/NOPE.png",
    "/api/slide/..%2F..%2Fetc%2Fpasswd/scores",
    "/static/..%2F..%2Freview%2Fapp.py",
    "/static/%2e%2e/app.py",
    "/scores.csv",
    "/slides/P0001-training-1.json",
])
def test_traversal_absolute_paths_and_unknown_ids_are_404(client, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 404, (url, response.status_code)
    assert "Traceback" not in response.text and "root:" not in response.text


@pytest.mark.parametrize("tail", [
    "label", "macro", "thumbnail", "label.jpeg", "../label", "associated/label",
    "_files/label/0_0.jpeg", "_files/macro", "_files/-1/0_0.jpeg", "_files/99/0_0.jpeg", "_files/10/99_0.jpeg",
    "_files/10/0_99.jpeg", "_files/10/-1_0.jpeg", "_files/10/0_0.png", "_files/10/0_0", "_files/10/0.5_0.jpeg",
    "_files/10/0_0.jpeg/..", "_files/1e3/0_0.jpeg", "_files/99999999999/0_0.jpeg", "_files/10/99999999999_0.jpeg",
    "_files/10/0_0_0.jpeg", ".dzi/x", "_files//0_0.jpeg", "_files/10/%30_0.jpegx",
])
def test_label_macro_and_malformed_levels_and_coordinates_are_404(client, tail: str) -> None:
    response = client.get(f"/dz/{OK}{tail}")
    assert response.status_code == 404, (tail, response.status_code)


def test_metadata_beyond_size_and_mpp_is_never_served(client, scored_batch) -> None:
    import openslide

    from wsi_prognosis.review.index import build_index

    path = build_index(scored_batch).get(OK).path
    with openslide.OpenSlide(str(path)) as slide:
        secrets = [str(v) for k, v in slide.properties.items() if len(str(v)) > 6 and not k.startswith("openslide.level")
                   and "mpp" not in k and k not in ("tiff.ImageWidth", "tiff.ImageLength")]
    bodies = [client.get(u).text for u in ("/", f"/slide/{OK}", f"/dz/{OK}.dzi", f"/api/slide/{OK}/scores",
                                           "/api/slides")]
    for value in secrets:
        assert not any(value in body for body in bodies), value


def test_every_response_is_read_only(client) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        response = client.request(method, f"/dz/{OK}.dzi")
        assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD"
    assert client.head(f"/dz/{OK}.dzi").status_code == 200


def test_static_files_are_package_data_and_the_viewer_is_vendored(client) -> None:
    import fnmatch
    import tomllib
    from importlib import resources
    from pathlib import Path

    root = Path(str(resources.files("wsi_prognosis")))
    patterns = tomllib.loads((root.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["wsi_prognosis"]
    files = [p.relative_to(root).as_posix() for folder in ("review/static", "review/templates")
             for p in (root / folder).rglob("*") if p.is_file()]
    assert files and all(any(fnmatch.fnmatch(f, pattern) for pattern in patterns) for f in files), files
    assert "BSD" in client.get("/static/openseadragon/LICENSE.txt").text or "Redistribution" in \
        client.get("/static/openseadragon/LICENSE.txt").text
    assert client.get("/static/openseadragon/openseadragon.min.js").text.startswith("//! openseadragon 6.1.1")
    assert client.get("/static/openseadragon/images/zoomin_rest.png").status_code == 200


def test_a_dead_tile_worker_is_replaced(scored_batch) -> None:
    """A worker that dies (a decoder crash) costs one tile (404), not every later tile."""
    import asyncio
    import os
    import signal

    from wsi_prognosis.review.deepzoom import TileService, _ping
    from wsi_prognosis.review.index import build_index

    path = build_index(scored_batch).get(OK).path
    service = TileService(workers=1)
    try:
        pid = service._pool.submit(_ping).result()
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)

        async def ask(col: int) -> bytes | None:
            return await service.tile(OK, path, 10, col, 0)

        with pytest.raises(Exception):
            asyncio.run(ask(0))
        assert asyncio.run(ask(1))[:2] == b"\xff\xd8"   # JPEG from the new pool
    finally:
        service.close()


def test_coarse_levels_from_the_overview_match_deepzoomgenerator(tmp_path) -> None:
    """Tiles of the levels cut from the cached overview have DeepZoomGenerator's geometry and pixels."""
    import numpy as np
    import openslide
    import tifffile
    from openslide.deepzoom import DeepZoomGenerator

    from wsi_prognosis.review.deepzoom import OVERLAP, TILE_SIZE, _WorkerSlides

    # a 3000 x 2000 tiled TIFF without a pyramid: every level below 1500 px comes from the overview
    y, x = np.mgrid[0:2000, 0:3000]
    rgb = np.stack([(x / 12) % 256, (y / 8) % 256, ((x + y) / 20) % 256], axis=2).astype(np.uint8)
    path = tmp_path / "flat.tiff"
    tifffile.imwrite(path, rgb, tile=(256, 256), photometric="rgb")
    slides = _WorkerSlides(2)
    with openslide.OpenSlide(str(path)) as handle:
        dz = DeepZoomGenerator(handle, tile_size=TILE_SIZE, overlap=OVERLAP, limit_bounds=False)
        covered = [z for z in range(dz.level_count) if dz.level_dimensions[z][0] * 2 <= 3000]
        assert max(covered) == dz.level_count - 2
        for level in covered:
            cols, rows = dz.level_tiles[level]
            for col in range(cols):
                for row in range(rows):
                    want = np.asarray(dz.get_tile(level, (col, row)).convert("RGB"), dtype=float)
                    got = np.asarray(slides.tile(str(path), level, col, row).convert("RGB"), dtype=float)
                    h, w = min(want.shape[0], got.shape[0]), min(want.shape[1], got.shape[1])
                    assert abs(want.shape[0] - got.shape[0]) <= 1 and abs(want.shape[1] - got.shape[1]) <= 1
                    if h > 4 and w > 4:
                        assert np.abs(want[:h, :w] - got[:h, :w]).mean() < 6, (level, col, row)
    slides.close()


def test_only_local_host_names_are_answered_on_localhost(scored_batch) -> None:
    """A page elsewhere that rebinds its DNS name to 127.0.0.1 gets 400, not the batch."""
    from starlette.testclient import TestClient

    from wsi_prognosis.review.app import LOCAL_HOST_NAMES, ReviewOptions, create_app
    from wsi_prognosis.review.deepzoom import TileService
    from wsi_prognosis.review.index import build_index

    tiles = TileService(workers=0)
    app = create_app(build_index(scored_batch), tiles, ReviewOptions(allowed_hosts=LOCAL_HOST_NAMES))
    try:
        with TestClient(app, base_url="http://127.0.0.1:8765") as client:
            assert client.get("/").status_code == 200
            assert client.get("/", headers={"host": "localhost:8765"}).status_code == 200
            evil = client.get("/", headers={"host": "attacker.example:8765"})
            assert evil.status_code == 400 and "data-slide" not in evil.text
    finally:
        tiles.close()
