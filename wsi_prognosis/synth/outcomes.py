"""Outcomes from the latent risk: Weibull PH survival, censoring, covariates, cohort sampling.

Callable without rendering a pixel, so checks of the survival model (oracle C-index) can use
thousands of patients in a fraction of a second.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from wsi_prognosis.synth.config import OutcomeParams, SynthConfig

PREFIX = {"training": "P", "tuning": "T", "validation": "V"}


def simulate_patients(n: int, rng: np.random.Generator, params: OutcomeParams) -> pd.DataFrame:
    """`n` patients: risk r ~ N(0, 1), outcome and covariates (time in years, event 1 = cancer death).

    Returns columns risk, time, event, pT, pN, grade, cause ("cancer" | "other" | "censored").
    """
    risk = rng.standard_normal(n)
    u = rng.random(n)
    t_cancer = params.weibull_scale_years * (-np.log1p(-u) / np.exp(params.log_hr_per_sd * risk)) ** (
        1.0 / params.weibull_shape
    )
    if params.other_cause_rate_per_year > 0:
        t_other = rng.exponential(1.0 / params.other_cause_rate_per_year, n)
    else:
        t_other = np.full(n, np.inf)
    t_followup = rng.uniform(params.followup_min_years, params.followup_max_years, n)
    time = np.minimum.reduce([t_cancer, t_other, t_followup])
    event = (t_cancer <= time).astype(int)
    cause = np.where(event == 1, "cancer", np.where(t_other <= time, "other", "censored"))
    # covariates: pT/pN correlate with r; grade is a noisy pathologist's reading of r
    pt_latent = 0.7 * risk + rng.normal(0, 0.7, n)
    pn_latent = 0.6 * risk + rng.normal(0, 0.8, n)
    grade_latent = risk + rng.normal(0, 0.9, n)
    return pd.DataFrame(
        {
            "risk": risk,
            "time": np.maximum(time, 1.0 / 365.25),
            "event": event,
            "pT": 1 + np.searchsorted([-1.2, -0.2, 1.0], pt_latent),
            "pN": np.searchsorted([0.3, 1.3], pn_latent),
            "grade": 1 + np.searchsorted([-0.6, 1.0], grade_latent),
            "cause": cause,
        }
    )


def is_good(table: pd.DataFrame, params: OutcomeParams) -> pd.Series:
    """DoMore 'good': known to survive the cancer beyond `good_min_years`."""
    return (table["time"] > params.good_min_years) & ~((table["event"] == 1) & (table["time"] <= params.good_min_years))


def is_poor(table: pd.DataFrame, params: OutcomeParams) -> pd.Series:
    """DoMore 'poor': cancer death between 100 days and 2.5 years."""
    t = table["time"]
    return (table["event"] == 1) & (t >= params.poor_min_years) & (t <= params.poor_max_years)


def sample_training(n: int, rng: np.random.Generator, params: OutcomeParams) -> pd.DataFrame:
    """Training cohort enriched like DoMore's: half good (> 6 y), half poor (100 d - 2.5 y).

    Draws from a population pool until both halves are filled; falls back to other patients
    only if the follow-up makes one class impossible (e.g. followup_max_years < 6).
    """
    want_poor = n // 2
    want_good = n - want_poor
    chosen: list[pd.DataFrame] = []
    n_good = n_poor = 0
    rest: list[pd.DataFrame] = []
    for _ in range(50):
        pool = simulate_patients(max(8 * n, 64), rng, params)
        good, poor = is_good(pool, params), is_poor(pool, params)
        take_good = pool[good].iloc[: want_good - n_good]
        take_poor = pool[poor].iloc[: want_poor - n_poor]
        chosen += [take_good, take_poor]
        n_good += len(take_good)
        n_poor += len(take_poor)
        rest.append(pool[~good & ~poor])
        if n_good == want_good and n_poor == want_poor:
            break
    table = pd.concat(chosen)
    if len(table) < n:
        table = pd.concat([table, pd.concat(rest).iloc[: n - len(table)]])
    # shuffle so patient order says nothing about the outcome class
    return table.sample(frac=1.0, random_state=np.random.RandomState(rng.integers(2**31))).reset_index(drop=True)


def simulate_cohort_tables(config: SynthConfig) -> dict[str, pd.DataFrame]:
    """Patients of every cohort, keyed by cohort, each with `patient_id` (deterministic in seed).

    `test` holds training's patients (same ids and outcomes): their second slide is new tissue
    drawn from the same r.
    """
    params = config.outcome
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 7001]))
    tables: dict[str, pd.DataFrame] = {}
    for cohort, n in (("training", config.n_training), ("tuning", config.n_tuning),
                      ("validation", config.n_validation)):
        sub = np.random.default_rng(rng.integers(2**63))
        if n <= 0:
            continue
        table = sample_training(n, sub, params) if cohort == "training" else simulate_patients(n, sub, params)
        width = max(4, len(str(n)))
        table.insert(0, "patient_id", [f"{PREFIX[cohort]}{i + 1:0{width}d}" for i in range(n)])
        tables[cohort] = table
    if config.with_test and "training" in tables:
        tables["test"] = tables["training"].copy()
    return {c: tables[c] for c in ("training", "tuning", "test", "validation") if c in tables}
