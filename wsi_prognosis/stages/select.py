"""`wsi-prognosis select runs=DIR out=BUNDLE_DIR [k=5]` — best k members per resolution -> a bundle.

Writes the bundle (bundle.json + members/*.pt, see ensemble/bundle.py), `selection.csv` (every
candidate, its metric, rank and whether it was kept) and run_select.json.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from wsi_prognosis.errors import ConfigurationError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SelectConfig:
    runs: Path
    out: Path
    k: int
    resolutions: tuple[str, ...]
    metric: str | None
    allow_fewer: bool
    aggregation: dict[str, Any]
    smoothing: int = 0


def parse_config(cfg: DictConfig) -> SelectConfig:
    for key in ("runs", "out"):
        if OmegaConf.is_missing(cfg, key):
            raise ConfigurationError(f"{key}: required. Usage: wsi-prognosis select runs=DIR out=BUNDLE_DIR [k=5].")
    c = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(c, dict)
    k = c.get("k")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ConfigurationError(f"k={k!r}: must be an integer >= 1 (members per resolution).")
    metric = c.get("metric")
    if metric not in (None, "c_index", "auc_extremes"):
        raise ConfigurationError(f"metric={metric!r}: use c_index, auc_extremes or null (each member's monitor).")
    aggregation = dict(c.get("aggregation") or {})
    from wsi_prognosis.scoring.aggregate import MEMBER_AGGREGATIONS

    if aggregation.get("members", "mean") not in MEMBER_AGGREGATIONS or aggregation.get("patient", "mean") not in ("mean", "max"):
        raise ConfigurationError(f"aggregation={aggregation}: members one of {list(MEMBER_AGGREGATIONS)}; patient mean or max.")
    smoothing = c.get("smoothing", 0)
    if not isinstance(smoothing, int) or isinstance(smoothing, bool) or smoothing < 0:
        raise ConfigurationError(f"smoothing={smoothing!r}: must be an integer >= 0 (epochs either side of the best).")
    resolutions = c.get("resolutions") or []
    if isinstance(resolutions, str):
        resolutions = [resolutions]
    return SelectConfig(runs=Path(str(c["runs"])), out=Path(str(c["out"])), k=k, resolutions=tuple(map(str, resolutions)),
                        metric=metric, allow_fewer=bool(c.get("allow_fewer", True)), aggregation=aggregation,
                        smoothing=smoothing)


def run(cfg: DictConfig) -> dict[str, Any]:
    config = parse_config(cfg)
    from wsi_prognosis.atomic import write_text_atomic
    from wsi_prognosis.ensemble.bundle import Member, write_bundle
    from wsi_prognosis.ensemble.select import discover_members, merged_tile_spec, select_members
    from wsi_prognosis.provenance import write_run_record

    candidates, skipped = discover_members(config.runs, config.metric, config.smoothing)
    for note in skipped:
        log.warning("skipped %s", note)
    chosen, ranking = select_members(candidates, config.k, list(config.resolutions), allow_fewer=config.allow_fewer)
    members = []
    for c in chosen:
        best = c.metrics.get("best") or {}
        tuning = {key: best.get(key) for key in ("c_index", "auc_extremes", "epoch", "n_slides", "n_extremes")}
        tuning["ranked_by"] = c.metric
        tuning["ranking_value"] = c.value
        tuning["smoothing"] = config.smoothing
        members.append((Member(
            name=c.name, resolution=c.resolution, arch=c.arch, weights="", sha256="",
            preprocessing=c.record["preprocessing"], pooling=c.record["pooling"], tuning_metrics=tuning,
            encoder=c.record.get("encoder"), head=c.record.get("head"),
            seed=c.record.get("seed"),
        ), c.weights))
    aggregation = dict(config.aggregation)
    if aggregation.get("members") == "weighted":
        from wsi_prognosis.scoring.aggregate import member_weights

        aggregation["weights"] = member_weights({c.name: c.value for c in chosen})
    bundle = write_bundle(
        config.out, members, tile_spec=merged_tile_spec(chosen), aggregation=aggregation,
        training_configs={c.name: c.record.get("config", {}) for c in chosen},
    )
    write_text_atomic(config.out / "selection.csv", ranking.to_csv(index=False))
    for res in config.resolutions:
        kept = ranking[(ranking["resolution"] == res) & ranking["selected"]]
        print(f"{res}: kept {len(kept)} of {int((ranking['resolution'] == res).sum())} members: "
              + ", ".join(f"{n} ({v:.3f})" for n, v in zip(kept["name"], kept["value"])), flush=True)
    print(f"bundle {bundle.id} -> {config.out}", flush=True)
    write_run_record(config.out, "select", OmegaConf.to_container(cfg, resolve=True), seed=None,
                     extra={"bundle_id": bundle.id, "members": [m.name for m in bundle.members], "skipped": skipped})
    return {"bundle_id": bundle.id, "members": [m.name for m in bundle.members]}
