"""Known-truth checks: simulated hazard ratios are covered by the CIs; the C-index sign is right."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines.utils import concordance_index

from wsi_prognosis.survival import AnalysisConfig, analyze, concordance, concordance_ci, concordance_difference, cox_table
from wsi_prognosis.survival.concordance import _bootstrap_c, _pair_matrices
from wsi_prognosis.survival.logrank import logrank_table


@pytest.fixture(scope="module")
def simulated_result(simulate):
    scores, clinical = simulate(1500, (1.0, 2.0, 4.0), seed=3)
    return analyze(scores, clinical, AnalysisConfig(n_bootstrap=200, seed=1))


def test_hazard_ratio_cis_cover_truth(simulated_result):
    cohort = simulated_result.summary["cohorts"]["validation"]
    for key, truth in (("uncertain_vs_good", 2.0), ("poor_vs_good", 4.0)):
        for model in ("hr", "hr_adjusted"):
            entry = cohort[model][key]
            assert entry["ci_low"] < truth < entry["ci_high"], (model, key, entry)
            assert entry["p"] < 1e-3
    # pT, pN are pure noise: their adjusted HRs cover 1
    cox = simulated_result.cox.query("model == 'adjusted' and term in ['pT', 'pN']")
    assert len(cox) == 2 and ((cox["ci_low"] < 1) & (cox["ci_high"] > 1)).all()
    assert cohort["adjusted_for"] == ["pT", "pN"]
    # the continuous score is prognostic: HR per SD > 1
    assert cohort["hr_per_sd"]["ci_low"] > 1.2
    assert cohort["logrank_p"] < 1e-10
    shares = cohort["shares"]
    assert sum(shares.values()) == pytest.approx(1.0) and shares["good"] == pytest.approx(0.6, abs=0.03)


def test_c_index_sign_and_bootstrap(simulated_result):
    c = simulated_result.summary["cohorts"]["validation"]["c_index"]
    assert 0.5 < c["ci_low"] < c["value"] < c["ci_high"] < 0.8
    # the score beats the weakly related grade (difference CI above 0)
    diff = simulated_result.summary["cohorts"]["validation"]["reference_marker"]["c_index_difference"]
    assert diff["ci_low"] > 0


def test_concordance_sign_by_hand():
    time, event = [1, 2, 3, 4], [1, 1, 1, 1]
    assert concordance(time, event, [4, 3, 2, 1]) == 1.0      # highest risk died first: perfect
    assert concordance(time, event, [1, 2, 3, 4]) == 0.0      # inverted
    assert concordance(time, event, [1, 1, 1, 1]) == 0.5      # ties count 1/2
    assert np.isnan(concordance(time, [0, 0, 0, 0], [4, 3, 2, 1]))  # no events: undefined
    ci = concordance_ci(time, [0, 0, 0, 0], [4, 3, 2, 1], n_boot=10)
    assert ci.value is None and "comparable" in ci.reason


def test_bootstrap_pairs_match_lifelines():
    """The matrix form used for bootstrap counts pairs (and ties) exactly like lifelines."""
    rng = np.random.default_rng(0)
    for _ in range(30):
        n = int(rng.integers(4, 40))
        t = rng.integers(0, 6, n).astype(float)
        e = rng.integers(0, 2, n)
        r = rng.integers(0, 3, n).astype(float)
        if e.sum() == 0:
            continue
        idx = rng.integers(0, n, n)
        try:
            expected = concordance_index(t[idx], -r[idx], e[idx])
        except ZeroDivisionError:
            continue
        w = np.bincount(idx, minlength=n).astype(float)
        comparable, concordant = _pair_matrices(t, e, r)
        assert w @ concordant @ w / (w @ comparable @ w) == pytest.approx(expected)
    samples = _bootstrap_c(t, e, [r, -r], 50, seed=0)
    assert samples.shape == (50, 2)
    assert np.nanmean(samples[:, 0] + samples[:, 1]) == pytest.approx(1.0)  # C(r) + C(-r) = 1 per sample


def test_concordance_difference_of_identical_markers_is_zero():
    rng = np.random.default_rng(1)
    t, e, r = rng.exponential(size=200), rng.integers(0, 2, 200), rng.normal(size=200)
    d = concordance_difference(t, e, r, r, n_boot=50)
    assert d.value == 0 and d.ci_low == 0 and d.ci_high == 0


def test_cox_table_and_logrank_pairs(simulate):
    scores, clinical = simulate(600, (1.0, 1.0, 3.0), seed=8)
    df = scores.merge(clinical, on="patient_id")
    table = cox_table(df)
    assert list(table["term"]) == ["uncertain_vs_good", "poor_vs_good"]
    poor = table.set_index("term").loc["poor_vs_good"]
    assert poor["ci_low"] < 3.0 < poor["ci_high"] and poor["estimable"]
    lr = logrank_table(df, "risk_group", levels=["good", "uncertain", "poor"]).set_index("comparison")
    assert list(lr.index) == ["overall", "uncertain_vs_good", "poor_vs_good", "poor_vs_uncertain"]
    assert lr.loc["poor_vs_good", "p"] < 1e-6 and lr.loc["overall", "df"] == 2
