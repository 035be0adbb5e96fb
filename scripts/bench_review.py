"""Benchmark of `wsi-prognosis review`: deep-zoom tile latency and the batch page with 5,000 rows.

1. A scores folder is made beside the benchmark slide (80,000 x 60,000 px, from
   wsi_prognosis.synth, made first if missing, shared with bench_tiling.py in /tmp/wsi-bench):
   scores.csv and slides/<id>.json records for `--rows` slides (every row points at the benchmark
   slide; one heatmap PNG hard-linked per row, so the table has thumbnails).
2. The real app is served on a thread (uvicorn, `--workers` tile processes, as the command runs it).
3. Tile latency, one request at a time over a keep-alive connection, for `--tiles` distinct 254-px
   tiles at random places of the top `--levels` deep-zoom levels (full resolution and below):
   cold (nothing cached: read + JPEG-encode in a worker) and warm (the same tiles again: LRU hits).
   Also a viewport burst: 24 new full-resolution tiles asked at once over 6 connections (a browser).
   Targets (issue 13): p95 <= 150 ms cold, <= 50 ms warm.
4. The batch page: server time for `/` (first page, sorted, filtered, searched) and, with Debian's
   chromium, the browser's time from navigation to the load event (thumbnails included).

Usage:
  .venv/bin/python scripts/bench_review.py [--slide PATH] [--rows 5000] [--tiles 200] [--workers 2]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = Path("/tmp/wsi-bench")


def benchmark_slide() -> Path:
    """The synthetic benchmark slide (same place and recipe as scripts/bench_tiling.py)."""
    from wsi_prognosis.synth import SynthConfig, make_cohort

    out = WORK / "synth-benchmark"
    slides = sorted((out / "slides").rglob("*.tif*")) if out.is_dir() else []
    if not slides:
        print("making the 80,000 x 60,000 benchmark slide (minutes) ...", flush=True)
        make_cohort(out, SynthConfig.from_preset("benchmark"))
        slides = sorted((out / "slides").rglob("*.tif*"))
    return slides[0]


def make_scores(folder: Path, slide: Path, rows: int) -> None:
    """A scores folder of `rows` slides, all pointing at `slide` (records, scores.csv, heatmaps)."""
    import numpy as np
    import openslide
    from PIL import Image

    from wsi_prognosis.scoring.records import write_record

    rng = np.random.default_rng(0)
    with openslide.OpenSlide(str(slide)) as handle:
        thumb = handle.get_thumbnail((512, 512)).convert("RGB")
    (folder / "heatmaps").mkdir(parents=True)
    heatmap = folder / "heatmap.png"
    Image.blend(thumb, Image.new("RGB", thumb.size, (200, 60, 40)), 0.4).save(heatmap)
    cohorts = ["training", "tuning", "test", "validation"]
    lines = ["slide_id,patient_id,cohort,score,risk_group,n_tiles_10x,n_tiles_40x,status,error,member_a,member_b"]
    for i in range(rows):
        slide_id, patient = f"S{i:05d}", f"P{i // 2:05d}"
        failed = i % 97 == 13
        score = float(rng.beta(2, 3))
        members = [min(1.0, max(0.0, score + rng.normal(0, 0.05))) for _ in range(2)]
        group = "" if failed else ("good" if score < 0.35 else "uncertain" if score < 0.55 else "poor")
        cohort = cohorts[i % 4]
        if failed:
            lines.append(f"{slide_id},{patient},{cohort},,,0,0,failed,\"{slide}: scoring failed (test)\",,")
        else:
            lines.append(f"{slide_id},{patient},{cohort},{score},{group},{9000 + i % 50},{144000 + i % 800},ok,,"
                         f"{members[0]},{members[1]}")
        write_record(folder, {"slide_id": slide_id, "patient_id": patient, "cohort": cohort, "path": str(slide),
                              "status": "failed" if failed else "ok", "score": None if failed else score,
                              "mpp": 0.25})
        os.link(heatmap, folder / "heatmaps" / f"{slide_id}.png")
    (folder / "scores.csv").write_text("\n".join(lines) + "\n")
    # tile scores for the first row: the real lattice sizes (10x 224 µm, 40x 56 µm tiles at 0.25 µm/px)
    # over ~38 % of the slide, so the viewer draws an overlay of the size a real slide has
    with openslide.OpenSlide(str(slide)) as handle:
        width, height = handle.dimensions
    arrays = {}
    for res, side in (("10x", 896), ("40x", 224)):
        xs, ys = np.meshgrid(np.arange(width // side) * side, np.arange(height // side) * side)
        coords = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64)
        keep = rng.random(len(coords)) < 0.38
        coords = coords[keep]
        logits = rng.normal((coords[:, 0] / width - 0.5) * 6, 1.0, size=(5, len(coords))).astype(np.float32)
        arrays.update({f"coords_{res}": coords, f"logits_{res}": logits,
                       f"members_{res}": np.asarray([f"{res}_{k}" for k in range(5)])})
    np.savez_compressed(folder / "slides" / "S00000.npz", **arrays)
    (folder / "run_score.json").write_text(json.dumps({"thresholds": {"low": 0.35, "high": 0.55},
                                                       "bundle_id": "bench"}))


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p = lambda q: ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]  # noqa: E731
    return f"p50 {p(0.5) * 1000:6.1f} ms  p95 {p(0.95) * 1000:6.1f} ms  max {ordered[-1] * 1000:6.1f} ms  (n={len(values)})"


def get(conn: http.client.HTTPConnection, url: str) -> tuple[float, int, bytes]:
    started = time.perf_counter()
    conn.request("GET", url)
    response = conn.getresponse()
    body = response.read()
    return time.perf_counter() - started, response.status, body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slide", type=Path)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--tiles", type=int, default=200)
    parser.add_argument("--levels", type=int, default=4, help="top deep-zoom levels sampled (1: full resolution only)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    slide = args.slide or benchmark_slide()
    import numpy as np

    from wsi_prognosis.review.app import create_app
    from wsi_prognosis.review.deepzoom import TileService
    from wsi_prognosis.review.index import build_index
    from wsi_prognosis.review.server import BackgroundServer

    work = Path(tempfile.mkdtemp(prefix="bench-review-"))
    try:
        started = time.perf_counter()
        make_scores(work / "scores", slide, args.rows)
        print(f"scores folder with {args.rows} rows made in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        index = build_index(work / "scores")
        print(f"index of {len(index.entries)} slides built in {time.perf_counter() - started:.2f} s")
        entry = index.get("S00000")
        index.check(entry)   # the benchmark's slide itself (the other rows only feed the table)
        tiles = TileService(workers=args.workers)
        tiles.warm_up()
        with BackgroundServer(create_app(index, tiles)) as server:
            host, port = "127.0.0.1", server.port
            conn = http.client.HTTPConnection(host, port, timeout=60)
            seconds, status, dzi = get(conn, "/dz/S00000.dzi")
            geometry = tiles.slides.geometry(entry.path)
            print(f"slide {slide.name}: {geometry.dimensions[0]} x {geometry.dimensions[1]} px, "
                  f"{len(geometry.level_tiles)} deep-zoom levels; DZI {seconds * 1000:.0f} ms (slide opened)")
            top = len(geometry.level_tiles) - 1
            rng = random.Random(args.seed)
            wanted: set[tuple[int, int, int]] = set()
            available = sum(c * r for c, r in geometry.level_tiles[top - args.levels + 1:])
            while len(wanted) < min(args.tiles, available):
                level = top - rng.randrange(args.levels)
                cols, rows = geometry.level_tiles[level]
                wanted.add((level, rng.randrange(cols), rng.randrange(rows)))
            order = sorted(wanted, key=lambda _: rng.random())
            # each worker opens the slide on its first tile: measured apart, not as "cold"
            first = [get(http.client.HTTPConnection(host, port), f"/dz/S00000_files/{top}/{c}_0.jpeg")[0]
                     for c in range(args.workers)]
            print(f"first tile per worker (opens the slide): {', '.join(f'{s * 1000:.0f} ms' for s in first)}")
            timings: dict[str, list[float]] = {"cold": [], "warm": []}
            sizes = []
            for phase in ("cold", "warm"):
                for level, col, row in order:
                    seconds, status, body = get(conn, f"/dz/S00000_files/{level}/{col}_{row}.jpeg")
                    assert status == 200, (level, col, row, status)
                    timings[phase].append(seconds)
                    sizes.append(len(body))
            print(f"tile latency, {len(order)} tiles of 254(+2) px on levels {top - args.levels + 1}..{top}, "
                  f"{args.workers} worker processes, one request at a time:")
            print(f"  cold  {percentiles(timings['cold'])}   target p95 <= 150 ms")
            print(f"  warm  {percentiles(timings['warm'])}   target p95 <= 50 ms")
            print(f"  mean JPEG {statistics.mean(sizes) / 1024:.1f} KiB")
            # a viewport's worth of new full-resolution tiles at once, over 6 connections (as a browser)
            cols, rows = geometry.level_tiles[top]
            x0, y0 = cols // 2 + 7, rows // 2 + 5
            burst = [(top, x0 + dx, y0 + dy) for dy in range(4) for dx in range(6)]
            locals_ = __import__("threading").local()

            def fetch(tile: tuple[int, int, int]) -> float:
                if not hasattr(locals_, "conn"):
                    locals_.conn = http.client.HTTPConnection(host, port, timeout=60)
                return get(locals_.conn, f"/dz/S00000_files/{tile[0]}/{tile[1]}_{tile[2]}.jpeg")[0]

            started = time.perf_counter()
            with ThreadPoolExecutor(6) as pool:
                each = list(pool.map(fetch, burst))
            print(f"  viewport burst: 24 new full-resolution tiles over 6 connections in "
                  f"{(time.perf_counter() - started) * 1000:.0f} ms (per tile {percentiles(each)})")

            print(f"batch page, {args.rows} rows (100 per page), server round trip:")
            for label, url in (("first page", "/"), ("sorted by score", "/?sort=score&desc=1"),
                               ("filtered poor + cohort", "/?group=poor&cohort=validation"),
                               ("search", "/?q=P01234"), ("last page", f"/?page={-(-args.rows // 100)}"),
                               ("JSON page", "/api/slides?sort=spread&desc=1")):
                values = []
                for _ in range(15):
                    seconds, status, body = get(conn, url)
                    assert status == 200, (url, status)
                    values.append(seconds)
                print(f"  {label:<24} {percentiles(values)}  {len(body) / 1024:.0f} KiB")
            sys.path.insert(0, str(REPO / "tests" / "review"))
            from cdp import Browser, find_chromium

            if find_chromium() is None:
                print("chromium absent: browser load time skipped (apt-get install -y chromium)")
            else:
                with Browser(width=1400, height=900) as browser:
                    loads, ready = [], []
                    for i in range(8):
                        url = f"{server.url}/?sort=score&desc={i % 2}&page={1 + i // 2}"
                        loads.append(browser.open(url))
                        n = browser.evaluate("document.querySelectorAll('#slides tbody tr').length")
                        assert n == 100, n
                        ready.append(browser.evaluate("performance.getEntriesByType('navigation')[0]"
                                                      ".domContentLoadedEventEnd") / 1000)
                    print("  in headless chromium (a new page of 100 rows each time):")
                    print(f"    table shown (DOMContentLoaded)          {percentiles(ready)}")
                    print(f"    load event (visible thumbnails loaded)  {percentiles(loads)}")
                    n40 = len(np.load(work / "scores" / "slides" / "S00000.npz")["coords_40x"])
                    n10 = len(np.load(work / "scores" / "slides" / "S00000.npz")["coords_10x"])
                    browser.open(f"{server.url}/slide/S00000")
                    browser.wait_for("window.reviewState && window.reviewState.overlayDrawn && "
                                     "window.reviewState.resolution === '10x'", 60)
                    first = browser.evaluate("window.reviewState.firstTileMs") / 1000
                    drawn10 = browser.evaluate("window.reviewState.overlayMs") / 1000
                    started = time.perf_counter()
                    browser.evaluate("(() => { const r = document.getElementById('resolution');"
                                     " r.value = '40x'; r.dispatchEvent(new Event('change')); return 1; })()")
                    browser.wait_for("window.reviewState.resolution === '40x'", 60)
                    drawn40 = time.perf_counter() - started
                    print(f"  viewer on the benchmark slide: first deep-zoom tile {first * 1000:.0f} ms and the 10x "
                          f"heatmap ({n10} tiles) {drawn10 * 1000:.0f} ms after navigation; switching to the 40x "
                          f"heatmap ({n40} tiles) {drawn40 * 1000:.0f} ms")
        tiles.close()
        print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
