"""`wsi-prognosis calibrate bundle=DIR (manifest=CSV [tiles=DIR] | scores=CSV) [clinical=CSV] out=BUNDLE_DIR`.

Scores the tuning cohort with the bundle (or reads its scores), fits the two cut-points and
writes them, with the calibration record (method, shares, bootstrap CIs, inputs), into a new
bundle at out=. The input bundle is untouched; every later `score` applies the thresholds as is.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from wsi_prognosis.errors import ConfigurationError, ManifestError

log = logging.getLogger(__name__)

LEVELS = ("patient", "slide")


@dataclass(frozen=True)
class CalibrateConfig:
    bundle: Path
    out: Path
    manifest: Path | None
    clinical: Path | None
    tiles: Path | None
    scores: Path | None
    cohort: str
    level: str
    patient_aggregation: str | None
    fit: dict[str, Any]
    engine: Any
    tiling_workers: int
    features: Path | None = None
    encoder_weights: dict[str, str] | None = None

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> CalibrateConfig:
        from wsi_prognosis.calibration import METHODS
        from wsi_prognosis.scoring.aggregate import PATIENT_AGGREGATIONS
        from wsi_prognosis.stages.score import _int, engine_config

        c = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(c, dict)

        def path(key: str) -> Path | None:
            return None if c.get(key) is None else Path(str(c[key]))

        if (c.get("manifest") is None) == (c.get("scores") is None):
            raise ConfigurationError(
                "give exactly one of manifest= (score the tuning cohort here) or scores= (reuse its scores.csv)."
            )
        fit = dict(c.get("calibration") or {})
        known = {"method", "shares", "min_share", "grid", "require_order", "low", "high", "n_bootstrap", "ci_level", "seed"}
        if set(fit) - known:
            raise ConfigurationError(f"calibration: unknown key(s) {sorted(set(fit) - known)}; known: {sorted(known)}.")
        if fit.get("method", "quantile") not in METHODS:
            raise ConfigurationError(f"calibration.method={fit.get('method')!r}: one of {list(METHODS)}.")
        if fit.get("method") == "survival" and c.get("clinical") is None:
            raise ConfigurationError("calibration.method=survival needs clinical=CSV (patient_id, time, event).")
        level = str(c.get("level", "patient"))
        if level not in LEVELS:
            raise ConfigurationError(f"level={level!r}: one of {list(LEVELS)}.")
        aggregation = c.get("patient_aggregation")
        if aggregation is not None and aggregation not in PATIENT_AGGREGATIONS:
            raise ConfigurationError(f"patient_aggregation={aggregation!r}: one of {list(PATIENT_AGGREGATIONS)}.")
        bundle, out = path("bundle"), path("out")
        assert bundle is not None and out is not None
        if bundle.resolve() == out.resolve():
            raise ConfigurationError(f"out={out} is the input bundle; bundles are immutable. Fix: out=ANOTHER_FOLDER.")
        return cls(bundle=bundle, out=out, manifest=path("manifest"), clinical=path("clinical"), tiles=path("tiles"),
                   scores=path("scores"), cohort=str(c.get("cohort", "tuning")), level=level,
                   patient_aggregation=aggregation, fit=fit, engine=engine_config(c.get("engine")),
                   tiling_workers=_int(c.get("tiling_workers", 2), "tiling_workers", 1), features=path("features"),
                   encoder_weights={str(k): str(v) for k, v in (c.get("encoder_weights") or {}).items()})


def _tuning_table(config: CalibrateConfig, bundle: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The tuning cohort's scores at the configured level, and the inputs they came from."""
    from wsi_prognosis.provenance import file_sha256
    from wsi_prognosis.scoring.aggregate import patient_table
    from wsi_prognosis.scoring.records import model_key

    if config.scores is not None:
        if not config.scores.is_file():
            raise ConfigurationError(f"scores={config.scores}: not found. Fix: a scores.csv from `wsi-prognosis score`.")
        table = pd.read_csv(config.scores, dtype={"patient_id": str, "slide_id": str, "cohort": str},
                            float_precision="round_trip")  # exact scores: thresholds refit identically
        for record in (config.scores.parent / "run_score.json", config.scores.parent / "run_merge.json"):
            run = json.loads(record.read_text()) if record.is_file() else {}
            same = (run.get("model_key") == model_key(bundle)) if "model_key" in run else run.get("bundle_id") in (None, bundle.id)
            if not same:  # the same members under another bundle id (e.g. a calibrated copy) are fine
                raise ConfigurationError(
                    f"{config.scores}: scored with bundle {run.get('bundle_id')}, whose members differ from bundle "
                    f"{bundle.id}. Fix: rescore with this bundle."
                )
        source = {"scores": str(config.scores), "scores_sha256": file_sha256(config.scores)}
    else:
        from wsi_prognosis.scoring.batch import ScoreOptions, score_manifest
        from wsi_prognosis.scoring.merge import load_score_manifest

        assert config.manifest is not None
        manifest = load_score_manifest(config.manifest, config.cohort)
        work = config.out / "calibration" / "scoring"
        # claims=None: one worker scores the tuning cohort into this new bundle's own folder (a calibration is
        # one fit; several `calibrate` runs on one out= would race on the bundle, not share its slides)
        options = ScoreOptions(tiles=config.tiles, patient_aggregation=config.patient_aggregation, engine=config.engine,
                               tiling_workers=config.tiling_workers, heatmap=False, geojson=False,
                               features=config.features, encoder_weights=config.encoder_weights or {}, claims=None)
        table = score_manifest(bundle, manifest, work, options).slides
        source = {"manifest": str(config.manifest),
                  "manifest_sha256": file_sha256(config.manifest) if config.manifest.is_file() else None,
                  "scored_in": str(work)}
    table = table[table["cohort"].astype(str) == config.cohort]
    if "status" in table.columns:
        failed = int((table["status"] != "ok").sum())
        if failed:
            log.warning("%d tuning slide(s) failed to score and are left out", failed)
        table = table[table["status"] == "ok"]
    is_patient_table = "slide_id" not in table.columns
    if config.level == "patient" and not is_patient_table:
        table = patient_table(table, str(config.patient_aggregation), None)
    elif config.level == "slide" and is_patient_table:
        raise ConfigurationError(f"level=slide needs slide scores; {config.scores} is a patient table.")
    if table.empty:
        raise ManifestError(f"no scored {config.cohort!r} rows to calibrate on. Fix: check cohort= and the scores.")
    return table.reset_index(drop=True), source


