"""A cheap content fingerprint of a slide file, to notice when a tiled slide has changed.

Never a hash of the whole file (slides are gigabytes): OpenSlide's `openslide.quickhash-1`
where the format has one, else the file size plus sha256 of its first and last MiB.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from wsi_prognosis.errors import SlideOpenError

EDGE_BYTES = 1 << 20


def edge_fingerprint(path: str | Path) -> str:
    """`size-<bytes>-sha256-<hex>` over the first and last MiB of the file."""
    path = Path(path)
    size = os.path.getsize(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(EDGE_BYTES))
        if size > EDGE_BYTES:
            handle.seek(max(EDGE_BYTES, size - EDGE_BYTES))
            digest.update(handle.read(EDGE_BYTES))
    return f"size-{size}-sha256-{digest.hexdigest()}"


def slide_fingerprint(path: str | Path) -> str:
    """`quickhash1-<hex>` from OpenSlide where present, else `edge_fingerprint(path)`.

    Raises `SlideOpenError` when the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise SlideOpenError(f"{path}: slide file not found. Fix: correct the manifest's `path`.")
    import openslide

    try:
        with openslide.OpenSlide(str(path)) as slide:
            quickhash = slide.properties.get("openslide.quickhash-1")
    except (openslide.OpenSlideError, OSError):
        quickhash = None
    return f"quickhash1-{quickhash}" if quickhash else edge_fingerprint(path)
