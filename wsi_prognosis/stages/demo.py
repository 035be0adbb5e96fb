"""`wsi-prognosis demo out=DIR`: the whole flow on a synthetic cohort, as a user would type it.

Each step runs the real stage command in a subprocess (the same commands the README shows), so
the demo exercises exactly what users run, including the Hydra sweep that trains the ensemble.
A step whose run record already exists is skipped, so a rerun resumes where it stopped; each
stage is itself resumable for the work inside it.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from wsi_prognosis.errors import ConfigurationError, WsiPrognosisError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoStep:
    name: str
    args: tuple[str, ...]
    done_marker: Path  # the stage's run record: present only when the stage finished


@dataclass(frozen=True)
class DemoConfig:
    out: Path
    seed: int
    members_per_resolution: int
    synth_overrides: tuple[str, ...]
    tile_overrides: tuple[str, ...]
    train_overrides: tuple[str, ...]
    calibrate_overrides: tuple[str, ...]
    score_overrides: tuple[str, ...]
    analyze_overrides: tuple[str, ...]

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> "DemoConfig":
        if int(cfg.members_per_resolution) < 1:
            raise ConfigurationError(f"members_per_resolution={cfg.members_per_resolution}: must be at least 1.")

        def overrides(key: str) -> tuple[str, ...]:
            return tuple(str(item) for item in OmegaConf.to_container(cfg.overrides[key]) or [])

        return cls(
            out=Path(str(cfg.out)).resolve(),
            seed=int(cfg.seed),
            members_per_resolution=int(cfg.members_per_resolution),
            synth_overrides=overrides("synth"),
            tile_overrides=overrides("tile"),
            train_overrides=overrides("train"),
            calibrate_overrides=overrides("calibrate"),
            score_overrides=overrides("score"),
            analyze_overrides=overrides("analyze"),
        )


def plan(config: DemoConfig) -> list[DemoStep]:
    """The demo's commands, in order, with the file that proves each finished."""
    out = config.out
    cohort, tiles, runs = out / "cohort", out / "tiles", out / "runs"
    bundle, calibrated, scores, analysis = out / "bundle", out / "bundle_calibrated", out / "scores", out / "analysis"
    manifest, clinical = cohort / "manifest.csv", cohort / "clinical.csv"
    seeds = ",".join(str(config.seed + i) for i in range(config.members_per_resolution))
    return [
        DemoStep("synth", ("synth", f"out={cohort}", "preset=demo", f"seed={config.seed}", *config.synth_overrides),
                 cohort / "run_synth.json"),
        DemoStep("tile", ("tile", f"manifest={manifest}", f"out={tiles}", *config.tile_overrides),
                 tiles / "run_tile.json"),
        DemoStep("train", ("train", "--multirun", f"manifest={manifest}", f"clinical={clinical}", f"tiles={tiles}",
                           f"out={runs}", "resolution=10x,40x", f"seed={seeds}", *config.train_overrides),
                 runs / "sweep_done.json"),
        DemoStep("select", ("select", f"runs={runs}", f"out={bundle}", f"k={config.members_per_resolution}"),
                 bundle / "run_select.json"),
        DemoStep("calibrate", ("calibrate", f"bundle={bundle}", f"manifest={manifest}", f"clinical={clinical}",
                               f"tiles={tiles}", f"out={calibrated}", *config.calibrate_overrides),
                 calibrated / "run_calibrate.json"),
        DemoStep("score", ("score", f"bundle={calibrated}", f"manifest={manifest}", f"tiles={tiles}", f"out={scores}",
                           *config.score_overrides),
                 scores / "run_score.json"),
        DemoStep("analyze", ("analyze", f"scores={scores / 'scores.csv'}", f"clinical={clinical}", f"out={analysis}",
                             *config.analyze_overrides),
                 analysis / "run_analyze.json"),
    ]


def _run_step(step: DemoStep, index: int, total: int) -> float:
    command = [sys.executable, "-m", "wsi_prognosis.cli", *step.args]
    print(f"[{index}/{total}] {step.name}: wsi-prognosis {shlex.join(step.args)}", flush=True)
    started = time.monotonic()
    result = subprocess.run(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if result.returncode != 0:
        raise WsiPrognosisError(
            f"demo step '{step.name}' failed (exit {result.returncode}); its log is in {step.done_marker.parent}. "
            "Fix the reported problem and rerun the demo: finished steps are skipped."
        )
    if step.name == "train":  # a sweep has no single run record; mark the whole sweep done
        step.done_marker.write_text(json.dumps({"finished": True}) + "\n")
    return time.monotonic() - started


def _headline(analysis_dir: Path) -> str:
    summary = json.loads((analysis_dir / "summary.json").read_text())
    validation = summary["cohorts"].get("validation", {})
    poor = (validation.get("hr") or {}).get("poor_vs_good") or {}
    if poor.get("hr") is None:
        return "validation cohort: poor vs good hazard ratio not estimable (see report)"
    return (f"validation cohort: poor vs good prognosis HR {poor['hr']:.2f} "
            f"(95 % CI {poor['ci_low']:.2f}-{poor['ci_high']:.2f}, p={poor['p']:.2g})")


def run(cfg: DictConfig) -> dict[str, float]:
    config = DemoConfig.from_cfg(cfg)
    config.out.mkdir(parents=True, exist_ok=True)
    steps = plan(config)
    timings: dict[str, float] = {}
    started = time.monotonic()
    for index, step in enumerate(steps, start=1):
        if step.done_marker.exists():
            print(f"[{index}/{len(steps)}] {step.name}: already done ({step.done_marker.name}), skipped", flush=True)
            continue
        timings[step.name] = _run_step(step, index, len(steps))
        print(f"[{index}/{len(steps)}] {step.name}: done in {timings[step.name]:.0f} s", flush=True)
    analysis = steps[-1].done_marker.parent
    print(f"\nDemo finished in {time.monotonic() - started:.0f} s.")
    print(f"Report: {analysis / 'report.html'}")
    print(_headline(analysis))
    return timings
