"""`wsi-prognosis review scores=DIR [manifest=CSV] [host=127.0.0.1] [port=8765]`: serve a scored batch."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from wsi_prognosis.errors import ConfigurationError

log = logging.getLogger(__name__)


def _int(value: Any, key: str, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum is not None and value > maximum):
        bound = f" and <= {maximum}" if maximum is not None else ""
        raise ConfigurationError(f"{key}={value!r}: must be an integer >= {minimum}{bound}.")
    return value


def _float(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigurationError(f"{key}={value!r}: must be a number >= 0.")
    return float(value)


@dataclass(frozen=True)
class ReviewConfig:
    scores: Path
    manifest: Path | None
    host: str
    port: int
    workers: int
    slide_cache: int
    tile_cache_mb: int
    jpeg_quality: int
    thumbnail_px: int
    per_page: int
    check_slides: bool
    allowed_hosts: tuple[str, ...] | None
    qc: Any  # QcThresholds

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> ReviewConfig:
        from wsi_prognosis.review.index import QcThresholds

        c = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(c, dict)
        qc = dict(c.get("qc") or {})
        unknown = set(qc) - {"blur_below", "pen_above", "little_tissue_mm2", "little_tissue_share"}
        if unknown:
            raise ConfigurationError(f"qc: unknown key(s) {sorted(unknown)}; known: blur_below, pen_above, little_tissue_mm2, little_tissue_share.")
        host = str(c.get("host") or "")
        if not host:
            raise ConfigurationError("host is empty. Fix: host=127.0.0.1 (this machine) or host=0.0.0.0 (every interface).")
        allowed = c.get("allowed_hosts")
        if allowed is None:
            from wsi_prognosis.review.app import LOCAL_HOST_NAMES
            from wsi_prognosis.review.server import LOCAL_HOSTS

            allowed_hosts = LOCAL_HOST_NAMES if host in LOCAL_HOSTS else None
        elif isinstance(allowed, list) and all(isinstance(a, str) and a for a in allowed):
            allowed_hosts = tuple(allowed)
        else:
            raise ConfigurationError(f"allowed_hosts={allowed!r}: a list of host names, e.g. [review.lab.local], or null.")
        manifest = c.get("manifest")
        if manifest is not None and not Path(str(manifest)).is_file():
            raise ConfigurationError(f"manifest={manifest}: not a file. Fix: a manifest CSV, or omit manifest=.")
        return cls(
            scores=Path(str(c["scores"])), manifest=None if manifest is None else Path(str(manifest)), host=host,
            port=_int(c.get("port", 8765), "port", 1, 65535), workers=_int(c.get("workers", 2), "workers", 0, 64),
            slide_cache=_int(c.get("slide_cache", 16), "slide_cache", 1),
            tile_cache_mb=_int(c.get("tile_cache_mb", 256), "tile_cache_mb", 1),
            jpeg_quality=_int(c.get("jpeg_quality", 80), "jpeg_quality", 10, 95),
            thumbnail_px=_int(c.get("thumbnail_px", 160), "thumbnail_px", 16, 1024),
            per_page=_int(c.get("per_page", 100), "per_page", 10, 1000),
            check_slides=bool(c.get("check_slides", True)), allowed_hosts=allowed_hosts,
            qc=QcThresholds(**{k: _float(v, f"qc.{k}") for k, v in qc.items()}),
        )


def run(cfg: DictConfig) -> None:
    """Index the batch, bind the port (clear error if taken), serve until stopped."""
    from wsi_prognosis.review.app import ReviewOptions, create_app
    from wsi_prognosis.review.deepzoom import TileService
    from wsi_prognosis.review.index import build_index
    from wsi_prognosis.review.server import bind, remote_warning, serve

    config = ReviewConfig.from_cfg(cfg)
    index = build_index(config.scores, config.manifest, config.qc)
    sock = bind(config.host, config.port)  # before the worker pool: a taken port fails at once
    warning = remote_warning(config.host)
    if warning:
        print(f"wsi-prognosis review: WARNING: {warning}", flush=True)
    tiles = TileService(workers=config.workers, slide_cache=config.slide_cache, tile_cache_mb=config.tile_cache_mb,
                        quality=config.jpeg_quality)
    try:
        tiles.warm_up()
        if config.check_slides:
            index.check_all_in_background()
        app = create_app(index, tiles, ReviewOptions(thumbnail_px=config.thumbnail_px, per_page=config.per_page,
                                                     allowed_hosts=config.allowed_hosts))
        shown = "127.0.0.1" if config.host in ("0.0.0.0", "::") else config.host
        print(f"wsi-prognosis review: {len(index.entries)} slide(s) from {config.scores} at "
              f"http://{shown}:{config.port}/  (Ctrl+C stops)", flush=True)
        serve(app, sock)
    finally:
        index.stop()
        tiles.close()
        sock.close()
