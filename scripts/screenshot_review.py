#!/usr/bin/env python3
"""Screenshots of `wsi-prognosis review` (batch page and viewer) in headless Chromium, for the README.

    .venv/bin/python scripts/screenshot_review.py SCORES_DIR OUT_DIR [--slide ID] [--width 1280] [--height 720]

Serves SCORES_DIR on a free localhost port, opens `/` and `/slide/<ID>` (default: the first slide
with tile scores), waits until the deep-zoom tiles and the heatmap are drawn, moves the mouse over
the tissue (the side panel shows the tile score), and writes OUT_DIR/review-batch.png and
OUT_DIR/review-viewer.png (256-colour PNGs). Needs Debian's `chromium`.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _save(png: bytes, path: Path) -> None:
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    image.save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scores", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--slide")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "tests" / "review"))
    from cdp import Browser

    from wsi_prognosis.review.app import create_app
    from wsi_prognosis.review.deepzoom import TileService
    from wsi_prognosis.review.index import build_index
    from wsi_prognosis.review.server import BackgroundServer

    index = build_index(args.scores)
    index.check_all_in_background()
    index.wait_checked(120)
    slide = args.slide or next(e.slide_id for e in index.entries if e.available and e.tile_scores is not None)
    args.out.mkdir(parents=True, exist_ok=True)
    tiles = TileService(workers=1)
    try:
        with BackgroundServer(create_app(index, tiles)) as server, Browser(args.width, args.height) as browser:
            browser.open(server.url + "/")
            browser.wait_for("Array.from(document.querySelectorAll('td.thumb img')).every(i => i.complete)")
            _save(browser.screenshot(), args.out / "review-batch.png")
            browser.open(f"{server.url}/slide/{slide}")
            browser.wait_for("window.reviewState && window.reviewState.overlayDrawn && window.reviewState.tilesLoaded > 0",
                             60)
            browser.pump(1.5)
            x = 330 + (args.width - 330) * 0.6
            browser.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=args.height * 0.45)
            browser.pump(0.5)
            _save(browser.screenshot(), args.out / "review-viewer.png")
    finally:
        tiles.close()
    print(args.out / "review-batch.png", args.out / "review-viewer.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
