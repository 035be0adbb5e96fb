"""Member discovery in a runs folder and selection of the best k per resolution by a tuning metric.

DoMore kept the 5 best networks per resolution on the tuning cohort (10 in all); here `k`,
the resolutions and the metric are options.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from wsi_prognosis.errors import BundleError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """A finished training run folder (runs/<member>/)."""

    dir: Path
    name: str
    resolution: str
    arch: str
    metric: str
    value: float                  # the ranking metric on the tuning cohort (NaN if never measured)
    record: dict[str, Any]        # member.json
    metrics: dict[str, Any]       # metrics.json

    @property
    def weights(self) -> Path:
        return self.dir / "best.pt"


def smoothed_metric(metrics: dict[str, Any], key: str, window: int) -> float | None:
    """The tuning metric of the best epoch averaged with `window` epochs either side of it.

    Why: the best epoch's value is the maximum of noisy per-epoch estimates on a small tuning
    cohort, so ranking by it favours the member with the luckiest epoch, not the best network;
    the neighbouring epochs of a member that really learned score high too.
    """
    best = metrics.get("best") or {}
    epochs = [row for row in metrics.get("epochs") or [] if row.get(key) is not None]
    if window <= 0 or not epochs or best.get("epoch") is None:
        return best.get(key)
    at = next((i for i, row in enumerate(epochs) if row.get("epoch") == best["epoch"]), None)
    if at is None:
        return best.get(key)
    values = [float(row[key]) for row in epochs[max(0, at - window):at + window + 1]]
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else best.get(key)


def discover_members(runs_dir: str | Path, metric: str | None = None,
                     smoothing: int = 0) -> tuple[list[Candidate], list[str]]:
    """Finished members under `runs_dir` (searched recursively) and notes on folders skipped.

    A member is finished when member.json, best.pt and metrics.json with `finished: true` exist.
    `metric` (c_index | auc_extremes) defaults to the metric each member was trained to monitor;
    `smoothing` > 0 ranks by `smoothed_metric` over that many epochs either side of the best.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise BundleError(f"{runs_dir}: not a folder. Fix: pass runs=DIR, the out= folder of `wsi-prognosis train`.")
    found: list[Candidate] = []
    skipped: list[str] = []
    for member_json in sorted(runs_dir.rglob("member.json")):
        folder = member_json.parent
        try:
            record = json.loads(member_json.read_text())
            metrics = json.loads((folder / "metrics.json").read_text())
        except (OSError, ValueError) as exc:
            skipped.append(f"{folder}: unreadable member.json/metrics.json ({exc})")
            continue
        if not metrics.get("finished") or not (folder / "best.pt").is_file():
            skipped.append(f"{folder}: not finished (rerun train with resume=true)")
            continue
        key = metric or metrics.get("monitor") or "c_index"
        value = smoothed_metric(metrics, key, smoothing)
        found.append(Candidate(
            dir=folder, name=str(record["name"]), resolution=str(record["resolution"]), arch=str(record["arch"]),
            metric=key, value=float("nan") if value is None else float(value), record=record, metrics=metrics,
        ))
    return found, skipped


def rank_members(candidates: list[Candidate]) -> pd.DataFrame:
    """One row per candidate with its rank within its resolution (1 = best; NaN metrics last, then name)."""
    rows = [{"name": c.name, "resolution": c.resolution, "arch": c.arch, "metric": c.metric, "value": c.value,
             "dir": str(c.dir)} for c in candidates]
    table = pd.DataFrame(rows, columns=["name", "resolution", "arch", "metric", "value", "dir"])
    if table.empty:
        table["rank"] = []
        return table
    table["_missing"] = table["value"].isna()
    table = table.sort_values(["resolution", "_missing", "value", "name"], ascending=[True, True, False, True])
    table["rank"] = table.groupby("resolution").cumcount() + 1
    return table.drop(columns="_missing").reset_index(drop=True)


def select_members(candidates: list[Candidate], k: int, resolutions: list[str], *,
                   allow_fewer: bool = True) -> tuple[list[Candidate], pd.DataFrame]:
    """The best `k` candidates of each resolution, and the full ranking with a `selected` column."""
    if k < 1:
        raise BundleError(f"k={k}: must be at least 1.")
    names = [c.name for c in candidates]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise BundleError(f"member name(s) {duplicated} appear in more than one run folder. Fix: point runs= at one sweep.")
    ranking = rank_members(candidates)
    ranking["selected"] = (ranking["rank"] <= k) & ranking["resolution"].isin(resolutions)
    by_name = {c.name: c for c in candidates}
    chosen: list[Candidate] = []
    for res in resolutions:
        rows = ranking[(ranking["resolution"] == res) & ranking["selected"]]
        if rows.empty:
            raise BundleError(
                f"no finished {res} member found. Fix: train {res} members (resolution={res}) into the runs folder, "
                f"or drop {res} from select's resolutions."
            )
        if len(rows) < k:
            message = f"only {len(rows)} finished {res} member(s) for k={k}"
            if not allow_fewer:
                raise BundleError(f"{message}. Fix: train more members or lower k.")
            log.warning("%s; the bundle keeps all of them", message)
        for name in rows["name"]:
            candidate = by_name[name]
            if math.isnan(candidate.value):
                log.warning("%s: no tuning %s recorded; selected only because too few members have one", name, candidate.metric)
            chosen.append(candidate)
    return chosen, ranking


def merged_tile_spec(chosen: list[Candidate]) -> dict[str, Any]:
    """One tile specification for the bundle; every member's grid must agree with it."""
    spec: dict[str, Any] | None = None
    for c in chosen:
        own = c.record.get("tile_spec") or {}
        if spec is None:
            spec = json.loads(json.dumps(own))
            continue
        for key in ("min_tissue_fraction", "tissue"):
            if own.get(key) != spec.get(key):
                raise BundleError(
                    f"{c.dir / 'member.json'}: tiled with another {key} than {chosen[0].name}. "
                    "Fix: select members trained on the same tiles."
                )
        for res, grid in (own.get("resolutions") or {}).items():
            spec.setdefault("resolutions", {}).setdefault(res, grid)
            if spec["resolutions"][res] != grid:
                raise BundleError(f"{c.dir / 'member.json'}: {res} grid {grid} differs from {spec['resolutions'][res]}.")
    assert spec is not None
    for c in chosen:
        prep = c.record["preprocessing"]
        grid = spec["resolutions"].get(c.resolution)
        if grid is None or int(grid["tile_px"]) != int(prep["tile_px"]) or abs(float(grid["mpp"]) - float(prep["mpp"])) > 1e-9:
            raise BundleError(f"{c.dir / 'member.json'}: preprocessing {prep} does not match the tile spec's {c.resolution} grid {grid}.")
    used = {c.resolution for c in chosen}
    spec["resolutions"] = {r: g for r, g in spec["resolutions"].items() if r in used}
    return spec
