"""`wsi-prognosis score bundle=DIR manifest=CSV|FOLDER out=DIR [tiles=DIR]`: validate, score, record.

With `claims.enabled` (the default) several `score` runs may share one `out` folder: each slide is
scored by one of them and the tables are written once (`scoring.shared`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from wsi_prognosis.errors import ConfigurationError

log = logging.getLogger(__name__)


def _int(value: Any, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{key}={value!r}: must be an integer >= {minimum}.")
    return value


def engine_config(section: Any):
    """`engine:` mapping -> EngineConfig (shared by score and calibrate)."""
    from wsi_prognosis.scoring.engine import EngineConfig

    section = dict(section or {})
    known = {"device", "batch_tiles", "workers", "prefetch_batches", "bf16", "channels_last"}
    unknown = set(section) - known
    if unknown:
        raise ConfigurationError(f"engine: unknown key(s) {sorted(unknown)}; known: {sorted(known)}.")
    return EngineConfig(
        device=str(section.get("device", "auto")),
        batch_tiles=_int(section.get("batch_tiles", 512), "engine.batch_tiles", 1),
        workers=_int(section.get("workers", 4), "engine.workers", 0),
        prefetch_batches=_int(section.get("prefetch_batches", 4), "engine.prefetch_batches", 1),
        bf16=bool(section.get("bf16", True)),
        channels_last=bool(section.get("channels_last", True)),
    )


@dataclass(frozen=True)
class ScoreStageConfig:
    bundle: Path
    manifest: Path
    out: Path
    cohort: str | None
    options: Any  # ScoreOptions
    shift: Any = None  # scoring.shift.ShiftLimits: the domain-shift check's limits

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> ScoreStageConfig:
        from wsi_prognosis.claims import ClaimSettings
        from wsi_prognosis.scoring.aggregate import PATIENT_AGGREGATIONS
        from wsi_prognosis.scoring.batch import ScoreOptions
        from wsi_prognosis.scoring.shard import Shard
        from wsi_prognosis.scoring.shift import ShiftLimits

        c = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(c, dict)
        aggregation = c.get("patient_aggregation")
        if aggregation is not None and aggregation not in PATIENT_AGGREGATIONS:
            raise ConfigurationError(f"patient_aggregation={aggregation!r}: one of {list(PATIENT_AGGREGATIONS)}.")
        exports = dict(c.get("exports") or {})
        tiles = c.get("tiles")
        if tiles is not None and not Path(str(tiles)).is_dir():
            raise ConfigurationError(f"tiles={tiles}: not a folder. Fix: the out= folder of `tile`, or omit tiles=.")
        features = c.get("features")
        if features is not None and not Path(str(features)).is_dir():
            raise ConfigurationError(f"features={features}: not a folder. Fix: the out= folder of `embed`, or omit "
                                     "features= (slides are then embedded on the fly).")
        shift = ShiftLimits.from_mapping(c.get("shift"))
        options = ScoreOptions(
            tiles=None if tiles is None else Path(str(tiles)),
            features=None if features is None else Path(str(features)),
            encoder_weights={str(k): str(v) for k, v in (c.get("encoder_weights") or {}).items()},
            patient_aggregation=aggregation,
            shard=Shard.parse(c.get("shard")),
            engine=engine_config(c.get("engine")),
            tiling_workers=_int(c.get("tiling_workers", 2), "tiling_workers", 1),
            retry_failed=bool(c.get("retry_failed", True)),
            heatmap=bool(exports.get("heatmap", True)),
            geojson=bool(exports.get("geojson", True)),
            heatmap_max_px=_int(exports.get("heatmap_max_px", 1024), "exports.heatmap_max_px", 16),
            claims=ClaimSettings.from_mapping(c.get("claims")),  # several workers may share `out`
            shift=shift,
        )
        cohort = c.get("cohort")
        return cls(Path(str(c["bundle"])), Path(str(c["manifest"])), Path(str(c["out"])),
                   None if cohort is None else str(cohort), options, shift=shift)


def run_record_extra(bundle: Any, manifest: Path, cohort: str | None, options: Any, result: Any) -> dict[str, Any]:
    """What `merge` and readers of the run record need besides the resolved config."""
    from wsi_prognosis.provenance import file_sha256
    from wsi_prognosis.scoring.records import model_key

    return {
        "bundle_id": bundle.id, "model_key": model_key(bundle), "bundle_dir": str(bundle.dir),
        "thresholds": bundle.thresholds,
        "members": [m.name for m in bundle.members], "patient_aggregation": options.patient_aggregation,
        "manifest": str(manifest.resolve()), "manifest_sha256": file_sha256(manifest) if manifest.is_file() else None,
        "cohort": cohort, "shard": str(options.shard), "device": str(options.engine.torch_device()),
        "slides": len(result.slides), "scored": result.n_scored, "skipped": result.n_skipped,
        "failed": int((result.slides["status"] != "ok").sum()) if len(result.slides) else 0,
        "tiles_scored": result.stats.tiles, "tiles_per_s": round(result.stats.tiles_per_s, 1),
        # this worker's share when several shared `out` (claims); scored/skipped/tiles above are this worker's too
        "claims": result.claims,
    }


def run(cfg: DictConfig):
    """Score the manifest; return the ScoreResult (tables are in out/)."""
    from wsi_prognosis.ensemble import load_bundle
    from wsi_prognosis.provenance import write_run_record
    from wsi_prognosis.scoring.aggregate import resolve_patient_aggregation
    from wsi_prognosis.scoring.batch import score_manifest
    from wsi_prognosis.scoring.merge import load_score_manifest

    config = ScoreStageConfig.from_cfg(cfg)
    bundle = load_bundle(config.bundle)  # refuses tampered weights before any work
    if bundle.thresholds is None:
        log.warning("bundle %s has no thresholds (not calibrated): risk_group stays empty. Fix: `wsi-prognosis calibrate`.", bundle.id)
    manifest = load_score_manifest(config.manifest, config.cohort)
    options = replace(config.options, patient_aggregation=resolve_patient_aggregation(
        bundle.aggregation, config.options.patient_aggregation))
    result = score_manifest(bundle, manifest, config.out, options)  # with the shift check (options.shift)
    shard = config.options.shard
    stage = "score" if not shard.sharded else f"score.{shard.label}"
    inputs = {"bundle.json": config.bundle / "bundle.json"}
    if config.manifest.is_file():
        inputs["manifest"] = config.manifest
    write_run_record(config.out, stage, OmegaConf.to_container(cfg, resolve=True), inputs=inputs,
                     extra=run_record_extra(bundle, config.manifest, config.cohort, options, result))
    failed = int((result.slides["status"] != "ok").sum())
    log.info("%s: %d slide(s), %d failed -> %s", stage, len(result.slides), failed, result.scores_csv)
    if shard.sharded:
        log.info("shard %s done; when every shard is: wsi-prognosis merge out=%s", shard, config.out)
    return result
