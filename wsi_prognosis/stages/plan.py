"""`wsi-prognosis plan bundle=DIR out=DIR [hr=2.0 alpha=0.05 power=0.9 horizon=5]`: events, patients, cohorts needed.

Reads the calibrated bundle (shares of the risk groups on the tuning cohort, locked thresholds), a
reference cohort (default: the tuning patients the bundle was calibrated on, with their outcomes,
`<bundle>/calibration/tuning_patient_scores.csv`; or reference=SCORES.csv clinical=CSV), and writes
plan.json, plan.html, power_curve.csv, figures/ and run_plan.json into out=. Prints one headline.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from wsi_prognosis.errors import ConfigurationError

log = logging.getLogger(__name__)
COMPARISONS = ("poor_vs_good", "uncertain_vs_good")


@dataclass(frozen=True)
class PlanConfig:
    bundle: Path
    out: Path
    reference: Path | None
    clinical: Path | None
    cohort: str | None
    hr: float
    alpha: float
    power: float
    horizon: float
    time_unit: str
    comparison: str
    shares: dict[str, float] | None
    event_probability: float | None
    given_n: int | None
    given_events: float | None
    sizes: tuple[int, ...]
    n_resamples: int
    seed: int
    tau2: float | None
    pooled: Path | None
    max_cohorts: int

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> PlanConfig:
        from wsi_prognosis.study.plan import _check_hr, _check_prob

        c = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(c, dict)
        for key in ("bundle", "out"):
            if c.get(key) in (None, "???"):
                raise ConfigurationError(f"`{key}` is required: wsi-prognosis plan bundle=DIR out=DIR [hr=2.0 power=0.9]")

        def path(key: str) -> Path | None:
            return None if c.get(key) is None else Path(str(c[key]))

        comparison = str(c.get("comparison", "poor_vs_good"))
        if comparison not in COMPARISONS:
            raise ConfigurationError(f"comparison={comparison!r}: one of {list(COMPARISONS)}.")
        shares = c.get("shares")
        if shares is not None:
            try:
                shares = {g: float(shares[g]) for g in ("good", "uncertain", "poor")}
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigurationError(
                    f"shares={shares!r}: need numbers for good, uncertain and poor, e.g. "
                    "shares='{good: 0.6, uncertain: 0.15, poor: 0.25}'.") from exc
            if any(v < 0 for v in shares.values()) or abs(sum(shares.values()) - 1) > 1e-6:
                raise ConfigurationError(f"shares={shares}: must be >= 0 and sum to 1.")
        given = dict(c.get("given") or {})
        resample = dict(c.get("resample") or {})
        cohorts = dict(c.get("cohorts") or {})
        sizes = tuple(int(n) for n in resample.get("sizes") or ())
        if not sizes or any(n < 10 for n in sizes):
            raise ConfigurationError(f"resample.sizes={list(sizes)}: need cohort sizes >= 10, e.g. [100, 200, 500, 1000, 2000].")
        horizon = float(c.get("horizon", 5))
        if not horizon > 0:
            raise ConfigurationError(f"horizon={horizon}: the follow-up horizon must be > 0 (in {c.get('time_unit', 'years')}).")
        event_probability = c.get("event_probability")
        tau2 = cohorts.get("tau2")
        if tau2 is not None and float(tau2) < 0:
            raise ConfigurationError(f"cohorts.tau2={tau2}: a between-cohort variance is >= 0.")
        return cls(
            bundle=Path(str(c["bundle"])), out=Path(str(c["out"])), reference=path("reference"), clinical=path("clinical"),
            cohort=None if c.get("cohort") is None else str(c["cohort"]),
            hr=_check_hr(c.get("hr", 2.0)), alpha=_check_prob(c.get("alpha", 0.05), "alpha", "0.05"),
            power=_check_prob(c.get("power", 0.9), "power", "0.9"), horizon=horizon,
            time_unit=str(c.get("time_unit", "years")), comparison=comparison, shares=shares,
            event_probability=None if event_probability is None else _check_prob(event_probability, "event_probability", "0.25"),
            given_n=None if given.get("n") is None else int(given["n"]),
            given_events=None if given.get("events") is None else float(given["events"]),
            sizes=sizes, n_resamples=int(resample.get("n", 1000)), seed=int(resample.get("seed", 0)),
            tau2=None if tau2 is None else float(tau2),
            pooled=None if cohorts.get("pooled") is None else Path(str(cohorts["pooled"])),
            max_cohorts=int(cohorts.get("max", 100)),
        )


def _reference_table(config: PlanConfig, bundle: Any) -> tuple[pd.DataFrame, str]:
    """One row per reference patient: score, time, event (cohort-filtered)."""
    cal = bundle.calibration or {}
    if config.reference is None:
        candidates = sorted((bundle.dir / "calibration").glob("tuning_*_scores.csv"))
        if not candidates:
            raise ConfigurationError(
                f"{bundle.dir}/calibration/: no tuning scores with outcomes. Fix: give reference=SCORES.csv clinical=CSV "
                "(e.g. the tuning cohort's patient_scores.csv and clinical.csv).")
        path = candidates[0]
    else:
        path = config.reference
    if not path.is_file():
        raise ConfigurationError(f"reference={path}: not found. Fix: a scores.csv or patient_scores.csv.")
    table = pd.read_csv(path, dtype={"patient_id": str, "cohort": str})
    cohort = config.cohort or cal.get("cohort")
    if config.clinical is not None:
        from wsi_prognosis.survival.inputs import prepare, read_table

        clinical = read_table(config.clinical, "clinical")
        thresholds = (float(bundle.thresholds["low"]), float(bundle.thresholds["high"]))
        table = prepare(read_table(path, "scores"), clinical, aggregation=str(cal.get("patient_aggregation") or "mean"),
                        thresholds=thresholds).patients
    missing = [c for c in ("score", "time", "event") if c not in table.columns]
    if missing:
        raise ConfigurationError(
            f"{path}: no {missing} column(s); the reference cohort needs outcomes. Fix: add clinical=CSV "
            "(patient_id, time, event).")
    if cohort is not None and "cohort" in table.columns and (table["cohort"] == cohort).any():
        table = table[table["cohort"] == cohort]
    table = table.dropna(subset=["score", "time", "event"])
    return table[["score", "time", "event"]].astype(float).reset_index(drop=True), f"{path}" + (f" ({cohort})" if cohort else "")


def _tau2(config: PlanConfig) -> tuple[float | None, str | None]:
    if config.tau2 is not None:
        return config.tau2, "given"
    if config.pooled is None:
        return None, None
    if not config.pooled.is_file():
        raise ConfigurationError(f"cohorts.pooled={config.pooled}: not found. Fix: the summary.json of an analyze run with analysis.pool.")
    summary = json.loads(config.pooled.read_text())
    try:
        dl = summary["pooled"]["poor_vs_good"]["dl"]
        return float(dl["tau2"]), f"DL pooled analysis of {', '.join(summary['pooled']['poor_vs_good']['cohorts_used'])}"
    except (KeyError, TypeError) as exc:
        raise ConfigurationError(
            f"{config.pooled}: no pooled poor-vs-good DL estimate. Fix: run analyze with analysis.pool=[...] first.") from exc


def make_plan(config: PlanConfig, bundle: Any, progress: bool = True) -> tuple[dict, pd.DataFrame]:
    """The plan dict (plan.json) and the power-curve table."""
    from wsi_prognosis.study.plan import (PowerCurveInputs, cohorts_needed, cox_groups_batched, detectable_hr,
                                          event_probability, power_curve, power_for_events, schoenfeld_events)

    if not bundle.thresholds:
        raise ConfigurationError(f"{bundle.dir}: the bundle has no thresholds. Fix: plan with a calibrated bundle "
                                 "(`wsi-prognosis calibrate`).")
    low, high = float(bundle.thresholds["low"]), float(bundle.thresholds["high"])
    target = "poor" if config.comparison == "poor_vs_good" else "uncertain"
    notes: list[str] = []
    if config.shares is not None:
        shares, shares_source = config.shares, "given"
    else:
        cal_shares = (bundle.calibration or {}).get("shares")
        if not cal_shares:
            raise ConfigurationError(f"{bundle.dir}: no calibration shares in bundle.json. Fix: give shares={{good: .., uncertain: .., poor: ..}}.")
        shares = {g: float(cal_shares[g]) for g in ("good", "uncertain", "poor")}
        shares_source = f"calibration on {(bundle.calibration or {}).get('cohort', 'tuning')}"
    compared = shares["good"] + shares[target]
    if shares["good"] <= 0 or shares[target] <= 0:
        raise ConfigurationError(f"shares {shares} ({shares_source}): the {target} or good group has share 0, so there is "
                                 "nothing to compare. Fix: give shares=... or recalibrate with min_share > 0.")
    p = shares[target] / compared
    events = schoenfeld_events(config.hr, config.alpha, config.power, p)
    ref, ref_source = _reference_table(config, bundle)
    group = np.where(ref["score"] < low, "good", np.where(ref["score"] < high, "uncertain", "poor"))
    in_compared = np.isin(group, ["good", target])
    if config.event_probability is not None:
        pi, pi_source = config.event_probability, "given"
    else:
        pi = event_probability(ref["time"][in_compared], ref["event"][in_compared], config.horizon)
        pi_source = f"Kaplan–Meier on {ref_source}"
    if ref["event"].sum() == 0:
        raise ConfigurationError(f"reference {ref_source}: no events. Fix: a reference cohort with events, or clinical=.")
    patients_compared = int(math.ceil(events / pi))
    patients = int(math.ceil(events / pi / compared))
    # the reference cohort's own effect, for the empirical curve's context
    x = np.stack([(group == "uncertain").astype(float), (group == "poor").astype(float)], axis=1)
    ref_fit = cox_groups_batched(ref["time"], ref["event"], x, np.ones((1, len(ref))), alpha=config.alpha)
    ref_hr = float(np.exp(ref_fit["beta"][0, 1 if target == "poor" else 0]))
    ref_p = float((group == target).sum() / max(in_compared.sum(), 1))
    started = time.monotonic()
    curve = power_curve(PowerCurveInputs(ref["score"].to_numpy(), ref["time"].to_numpy(), ref["event"].to_numpy(int), low, high),
                        config.sizes, config.n_resamples, alpha=config.alpha, comparison=config.comparison,
                        seed=config.seed, progress=progress)
    curve_seconds = time.monotonic() - started
    ref_pi = pi if config.event_probability is not None else pi
    schoenfeld_curve = []
    if ref_hr > 0 and abs(math.log(ref_hr)) > 1e-9 and 0 < ref_p < 1:
        for n in config.sizes:
            ev = n * float(in_compared.mean()) * ref_pi
            schoenfeld_curve.append({"n": int(n), "power": power_for_events(max(ev, 1e-9), ref_hr, config.alpha, ref_p)})
    given = None
    if config.given_n is not None or config.given_events is not None:
        given_events = config.given_events if config.given_events is not None else config.given_n * compared * pi
        given = {"n": config.given_n, "events": float(given_events),
                 "events_source": "given" if config.given_events is not None else "n × share compared × event probability",
                 "power": power_for_events(given_events, config.hr, config.alpha, p),
                 "detectable_hr": detectable_hr(given_events, config.alpha, config.power, p)}
    tau2, tau2_source = _tau2(config)
    se_cohort = 1.0 / math.sqrt(events * p * (1 - p))
    if tau2 is None:
        k, k_reason = None, "no between-cohort heterogeneity given: set cohorts.tau2=V or cohorts.pooled=SUMMARY.json"
    else:
        k = cohorts_needed(config.hr, se_cohort, tau2, config.alpha, config.max_cohorts)
        k_reason = None if k is not None else (f"with tau² = {tau2:.4f} no number of cohorts up to {config.max_cohorts} gives "
                                                f"a prediction interval excluding HR 1 for HR {config.hr:g}")
    unit = config.time_unit[:-1] if config.time_unit.endswith("s") else config.time_unit
    hr_text = f"{config.hr:.1f}" if round(config.hr, 1) == config.hr else f"{config.hr:g}"  # "HR 2.0", "HR 1.75"
    headline = (f"The primary analysis needs {events} events (≈ {patients} patients at {100 * pi:.0f} % "
                f"{config.horizon:g}-{unit} event rate) for {100 * config.power:.0f} % power to detect HR {hr_text} "
                f"at α = {config.alpha:g}.")
    if len(ref) < 100:
        notes.append(f"The reference cohort is small ({len(ref)} patients): the resampled power curve repeats its few "
                     "patients and is only indicative.")
    plan = {
        "events_needed": events, "patients_needed": patients, "patients_needed_compared": patients_compared,
        "hr": config.hr, "alpha": config.alpha, "power": config.power, "comparison": config.comparison,
        "shares": shares, "shares_source": shares_source, "p": p,
        "event_probability": pi, "event_probability_source": pi_source, "horizon": config.horizon,
        "time_unit": config.time_unit,
        "power_curve": [{k_: (None if (isinstance(v, float) and not math.isfinite(v)) else v) for k_, v in r.items()}
                        for r in curve.to_dict(orient="records")],
        "schoenfeld_curve": schoenfeld_curve,
        "cohorts_needed": k,
        "cohorts": {"tau2": tau2, "tau2_source": tau2_source, "se_cohort": se_cohort, "reason": k_reason,
                    "formula": "smallest k >= 3 with ln HR - t_{k-2,1-alpha/2} sqrt(tau2 + (se^2 + tau2)/k) > 0"},
        "given_cohort": given,
        "reference": {"source": ref_source, "n": int(len(ref)), "events": int(ref["event"].sum()), "hr": ref_hr,
                      "p": ref_p},
        "n_resamples": config.n_resamples, "seed": config.seed, "power_curve_seconds": round(curve_seconds, 2),
        "bundle_id": bundle.id, "thresholds": {"low": low, "high": high},
        "headline": headline, "notes": notes,
        "formulae": {"events": "D = (z_{1-a/2} + z_{1-b})^2 / (p q (ln HR)^2)  (Schoenfeld 1983)",
                     "patients": "D / event_probability / share of patients in the compared groups"},
    }
    return plan, curve


def run(cfg: DictConfig) -> dict:
    """Plan the validation; write plan.json, plan.html, power_curve.csv, figures; print the headline."""
    from wsi_prognosis.atomic import atomic_path, write_text_atomic
    from wsi_prognosis.ensemble import load_bundle
    from wsi_prognosis.provenance import write_run_record
    from wsi_prognosis.study.plan_report import plot_ci_widths, plot_power_curve, render_plan
    from wsi_prognosis.survival.km import save_figure

    config = PlanConfig.from_cfg(cfg)
    bundle = load_bundle(config.bundle)  # verifies every hash
    plan, curve = make_plan(config, bundle)
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "power_curve.csv") as tmp:
        curve.to_csv(tmp, index=False)
    figures = []
    for name, fig, caption in (("power_curve", plot_power_curve(curve, plan), "power by cohort size"),
                               ("ci_width", plot_ci_widths(curve), "CI widths by cohort size")):
        stem = out / "figures" / name
        save_figure(fig, stem)
        figures.append((Path(f"{stem}.png"), caption))
    write_text_atomic(out / "plan.json", json.dumps(plan, indent=2, allow_nan=False) + "\n")
    write_text_atomic(out / "plan.html", render_plan(plan, curve, figures))
    inputs = {"bundle.json": config.bundle / "bundle.json"}
    for key in ("reference", "clinical", "pooled"):
        value = getattr(config, key)
        if value is not None:
            inputs[key] = value
    write_run_record(out, "plan", OmegaConf.to_container(cfg, resolve=True), inputs=inputs, seed=config.seed,
                     extra={"bundle_id": bundle.id, "events_needed": plan["events_needed"],
                            "patients_needed": plan["patients_needed"], "headline": plan["headline"]})
    print(plan["headline"], flush=True)
    log.info("plan: %s (power curve: %d resamples x %d sizes in %.1f s)", out / "plan.html", config.n_resamples,
             len(config.sizes), plan["power_curve_seconds"])
    return plan
