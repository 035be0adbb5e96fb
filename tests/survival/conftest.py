"""Fixtures for the survival tests: simulated cohorts with known hazard ratios."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def simulate_cohort(
    n: int = 1500,
    hrs: tuple[float, float, float] = (1.0, 2.0, 4.0),
    *,
    seed: int = 0,
    cohort: str = "validation",
    base_rate: float = 0.05,
    shares: tuple[float, float, float] = (0.6, 0.15, 0.25),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(scores, clinical) with exponential survival: hazard = base_rate * hrs[group].

    Groups good/uncertain/poor have true HRs hrs[1]/hrs[0] and hrs[2]/hrs[0] vs good; censoring
    is uniform on [2, 10] years (independent of group); pT and pN are noise (true HR 1), grade is
    weakly related to the group.
    """
    rng = np.random.default_rng(seed)
    group = rng.choice(["good", "uncertain", "poor"], size=n, p=list(shares))
    index = np.select([group == "good", group == "uncertain", group == "poor"], [0, 1, 2])
    t_event = rng.exponential(1.0 / (base_rate * np.asarray(hrs)[index]))
    t_censor = rng.uniform(2.0, 10.0, n)
    time = np.minimum(t_event, t_censor)
    event = (t_event <= t_censor).astype(int)
    score = (np.asarray([0.2, 0.5, 0.8])[index] + rng.normal(0, 0.08, n)).clip(0, 1)
    pid = [f"{cohort[:3]}{i:05d}" for i in range(n)]
    grade = np.where(group == "poor", rng.choice([1, 2, 3], n, p=[0.2, 0.4, 0.4]), rng.choice([1, 2, 3], n, p=[0.4, 0.4, 0.2]))
    scores = pd.DataFrame({
        "slide_id": [f"{p}_a" for p in pid], "patient_id": pid, "cohort": cohort, "score": score,
        "risk_group": group, "n_tiles_10x": 12, "n_tiles_40x": 48, "status": "ok", "error": "",
        "member_a": score, "member_b": score,
    })
    clinical = pd.DataFrame({
        "patient_id": pid, "time": time.round(5), "event": event,
        "pT": rng.choice([2, 3, 4], n), "pN": rng.choice([0, 1, 2], n), "grade": grade,
    })
    return scores, clinical


@pytest.fixture(scope="session")
def simulate():
    return simulate_cohort


@pytest.fixture(scope="session")
def small_study() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two cohorts (test n=150, validation n=200) for shape, CLI and report tests."""
    s1, c1 = simulate_cohort(150, seed=11, cohort="test")
    s2, c2 = simulate_cohort(200, seed=12, cohort="validation")
    return pd.concat([s1, s2], ignore_index=True), pd.concat([c1, c2], ignore_index=True)