def _shift_reference(config: CalibrateConfig, table: pd.DataFrame, shares: dict[str, float]) -> dict[str, Any]:
    """The tuning reference of the domain-shift check (`scoring.shift.build_reference`): the fitted
    scores and shares, and the tile colour / sharpness statistics from the tuning slides' score records."""
    from wsi_prognosis.scoring.shift import build_reference, cohort_tile_stats

    records_dir = config.scores.parent if config.scores is not None else config.out / "calibration" / "scoring"
    stats = cohort_tile_stats(records_dir, config.cohort, table["patient_id"].astype(str).tolist())
    if not stats:
        log.warning("no tile statistics for the %s slides in %s: the shift reference holds the scores only",
                    config.cohort, records_dir)
    return build_reference(table["score"].to_numpy(float), level=config.level, shares=shares, cohort=config.cohort,
                           slide_stats=stats)


def run(cfg: DictConfig):
    """Fit thresholds on the tuning cohort; write the calibrated bundle; return it."""
    from wsi_prognosis.calibration import assign_risk_groups, fit_thresholds
    from wsi_prognosis.cohort import read_clinical
    from wsi_prognosis.ensemble import derive_bundle, load_bundle
    from wsi_prognosis.provenance import file_sha256, write_run_record
    from wsi_prognosis.scoring.aggregate import write_table

    from dataclasses import replace

    from wsi_prognosis.scoring.aggregate import resolve_patient_aggregation

    config = CalibrateConfig.from_cfg(cfg)
    bundle = load_bundle(config.bundle)
    config = replace(config, patient_aggregation=resolve_patient_aggregation(bundle.aggregation, config.patient_aggregation))
    table, source = _tuning_table(config, bundle)
    fit = dict(config.fit)
    method = fit.pop("method", "quantile")
    time = event = None
    if config.clinical is not None:
        clinical = read_clinical(config.clinical)
        table = table.merge(clinical[["patient_id", "time", "event"]], on="patient_id", how="left")
        missing = table["time"].isna()
        if missing.any():
            log.warning("%d tuning row(s) have no clinical record%s", int(missing.sum()),
                        "; left out of the survival fit" if method == "survival" else "")
            if method == "survival":
                table = table[~missing].reset_index(drop=True)
        time, event = table["time"].to_numpy(float), table["event"].fillna(0).to_numpy(int)
        source.update(clinical=str(config.clinical), clinical_sha256=file_sha256(config.clinical))
    thresholds = fit_thresholds(table["score"].to_numpy(float), time, event, method, **fit)
    table["risk_group"] = assign_risk_groups(table["score"].to_numpy(float), thresholds)
    per_group: dict[str, Any] = {}
    for group in ("good", "uncertain", "poor"):
        rows = table[table["risk_group"] == group]
        per_group[group] = {"n": int(len(rows))}
        if "event" in rows.columns:
            per_group[group]["events"] = int(rows["event"].fillna(0).sum())
    calibration = {
        **thresholds.to_dict(),
        "cohort": config.cohort, "level": config.level, "patient_aggregation": config.patient_aggregation,
        "groups": per_group, "parent_bundle_id": bundle.id, "inputs": source,
        "rule": "score < low -> good; low <= score < high -> uncertain; score >= high -> poor",
    }
    calibration["reference"] = _shift_reference(config, table, thresholds.shares)
    derived = derive_bundle(bundle, config.out, thresholds=thresholds.as_bundle(), calibration=calibration)
    write_table(table, config.out / "calibration" / f"tuning_{config.level}_scores.csv")
    write_run_record(config.out, "calibrate", OmegaConf.to_container(cfg, resolve=True),
                     inputs={"bundle.json": config.bundle / "bundle.json"},
                     seed=int(fit.get("seed", 0)),
                     extra={"parent_bundle_id": bundle.id, "bundle_id": derived.id,
                            "thresholds": derived.thresholds, "shares": thresholds.shares, "ci": thresholds.ci})
    log.info("thresholds low=%.4f high=%.4f (%s on %d %s(s) of %s; shares %s) -> bundle %s at %s",
             thresholds.low, thresholds.high, method, thresholds.n, config.level, config.cohort,
             {k: round(v, 3) for k, v in thresholds.shares.items()}, derived.id, config.out)
    return derived
