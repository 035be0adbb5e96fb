"""Sample-size planning: Schoenfeld's closed form, its inverses, the batched Cox fit, the plan stage."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats
from study_helpers import make_calibrated_bundle

from wsi_prognosis.cli import main
from wsi_prognosis.errors import ConfigurationError
from wsi_prognosis.study.plan import (cohorts_needed, cox_groups_batched, detectable_hr, event_probability,
                                      power_for_events, schoenfeld_events)


def test_schoenfeld_events_for_hr_2():
    # (z_0.975 + z_0.8)² / (1/4 · ln² 2) = 65.3 -> 66;  (z_0.975 + z_0.9)² / (1/4 · ln² 2) = 87.5 -> 88
    assert schoenfeld_events(2.0, 0.05, 0.8) == 66
    assert schoenfeld_events(2.0, 0.05, 0.9) == 88
    assert schoenfeld_events(0.5, 0.05, 0.9) == 88  # protective effects need the same events
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.9)
    assert schoenfeld_events(1.5, 0.05, 0.9, share=0.3) == math.ceil(z ** 2 / (0.3 * 0.7 * math.log(1.5) ** 2))


def test_power_and_detectable_hr_invert_the_events():
    assert power_for_events(88, 2.0, 0.05) == pytest.approx(0.9, abs=0.005)
    assert power_for_events(66, 2.0, 0.05) == pytest.approx(0.8, abs=0.005)
    assert detectable_hr(87.48, 0.05, 0.9) == pytest.approx(2.0, rel=1e-3)
    assert detectable_hr(400, 0.05, 0.9) < detectable_hr(100, 0.05, 0.9)


@pytest.mark.parametrize("call, match", [
    (lambda: schoenfeld_events(1.0), "hr=1.0.*not 1"),
    (lambda: schoenfeld_events(0.0), "hr=0.0.*> 0"),
    (lambda: schoenfeld_events(-2.0), "hr=-2.0"),
    (lambda: schoenfeld_events(2.0, power=1.2), "power=1.2"),
    (lambda: schoenfeld_events(2.0, alpha=0.0), "alpha=0.0"),
    (lambda: schoenfeld_events(2.0, share=0.0), "share 0"),
    (lambda: event_probability([1.0, 2.0, 3.0], [0, 0, 0], 5), "no events"),
    (lambda: event_probability([1.0, 2.0, 3.0], [1, 0, 0], 5), "horizon=5"),
])
def test_bad_input_names_the_value(call, match):
    with pytest.raises(ConfigurationError, match=match):
        call()


def test_cohorts_needed():
    se = 1 / math.sqrt(88 / 4)
    # tau² = 0: k = 3 gives t_1 · sqrt(se²/3) = 12.71 · 0.123 = 1.56 > ln 2; k = 4: 4.30 · 0.107 = 0.46 < ln 2
    assert cohorts_needed(2.0, se, 0.0) == 4
    k1, k2 = cohorts_needed(2.0, se, 0.02), cohorts_needed(2.0, se, 0.08)
    assert k1 is not None and k2 is not None and 3 <= k1 <= k2
    assert cohorts_needed(2.0, se, (math.log(2) / 1.96) ** 2 * 1.01) is None  # tau beyond ln HR / z: never


def test_batched_cox_equals_statsmodels_breslow_on_expanded_resamples():
    from statsmodels.duration.hazard_regression import PHReg

    rng = np.random.default_rng(0)
    n = 150
    group = rng.choice(3, n, p=[0.6, 0.15, 0.25])
    x = np.stack([group == 1, group == 2], axis=1).astype(float)
    t_event = rng.exponential(1 / (0.15 * np.array([1.0, 2.0, 4.0])[group]))
    censor = rng.uniform(2, 10, n)
    time, event = np.minimum(t_event, censor).round(1), (t_event <= censor).astype(int)  # rounded: tied times
    weights = rng.multinomial(n, np.full(n, 1 / n), size=4).astype(float)
    fit = cox_groups_batched(time, event, x, weights)
    for b in range(len(weights)):
        idx = np.repeat(np.arange(n), weights[b].astype(int))
        ref = PHReg(time[idx], x[idx], status=event[idx], ties="breslow").fit()
        np.testing.assert_allclose(fit["beta"][b], ref.params, rtol=1e-6)
        np.testing.assert_allclose(fit["se"][b], ref.bse, rtol=1e-6)
    assert fit["converged"].all()


def test_plan_stage_writes_the_contract_and_prints_the_headline(tmp_path, capsys):
    bundle = make_calibrated_bundle(tmp_path)
    out = tmp_path / "plan"
    assert main(["plan", f"bundle={bundle}", f"out={out}", "resample.n=120", "resample.sizes=[100,400,1600]",
                 "cohorts.tau2=0.02", "given.n=500"]) == 0
    printed = capsys.readouterr().out
    plan = json.loads((out / "plan.json").read_text())
    for key, kind in {"events_needed": int, "patients_needed": int, "hr": float, "alpha": float, "power": float,
                      "shares": dict, "event_probability": float, "power_curve": list}.items():
        assert isinstance(plan[key], kind), key
    assert plan["cohorts_needed"] is None or isinstance(plan["cohorts_needed"], int)
    shares = plan["shares"]
    p = shares["poor"] / (shares["good"] + shares["poor"])
    assert plan["events_needed"] == schoenfeld_events(2.0, 0.05, 0.9, p)
    assert plan["patients_needed"] == math.ceil(plan["events_needed"] / plan["event_probability"]
                                                / (shares["good"] + shares["poor"]))
    assert [r["n"] for r in plan["power_curve"]] == [100, 400, 1600]
    assert set(plan["power_curve"][0]) >= {"n", "power", "hr_ci_width", "c_ci_width"}
    widths = [r["hr_ci_width"] for r in plan["power_curve"]]
    assert widths[0] > widths[1] > widths[2]                    # more patients, narrower intervals
    assert plan["power_curve"][-1]["power"] >= plan["power_curve"][0]["power"]
    assert isinstance(plan["cohorts_needed"], int) and plan["given_cohort"]["n"] == 500
    assert plan["headline"] in printed and f"needs {plan['events_needed']} events" in plan["headline"]
    assert "5-year event rate" in plan["headline"]
    html = (out / "plan.html").read_text()
    assert plan["headline"] in html and html.count("data:image/png;base64") == 2
    assert (out / "run_plan.json").is_file() and (out / "power_curve.csv").is_file()


def test_plan_stage_refuses_bad_values(tmp_path, capsys):
    bundle = make_calibrated_bundle(tmp_path)
    assert main(["plan", f"bundle={bundle}", f"out={tmp_path / 'p'}", "hr=1"]) == 2
    assert "hr=1.0" in capsys.readouterr().err
    assert main(["plan", f"bundle={bundle}", f"out={tmp_path / 'p'}", "shares={good: 0.8, uncertain: 0.2, poor: 0}"]) == 2
    assert "share 0" in capsys.readouterr().err


def test_plan_with_another_reference_cohort(tmp_path):
    from study_helpers import write_scored_cohorts

    from wsi_prognosis.survival import analyze, read_table

    bundle = make_calibrated_bundle(tmp_path)
    scores, clinical = write_scored_cohorts(tmp_path / "scores", bundle)
    out = tmp_path / "plan"
    assert main(["plan", f"bundle={bundle}", f"out={out}", f"reference={scores}", f"clinical={clinical}",
                 "cohort=validation", "resample.n=40", "resample.sizes=[100]", "given.events=120"]) == 0
    plan = json.loads((out / "plan.json").read_text())
    assert plan["reference"]["n"] == 260 and plan["reference"]["source"].endswith("(validation)")
    result = analyze(read_table(scores, "scores"), read_table(clinical, "clinical"))
    hr = result.summary["cohorts"]["validation"]["hr"]["poor_vs_good"]["hr"]
    assert plan["reference"]["hr"] == pytest.approx(hr, rel=0.02)  # Breslow (batched) vs Efron (lifelines), no ties
    assert plan["given_cohort"]["power"] == pytest.approx(power_for_events(120, 2.0, 0.05, plan["p"]))
