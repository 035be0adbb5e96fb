"""`wsi-prognosis demo out=DIR [cohort=DIR]`: the whole flow, as a user would type it.

synth -> tile -> embed -> train -> select -> calibrate -> plan -> protocol (locked before scoring) ->
score -> analyze under the protocol. With `cohort=DIR` (a folder with manifest.csv and clinical.csv,
slide paths relative to it) the same steps and recipe run on one's own slides, without `synth`; the
cohort is checked first (the four cohorts, enough labelled training patients), before any work.

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
    plan_overrides: tuple[str, ...] = ()
    protocol_overrides: tuple[str, ...] = ()
    embed_overrides: tuple[str, ...] = ()
    cohort: Path | None = None          # one's own cohort folder (manifest.csv, clinical.csv); None: synthetic
    min_labelled: int = 5               # good and poor training patients each, at least (cohort=)

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> "DemoConfig":
        if int(cfg.members_per_resolution) < 1:
            raise ConfigurationError(f"members_per_resolution={cfg.members_per_resolution}: must be at least 1.")

        def overrides(key: str) -> tuple[str, ...]:
            if cfg.overrides.get(key) is None:
                return ()
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
            plan_overrides=overrides("plan"),
            protocol_overrides=overrides("protocol"),
            embed_overrides=overrides("embed"),
            cohort=None if cfg.get("cohort") is None else Path(str(cfg.cohort)).resolve(),
            min_labelled=int(cfg.get("min_labelled", 5)),
        )


def plan(config: DemoConfig) -> list[DemoStep]:
    """The demo's commands, in order, with the file that proves each finished."""
    out = config.out
    cohort = config.cohort or out / "cohort"
    tiles, features, runs = out / "tiles", out / "features", out / "runs"
    bundle, calibrated, scores, analysis = out / "bundle", out / "bundle_calibrated", out / "scores", out / "analysis"
    manifest, clinical = cohort / "manifest.csv", cohort / "clinical.csv"
    study = out / "study"  # the validation study: sample-size plan and the protocol locked before scoring
    seeds = ",".join(str(config.seed + i) for i in range(config.members_per_resolution))
    synth = [] if config.cohort is not None else [
        DemoStep("synth", ("synth", f"out={cohort}", "preset=demo", f"seed={config.seed}", *config.synth_overrides),
                 cohort / "run_synth.json")]
    encoder = next((o.split("=", 1)[1] for o in config.embed_overrides if o.startswith("encoder=")), "lite0")
    return [
        *synth,
        DemoStep("tile", ("tile", f"manifest={manifest}", f"out={tiles}", *config.tile_overrides),
                 tiles / "run_tile.json"),
        DemoStep("embed", ("embed", f"tiles={tiles}", f"out={features}", f"manifest={manifest}", *config.embed_overrides),
                 features / "embed_done.json"),
        DemoStep("train", ("train", "--multirun", f"manifest={manifest}", f"clinical={clinical}", f"tiles={tiles}",
                           f"features={features}", f"encoder={encoder}", f"out={runs}", "resolution=10x,40x",
                           f"seed={seeds}", *config.train_overrides),
                 runs / "sweep_done.json"),
        DemoStep("select", ("select", f"runs={runs}", f"out={bundle}", f"k={config.members_per_resolution}"),
                 bundle / "run_select.json"),
        DemoStep("calibrate", ("calibrate", f"bundle={bundle}", f"manifest={manifest}", f"clinical={clinical}",
                               f"tiles={tiles}", f"features={features}", f"out={calibrated}", *config.calibrate_overrides),
                 calibrated / "run_calibrate.json"),
        DemoStep("plan", ("plan", f"bundle={calibrated}", f"out={study / 'plan'}", *config.plan_overrides),
                 study / "plan" / "run_plan.json"),
        DemoStep("protocol", ("protocol", f"bundle={calibrated}", f"out={study / 'protocol.json'}",
                              f"plan={study / 'plan' / 'plan.json'}", f"manifest={manifest}", f"clinical={clinical}",
                              "secondary.pool=[test,validation]", *config.protocol_overrides),
                 study / "protocol.json"),  # never rewritten: a locked protocol is history
        DemoStep("score", ("score", f"bundle={calibrated}", f"manifest={manifest}", f"tiles={tiles}",
                           f"features={features}", f"out={scores}", *config.score_overrides),
                 scores / "run_score.json"),
        DemoStep("analyze", ("analyze", f"scores={scores / 'scores.csv'}", f"clinical={clinical}", f"out={analysis}",
                             f"protocol={study / 'protocol.json'}", *config.analyze_overrides),
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
    if step.name in ("train", "embed"):  # a sweep / a feature set in a subfolder: mark the whole step done
        step.done_marker.write_text(json.dumps({"finished": True}) + "\n")
    return time.monotonic() - started


def _headline(analysis_dir: Path) -> str:
    summary = json.loads((analysis_dir / "summary.json").read_text())
    validation = summary["cohorts"].get("validation", {})
    poor = (validation.get("hr") or {}).get("poor_vs_good") or {}
    flagged = (summary.get("shift") or {}).get("flagged") or []  # the domain-shift check
    shift = f"\ndomain shift flagged in: {', '.join(flagged)} (thresholds not refitted; see the report)" if flagged else ""
    if poor.get("hr") is None:
        return "validation cohort: poor vs good hazard ratio not estimable (see report)" + shift
    return (f"validation cohort: poor vs good prognosis HR {poor['hr']:.2f} "
            f"(95 % CI {poor['ci_low']:.2f}-{poor['ci_high']:.2f}, p={poor['p']:.2g})") + shift


def _study_lines(analysis_dir: Path, out: Path) -> list[str]:
    """The plan's headline, the protocol's primary result and the pooled HR (the validation study)."""
    lines = []
    plan_json = out / "study" / "plan" / "plan.json"
    if plan_json.is_file():
        lines.append("plan: " + json.loads(plan_json.read_text())["headline"])
    summary = json.loads((analysis_dir / "summary.json").read_text())
    protocol = summary.get("protocol")
    if protocol:
        p = protocol["primary"]
        verdict = ("deviates from protocol" if protocol["deviations"] else
                   "decision rule met" if p["met"] else "decision rule not met" if p["met"] is False else "not evaluable")
        lines.append(f"protocol {protocol['id'][:16]} (locked {protocol['locked_at']}): primary {p['measure']} "
                     f"{p.get('comparison') or ''} in {p['cohort']} = "
                     + ("n/a" if p["value"] is None else f"{p['value']:.2f}")
                     + ("" if p["ci_low"] is None else f" ({p['ci_low']:.2f}-{p['ci_high']:.2f})") + f": {verdict}")
    dl = ((summary.get("pooled") or {}).get("poor_vs_good") or {}).get("dl")
    if dl:
        lines.append(f"pooled poor vs good HR ({', '.join(summary['pooled']['poor_vs_good']['cohorts_used'])}, DL): "
                     f"{dl['hr']:.2f} (95 % CI {dl['ci_low']:.2f}-{dl['ci_high']:.2f}; "
                     f"prediction interval {dl['pi_low']:.2f}-{dl['pi_high']:.2f}; I² {100 * dl['i2']:.0f} %)")
    return lines


def check_cohort(config: DemoConfig) -> None:
    """One's own cohort, before any work: the two tables, the four cohorts, enough labelled training patients."""
    from wsi_prognosis.cohort import read_clinical, read_manifest
    from wsi_prognosis.cohort.labels import LabelConfig, outcome_labels

    folder = config.cohort
    assert folder is not None
    for name in ("manifest.csv", "clinical.csv"):
        if not (folder / name).is_file():
            raise ConfigurationError(f"cohort={folder}: no {name}. Fix: a folder with manifest.csv (slide_id, patient_id, "
                                     "path, cohort; paths relative to the folder) and clinical.csv (patient_id, time, event).")
    manifest = read_manifest(folder / "manifest.csv")
    clinical = read_clinical(folder / "clinical.csv")
    missing = [c for c in ROLES if c not in set(manifest["cohort"])]
    if missing:
        raise ConfigurationError(
            f"{folder / 'manifest.csv'}: no slides in cohort(s) {missing}; the demo's flow needs the four cohorts "
            f"{list(ROLES)} (train, tune the ensemble and thresholds, test, validate). Fix: set the cohort column, or run "
            "the stages one by one (README).")
    training = clinical[clinical["patient_id"].isin(manifest.loc[manifest["cohort"] == "training", "patient_id"])]
    labels = outcome_labels(training, LabelConfig())
    counts = {group: int((labels == group).sum()) for group in ("good", "poor")}
    few = {group: n for group, n in counts.items() if n < config.min_labelled}
    if few:
        raise ConfigurationError(
            f"{folder / 'clinical.csv'}: the training cohort has {counts['good']} good and {counts['poor']} poor-prognosis "
            f"patients (good: no event and > 6 years of follow-up; poor: event between 100 days and 2.5 years); each "
            f"member needs at least {config.min_labelled} of each. Fix: add training patients, or train with "
            "overrides.train=[model.loss=cox] (every patient counts) and min_labelled=0.")


ROLES = ("training", "tuning", "test", "validation")


def run(cfg: DictConfig) -> dict[str, float]:
    config = DemoConfig.from_cfg(cfg)
    if config.cohort is not None:
        check_cohort(config)
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
    for line in _study_lines(analysis, out=config.out):
        print(line)
    print(f"Review the scored slides in a browser: wsi-prognosis review scores={config.out / 'scores'}")
    return timings
