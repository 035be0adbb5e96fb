"""Threshold fitting: quantile shares, the survival search (checked against lifelines), fixed, CIs."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines.statistics import multivariate_logrank_test

from wsi_prognosis.calibration import (
    assign_risk_group,
    assign_risk_groups,
    fit_thresholds,
    logrank_statistic,
    pairwise_logrank_statistics,
)
from wsi_prognosis.errors import ConfigurationError


def cohort(n: int = 240, seed: int = 0):
    """Scores with a true effect: hazard grows with the score; ~30 % censored."""
    rng = np.random.default_rng(seed)
    score = rng.random(n)
    time = rng.exponential(1.0 / (0.1 + 1.5 * score))
    censor = rng.exponential(3.0, n)
    return score, np.minimum(time, censor), (time <= censor).astype(int)


def test_risk_group_boundaries():
    t = {"low": 0.3, "high": 0.7}
    assert [assign_risk_group(s, t) for s in (0.0, 0.2999, 0.3, 0.6999, 0.7, 1.0)] == [
        "good", "good", "uncertain", "uncertain", "poor", "poor"]
    assert list(assign_risk_groups([0.1, float("nan"), 0.9], t)) == ["good", "", "poor"]
    with pytest.raises(ValueError):
        assign_risk_group(float("nan"), t)


@pytest.mark.parametrize("shares", [{"good": 0.6, "uncertain": 0.15, "poor": 0.25}, {"good": 0.5, "uncertain": 0.3, "poor": 0.2}])
def test_quantile_hits_its_shares(shares):
    score, _, _ = cohort(n=401)
    th = fit_thresholds(score, method="quantile", shares=shares, n_bootstrap=0)
    groups = assign_risk_groups(score, th)
    for g, share in shares.items():
        assert abs(np.mean(groups == g) - share) <= 1 / len(score) + 1e-9
    assert th.shares == pytest.approx(shares, abs=1 / len(score))


def test_logrank_statistic_matches_lifelines():
    score, time, event = cohort()
    groups = assign_risk_groups(score, {"low": 0.4, "high": 0.75})
    ours, dof = logrank_statistic(time, event, groups)
    theirs = multivariate_logrank_test(time, groups, event).test_statistic
    assert dof == 2 and ours == pytest.approx(theirs, rel=1e-8)
    cuts = np.array([0.2, 0.4, 0.75])
    stats, ratio = pairwise_logrank_statistics(score, time, event, cuts, np.array([[1, 2], [0, 2]]))
    assert stats[0] == pytest.approx(theirs, rel=1e-6)
    other = assign_risk_groups(score, {"low": 0.2, "high": 0.75})
    assert stats[1] == pytest.approx(multivariate_logrank_test(time, other, event).test_statistic, rel=1e-6)
    assert ratio[0, 0] < ratio[0, 2]  # the high-score group dies more than expected


def test_survival_cut_points_separate_outcomes_and_respect_min_share():
    score, time, event = cohort(n=300, seed=1)
    th = fit_thresholds(score, time, event, method="survival", min_share=0.15, n_bootstrap=20, seed=3)
    assert 0 < th.low < th.high < 1
    assert min(th.shares.values()) >= 0.15 - 1e-9
    o_e = th.details["observed_over_expected"]
    assert o_e["good"] < o_e["uncertain"] < o_e["poor"]
    # no admissible pair separates the groups better than the chosen one
    groups = assign_risk_groups(score, th)
    best = multivariate_logrank_test(time, groups, event).test_statistic
    assert th.details["statistic"] == pytest.approx(best, rel=1e-6)
    shuffled = fit_thresholds(np.random.default_rng(0).permutation(score), time, event, method="survival",
                              min_share=0.15, n_bootstrap=0)
    assert th.details["statistic"] > shuffled.details["statistic"]
    assert th.ci is not None and th.ci["n_bootstrap"] == 20
    assert th.ci["low"][0] <= th.low <= th.ci["low"][1] or th.ci["high"][0] <= th.high <= th.ci["high"][1]


def test_bootstrap_ci_brackets_quantile_cut_points_and_is_reproducible():
    score, _, _ = cohort(n=500)
    a = fit_thresholds(score, n_bootstrap=100, seed=7)
    b = fit_thresholds(score, n_bootstrap=100, seed=7)
    assert a.ci == b.ci
    assert a.ci["low"][0] <= a.low <= a.ci["low"][1]
    assert a.ci["high"][0] <= a.high <= a.ci["high"][1]


def test_fixed_and_bad_input():
    th = fit_thresholds([0.1, 0.5, 0.9], method="fixed", low=0.3, high=0.6)
    assert (th.low, th.high) == (0.3, 0.6) and th.shares == pytest.approx({"good": 1 / 3, "uncertain": 1 / 3, "poor": 1 / 3})
    with pytest.raises(ConfigurationError, match="low < high"):
        fit_thresholds([0.1], method="fixed", low=0.6, high=0.3)
    with pytest.raises(ConfigurationError, match="unknown"):
        fit_thresholds([0.1, 0.2, 0.3], method="median")
    with pytest.raises(ConfigurationError, match="sum to 1"):
        fit_thresholds([0.1, 0.2, 0.3], shares={"good": 0.5, "uncertain": 0.5, "poor": 0.5})
    with pytest.raises(ConfigurationError, match="time and event"):
        fit_thresholds([0.1, 0.2, 0.3], method="survival")
