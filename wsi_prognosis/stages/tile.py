"""`wsi-prognosis tile manifest=CSV out=DIR`: validate the config, read the manifest, tile, record.

With `claims.enabled` (the default) several `tile` runs may share one `out` folder: each slide is
tiled by one of them (`wsi_prognosis.claims`, `tiling.shared`).

Imports neither torch nor pandas: tiling runs on machines without a GPU stack and must start fast.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from wsi_prognosis.claims import ClaimSettings
from wsi_prognosis.cohort.manifest import read_manifest_rows
from wsi_prognosis.errors import ConfigurationError
from wsi_prognosis.provenance import write_run_record
from wsi_prognosis.tiling.config import TilingConfig
from wsi_prognosis.tiling.pipeline import tile_rows

log = logging.getLogger(__name__)


def run(cfg: DictConfig):
    """Tile every slide of `cfg.manifest` into `cfg.out`; return the summary rows."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    config = TilingConfig.from_mapping(
        tiling=resolved.get("tiling"), tissue=resolved.get("tissue"), slides=resolved.get("slides"),
        annotations_dir=resolved.get("annotations"),
    )
    workers = resolved.get("workers", 2)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigurationError(f"workers={workers!r}: must be an integer >= 1.")
    claims = ClaimSettings.from_mapping(resolved.get("claims"))  # several workers may share `out`
    manifest_path = Path(str(resolved["manifest"]))
    manifest = read_manifest_rows(manifest_path)  # every manifest error surfaces before any work
    out_dir = Path(str(resolved["out"]))
    summary = tile_rows(manifest, out_dir, config, workers=workers, claims=claims)
    n_failed = sum(row["status"] != "ok" for row in summary)
    write_run_record(out_dir, "tile", resolved, inputs={"manifest": manifest_path},
                     extra={"slides": len(summary), "failed": n_failed})
    if n_failed:
        log.warning("%d of %d slide(s) failed; see %s", n_failed, len(summary), out_dir / "summary.csv")
    return summary
