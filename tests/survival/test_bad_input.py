"""Bad input never crashes and never gives a wrong number: a reason in the summary, or a clear error."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from wsi_prognosis.errors import ClinicalError, ConfigurationError
from wsi_prognosis.survival import AnalysisConfig, analyze, prepare, write_analysis
from wsi_prognosis.survival.markers import marker_levels
from wsi_prognosis.survival.outputs import summary_json

FAST = AnalysisConfig(n_bootstrap=0, reference_marker=None)  # the marker and bootstrap have their own tests


def _null_with_reason(entry: dict) -> bool:
    return entry["hr"] is None and entry["ci_low"] is None and entry["p"] is None and bool(entry["reason"])


def test_unmatched_both_ways_listed_and_counted(simulate):
    scores, clinical = simulate(80, seed=1)
    scores = pd.concat([scores, pd.DataFrame([{"patient_id": "only-in-scores", "cohort": "validation", "score": 0.9,
                                               "risk_group": "poor", "status": "ok"}])], ignore_index=True)
    clinical = pd.concat([clinical, pd.DataFrame([{"patient_id": "only-in-clinical", "time": 2.0, "event": 1}])],
                         ignore_index=True)
    result = analyze(scores, clinical, FAST)
    assert result.summary["unmatched"] == {"in_scores_not_clinical": 1, "in_clinical_not_scores": 1}
    listed = set(zip(result.unmatched["direction"], result.unmatched["patient_id"]))
    assert listed == {("in_scores_not_clinical", "only-in-scores"), ("in_clinical_not_scores", "only-in-clinical")}
    assert result.summary["cohorts"]["validation"]["n"] == 80
    assert result.summary["cohorts"]["validation"]["unmatched"] == 1
    assert "only-in-scores" not in set(result.patients["patient_id"])


@pytest.mark.parametrize("column, value, reason", [
    ("time", -1.0, "negative"),
    ("time", None, "time missing"),
    ("time", "abc", "not numeric"),
    ("event", 2, "event not 0/1"),
    ("event", "yes", "event not 0/1"),
])
def test_bad_clinical_values_are_excluded_with_reason(simulate, column, value, reason):
    scores, clinical = simulate(60, seed=2)
    clinical = clinical.astype(object)
    clinical.loc[5, column] = value
    prepared = prepare(scores, clinical)
    excluded = prepared.excluded
    assert list(excluded["patient_id"]) == [clinical.loc[5, "patient_id"]]
    assert reason in excluded["reason"].iloc[0] and excluded["source"].iloc[0] == "clinical"
    assert len(prepared.patients) == 59


def test_bad_clinical_values_counted_in_summary(simulate):
    scores, clinical = simulate(80, seed=2)
    clinical = clinical.astype(object)
    clinical.loc[[1, 2, 3], "time"] = [-2, None, "abc"]
    clinical.loc[4, "event"] = "yes"
    s = analyze(scores, clinical, FAST).summary
    assert s["excluded"]["n"] == 4 and s["cohorts"]["validation"]["excluded"] == 4
    assert s["cohorts"]["validation"]["n"] == 76 and s["n_analysed"] == 76
    assert sum(s["excluded"]["by_reason"].values()) == 4


def test_failed_slides_counted_and_patient_with_only_failed_slides_excluded(simulate):
    scores, clinical = simulate(50, seed=3)
    extra = scores.iloc[[0]].assign(slide_id="second", status="failed", score=float("nan"), error="SlideReadError")
    scores = pd.concat([scores, extra], ignore_index=True)            # patient 0: one ok + one failed slide
    scores.loc[1, ["status", "score"]] = ["failed", None]             # patient 1: only a failed slide
    result = analyze(scores, clinical, AnalysisConfig(n_bootstrap=0, reference_marker=None))
    assert result.summary["failed_slides"] == 2
    assert result.summary["cohorts"]["validation"]["failed_slides"] == 2
    assert result.excluded.set_index("patient_id").loc[scores.loc[1, "patient_id"], "reason"].startswith("no slide with status ok")
    assert result.summary["cohorts"]["validation"]["n"] == 49


def test_cohort_without_events_is_not_estimable(simulate):
    scores, clinical = simulate(60, seed=4)
    clinical["event"] = 0
    result = analyze(scores, clinical, FAST)
    c = result.summary["cohorts"]["validation"]
    assert c["events"] == 0
    for model in ("hr", "hr_adjusted"):
        for key in ("uncertain_vs_good", "poor_vs_good"):
            assert _null_with_reason(c[model][key]) and "no events" in c[model][key]["reason"]
    assert c["logrank_p"] is None and "no events" in c["not_estimable"]["logrank_p"]
    assert c["c_index"]["value"] is None and c["c_index"]["reason"]
    assert c["hr_per_sd"]["hr"] is None
    assert result.summary["primary"]["result"]["hr"] is None and result.summary["primary"]["reason"]
    json.loads(summary_json(result.summary))  # strict JSON: no NaN anywhere


def test_empty_group_and_group_without_events(simulate):
    scores, clinical = simulate(150, seed=5)
    scores = scores[scores["risk_group"] != "uncertain"]
    c = analyze(scores, clinical, FAST).summary["cohorts"]["validation"]
    assert c["counts"]["uncertain"] == 0 and c["shares"]["uncertain"] == 0
    assert _null_with_reason(c["hr"]["uncertain_vs_good"]) and "no patients" in c["hr"]["uncertain_vs_good"]["reason"]
    assert c["hr"]["poor_vs_good"]["hr"] > 1                 # the other comparison is still estimated
    assert c["logrank_pairwise"]["uncertain_vs_good"]["p"] is None
    poor = scores.loc[scores["risk_group"] == "poor", "patient_id"]
    clinical.loc[clinical["patient_id"].isin(poor), "event"] = 0
    c = analyze(scores, clinical, FAST).summary["cohorts"]["validation"]
    assert _null_with_reason(c["hr"]["poor_vs_good"]) and "no events in group 'poor'" in c["hr"]["poor_vs_good"]["reason"]


def test_one_valued_covariate_is_dropped_with_a_note(simulate):
    scores, clinical = simulate(150, seed=6)
    clinical["pN"] = 0
    c = analyze(scores, clinical, FAST).summary["cohorts"]["validation"]
    assert c["adjusted_for"] == ["pT"]
    assert any("'pN' has a single value" in n for n in c["notes"])
    assert c["hr_adjusted"]["poor_vs_good"]["hr"] is not None
    clinical["pT"] = 3
    c = analyze(scores, clinical, FAST).summary["cohorts"]["validation"]
    assert c["adjusted_for"] == []
    assert _null_with_reason(c["hr_adjusted"]["poor_vs_good"]) and "covariates" in c["hr_adjusted"]["poor_vs_good"]["reason"]
    assert c["hr"]["poor_vs_good"]["hr"] is not None


def test_missing_configured_covariate_and_marker_are_reported(simulate):
    scores, clinical = simulate(120, seed=7)
    config = AnalysisConfig(n_bootstrap=20, covariates=("pT", "stage"), reference_marker="msi")
    result = analyze(scores, clinical, config)
    c = result.summary["cohorts"]["validation"]
    assert c["adjusted_for"] == ["pT"] and any("'stage' is not a column" in n for n in c["notes"])
    assert c["reference_marker"]["name"] is None and "msi" in c["reference_marker"]["reason"]


def test_invalid_risk_group_and_duplicate_clinical_rows(simulate):
    scores, clinical = simulate(60, seed=8)
    scores.loc[0, "risk_group"] = "medium"
    clinical = pd.concat([clinical, clinical.iloc[[1]].assign(time=99.0)], ignore_index=True)   # conflicting duplicate
    clinical = pd.concat([clinical, clinical.iloc[[2]]], ignore_index=True)                     # identical duplicate
    result = analyze(scores, clinical, FAST)
    reasons = result.excluded.set_index("patient_id")["reason"]
    assert "risk_group" in reasons[scores.loc[0, "patient_id"]]
    assert "different values" in reasons[clinical.loc[1, "patient_id"]]
    assert clinical.loc[2, "patient_id"] in set(result.patients["patient_id"])
    assert any("identical values" in n for n in result.summary["notes"])


def test_marker_levels_order_or_refuse():
    assert marker_levels(pd.Series(["3", "1", "2", None]))[0] == ["1", "2", "3"]
    assert marker_levels(pd.Series(["G3", "G1", "G2"]))[0] == ["G1", "G2", "G3"]
    assert marker_levels(pd.Series(["high", "low"]))[0] == ["low", "high"]
    assert marker_levels(pd.Series(["poorly", "well", "moderately"]))[0] == ["well", "moderately", "poorly"]
    levels, reason = marker_levels(pd.Series(["MSI", "MSS"]))
    assert levels is None and "reference_order" in reason       # never a guessed (maybe flipped) order
    assert marker_levels(pd.Series(["MSI", "MSS", "unknown"]), order=["MSI", "MSS"])[0] == ["MSI", "MSS"]


def test_several_slides_per_patient_are_aggregated(simulate):
    scores, clinical = simulate(40, seed=9)
    second = scores.iloc[[0]].assign(slide_id="b", score=scores.loc[0, "score"] + 0.2, risk_group="poor")
    prepared = prepare(pd.concat([scores, second], ignore_index=True), clinical)
    row = prepared.patients.set_index("patient_id").loc[scores.loc[0, "patient_id"]]
    assert row["score"] == pytest.approx(scores.loc[0, "score"] + 0.1)   # mean of the two slides
    assert row["risk_group"] == "poor" and row["n_slides"] == 2           # most severe group, said so
    assert any("most severe" in n for n in prepared.notes)
    # the same patient in two cohorts is two analysis units
    other = scores.iloc[[0]].assign(cohort="test")
    prepared = prepare(pd.concat([scores, other], ignore_index=True), clinical)
    assert len(prepared.patients) == 41


def test_missing_columns_raise_clear_errors(simulate):
    scores, clinical = simulate(20, seed=10)
    with pytest.raises(ClinicalError, match="missing column.*event"):
        analyze(scores, clinical.drop(columns="event"))
    with pytest.raises(ConfigurationError, match="missing column.*score"):
        analyze(scores.drop(columns="score"), clinical)
    with pytest.raises(ConfigurationError, match="time_points"):
        AnalysisConfig(time_points=(4, 2))


def test_everything_bad_at_once_still_writes_every_output(simulate, tmp_path):
    s1, c1 = simulate(60, seed=12, cohort="tuning")
    c1["event"] = 0
    s2, c2 = simulate(40, seed=13, cohort="test")
    s2 = s2[s2["risk_group"] == "good"]                     # a single group
    scores, clinical = pd.concat([s1, s2], ignore_index=True), pd.concat([c1, c2], ignore_index=True).astype(object)
    clinical.loc[0, "time"] = "n/a"
    clinical["grade"] = "x"
    result = analyze(scores, clinical, AnalysisConfig(n_bootstrap=0))
    paths = write_analysis(result, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["primary"]["result"] is None and "validation" in summary["primary"]["reason"]
    assert summary["cohorts"]["test"]["logrank_p"] is None
    assert "fewer than two" in summary["cohorts"]["test"]["not_estimable"]["logrank_p"]
    assert "reference_order" in summary["cohorts"]["test"]["reference_marker"]["reason"]
    html = paths["report"].read_text()
    assert "not estimable" in html and "tuning cohort" in html


def test_sparse_group_does_not_take_the_other_comparison_down(simulate):
    scores, clinical = simulate(120, seed=14)
    uncertain = scores.index[scores["risk_group"] == "uncertain"]
    scores.loc[uncertain[1:], "risk_group"] = "good"          # one uncertain patient left ...
    pid = scores.loc[uncertain[0], "patient_id"]
    first = clinical["time"].min() / 2
    clinical.loc[clinical["patient_id"] == pid, ["time", "event"]] = [first, 1]   # ... who dies first: HR -> infinity
    c = analyze(scores, clinical, AnalysisConfig(n_bootstrap=0, reference_marker=None)).summary["cohorts"]["validation"]
    assert _null_with_reason(c["hr"]["uncertain_vs_good"])
    assert c["hr"]["poor_vs_good"]["hr"] > 1 and c["hr"]["poor_vs_good"]["reason"] is None


@pytest.mark.parametrize("breakage", ["uncalibrated", "all_failed"])
def test_nothing_analysable_still_gives_a_summary(simulate, breakage, tmp_path):
    scores, clinical = simulate(30, seed=15)
    if breakage == "uncalibrated":
        scores["risk_group"] = None
    else:
        scores["status"] = "failed"
    result = analyze(scores, clinical, AnalysisConfig(n_bootstrap=0))
    s = result.summary
    assert s["n_analysed"] == 0 and s["excluded"]["n"] == 30
    assert s["cohorts"]["validation"]["n"] == 0
    assert _null_with_reason(s["cohorts"]["validation"]["hr"]["poor_vs_good"])
    expected = "uncalibrated" if breakage == "uncalibrated" else "scoring failed"
    assert expected in result.excluded["reason"].iloc[0]
    write_analysis(result, tmp_path)
    json.loads((tmp_path / "summary.json").read_text())
