"""`wsi-prognosis embed tiles=DIR out=DIR [manifest=CSV] [encoder=lite0]`: tile stores -> feature stores.

With `claims.enabled` (the default) several `embed` runs may share one `out` folder: each slide is
embedded by one of them and embed_summary.csv is written once (`features.embed.embed_slides`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from wsi_prognosis.errors import ConfigurationError

log = logging.getLogger(__name__)


def _rows(tiles: Path, manifest: Path | None, cohort: str | None) -> list[dict[str, Any]]:
    """Slides to embed: the manifest's rows, or every tile store in `tiles` (its recorded slide path)."""
    if manifest is not None:
        from wsi_prognosis.cohort.manifest import read_manifest_rows

        rows = read_manifest_rows(manifest)
        if cohort is not None:
            rows = [r for r in rows if r["cohort"] == cohort]
            if not rows:
                raise ConfigurationError(f"{manifest}: no rows with cohort={cohort!r}. Fix: check the name or drop cohort=.")
        return rows
    from wsi_prognosis.tiling import open_tile_store

    rows = []
    for path in sorted(tiles.glob("*.h5")):
        with open_tile_store(path) as store:
            rows.append({"slide_id": path.stem, "patient_id": path.stem, "path": store.source_path, "cohort": ""})
    if not rows:
        raise ConfigurationError(f"tiles={tiles}: no tile stores (*.h5). Fix: run `wsi-prognosis tile` first.")
    return rows


def options_from_cfg(c: dict[str, Any]):
    """The `embed:` keys -> EmbedOptions (shared by `embed` and the demo's checks)."""
    from wsi_prognosis.encoders.runtime import EmbedderConfig
    from wsi_prognosis.features.embed import EmbedOptions
    from wsi_prognosis.features.stain import METHODS
    from wsi_prognosis.models.augment import AugmentConfig

    if c.get("stain_norm", "none") not in METHODS:
        raise ConfigurationError(f"stain_norm={c.get('stain_norm')!r}: one of {list(METHODS)}.")
    views = c.get("views", 0)
    if isinstance(views, bool) or not isinstance(views, int) or views < 0:
        raise ConfigurationError(f"views={views!r}: an integer >= 0.")
    encoder = dict(c.get("encoder") or {})
    resolutions = c.get("resolutions")
    return EmbedOptions(
        encoder=str(encoder.get("name", "lite0")), weights=encoder.get("weights"),
        embedder=EmbedderConfig(runtime=str(c.get("runtime", "auto")), device=str(c.get("device", "auto")),
                                batch_tiles=int(c.get("batch_tiles", 64)), bf16=bool(c.get("bf16", True)),
                                channels_last=bool(c.get("channels_last", True)), threads=int(c.get("threads", 0))),
        resolutions=None if resolutions is None else tuple(str(r) for r in resolutions), views=views,
        view_cohorts=tuple(str(v) for v in c.get("view_cohorts") or ()), augment=AugmentConfig(**(c.get("augment") or {})),
        stain_norm=str(c.get("stain_norm", "none")), train_cohort=str(c.get("train_cohort", "training")),
        remake=bool(c.get("remake", False)), verify_slides=bool(c.get("verify_slides", True)), seed=int(c.get("seed", 0)),
    )


def run(cfg: DictConfig):
    """Embed the slides; write the summary and run record in the feature folder; return the EmbedResult."""
    import pandas as pd

    from wsi_prognosis.claims import ClaimSettings
    from wsi_prognosis.features.embed import embed_slides
    from wsi_prognosis.provenance import write_run_record
    from wsi_prognosis.scoring.shard import Shard, select_shard

    c = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(c, dict)
    tiles, out = Path(str(c["tiles"])), Path(str(c["out"]))
    if not tiles.is_dir():
        raise ConfigurationError(f"tiles={tiles}: not a folder. Fix: the out= folder of `wsi-prognosis tile`.")
    options = options_from_cfg(c)
    claims = ClaimSettings.from_mapping(c.get("claims"))  # several workers may share `out`
    manifest = None if c.get("manifest") is None else Path(str(c["manifest"]))
    shard = Shard.parse(c.get("shard"))
    rows = _rows(tiles, manifest, c.get("cohort"))
    rows = select_shard(pd.DataFrame(rows), shard).to_dict("records")
    name = "embed_summary.csv" if not shard.sharded else f"embed_summary.{shard.label}.csv"
    result = embed_slides(rows, tiles, out, options, claims=claims, summary=name)
    assert result.folder is not None and result.spec is not None
    failed = [r for r in result.rows if r["status"] == "failed"]
    inputs = {"manifest": manifest} if manifest is not None else {}
    write_run_record(result.folder, "embed" if not shard.sharded else f"embed.{shard.label}", c, inputs=inputs,
                     seed=options.seed, extra={"feature_set": result.spec.name, "encoder": result.spec.record(),
                                               "slides": len(result.rows), "failed": len(failed),
                                               # this worker's share (several may share `out`: claims)
                                               "embedded": result.embedded, "tiles": result.tiles,
                                               "tiles_per_s": round(result.tiles_per_s, 1), "claims": result.claims})
    for row in failed[:10]:
        log.warning("%s: %s", row["slide_id"], row["error"])
    print(f"embed {result.spec.name}: {len(result.rows)} slide(s), {len(failed)} failed, "
          f"{result.tiles} tiles at {result.tiles_per_s:.1f} tiles/s -> {result.folder}", flush=True)
    return result
