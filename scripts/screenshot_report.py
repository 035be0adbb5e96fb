#!/usr/bin/env python3
"""Render an HTML report (e.g. analysis/report.html) in headless Chromium and save a PNG screenshot.

    python scripts/screenshot_report.py OUT/report.html report.png [--width 1280] [--height 4000]

Needs Debian's `chromium` (`apt-get install -y chromium`). The page is loaded from a file:// URL
with networking features off, so the screenshot also proves that the report is self-contained.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def find_chromium() -> str | None:
    """Path of a Chromium binary, or None."""
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    return shutil.which("chromium")


def screenshot(html: str | Path, png: str | Path, *, width: int = 1280, height: int = 4000,
               timeout_s: float = 60.0, chromium: str | None = None) -> Path:
    """Screenshot `html` into `png` (width x height px). Raises RuntimeError if Chromium fails."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise RuntimeError("Chromium not found; install it with `apt-get install -y chromium`.")
    html, png = Path(html).resolve(), Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
            f"--window-size={width},{height}", f"--screenshot={png}", html.as_uri(),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0 or not png.is_file() or png.stat().st_size == 0:
        raise RuntimeError(f"chromium failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=4000)
    args = parser.parse_args(argv)
    try:
        path = screenshot(args.html, args.png, width=args.width, height=args.height)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"screenshot_report: error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
