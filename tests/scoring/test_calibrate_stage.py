"""`calibrate` on a synthetic tuning cohort: shares, a new bundle, thresholds applied unchanged."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import FAST_ENGINE, cli, read_scores
from wsi_prognosis.calibration import assign_risk_group, fit_thresholds
from wsi_prognosis.ensemble import load_bundle


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, small_bundle, synth_cohort):
    before = snapshot(small_bundle)
    out = tmp_path_factory.mktemp("calibrated") / "bundle"
    assert cli("calibrate", f"bundle={small_bundle}", f"manifest={synth_cohort / 'manifest.csv'}",
               f"clinical={synth_cohort / 'clinical.csv'}", f"tiles={synth_cohort / 'tiles'}", f"out={out}",
               "calibration.n_bootstrap=50", *FAST_ENGINE) == 0
    return out, before


def test_quantile_hits_its_shares_on_tuning_patients(calibrated, synth_cohort):
    out, _ = calibrated
    bundle = load_bundle(out)
    tuning = pd.read_csv(out / "calibration" / "tuning_patient_scores.csv", dtype={"patient_id": str},
                         float_precision="round_trip")
    n_tuning = (pd.read_csv(synth_cohort / "manifest.csv")["cohort"] == "tuning").sum()
    assert len(tuning) == n_tuning and set(tuning["cohort"]) == {"tuning"}
    groups = [assign_risk_group(s, bundle.thresholds) for s in tuning["score"]]
    assert groups == tuning["risk_group"].tolist()
    for group, share in {"good": 0.60, "uncertain": 0.15, "poor": 0.25}.items():
        assert abs(groups.count(group) / len(groups) - share) <= 1 / len(groups) + 1e-9
    refit = fit_thresholds(tuning["score"].to_numpy(), method="quantile", n_bootstrap=0)
    assert bundle.thresholds == {"low": refit.low, "high": refit.high}
    cal = bundle.calibration
    assert cal["method"] == "quantile" and cal["cohort"] == "tuning" and cal["level"] == "patient"
    assert cal["ci"]["n_bootstrap"] == 50 and cal["ci"]["low"][0] <= bundle.thresholds["low"] <= cal["ci"]["low"][1]
    assert sum(g["n"] for g in cal["groups"].values()) == n_tuning and "events" in cal["groups"]["poor"]


def test_original_bundle_untouched_and_new_id(calibrated, small_bundle):
    out, before = calibrated
    assert snapshot(small_bundle) == before
    original, derived = load_bundle(small_bundle), load_bundle(out)
    assert original.thresholds is None and derived.id != original.id and derived.parent_id == original.id
    assert [m.sha256 for m in derived.members] == [m.sha256 for m in original.members]
    record = json.loads((out / "run_calibrate.json").read_text())
    assert record["bundle_id"] == derived.id and record["thresholds"] == derived.thresholds


def test_thresholds_are_applied_unchanged_to_test_and_validation(calibrated, synth_cohort, tmp_path):
    out, _ = calibrated
    bundle = load_bundle(out)
    scored = tmp_path / "scored"
    for cohort in ("test", "validation"):
        assert cli("score", f"bundle={out}", f"manifest={synth_cohort / 'manifest.csv'}", f"tiles={synth_cohort / 'tiles'}",
                   f"out={scored / cohort}", f"cohort={cohort}", *FAST_ENGINE, "exports.heatmap=false",
                   "exports.geojson=false") == 0
        scores = read_scores(scored / cohort)
        assert (scores["status"] == "ok").all() and set(scores["cohort"]) == {cohort}
        assert scores["risk_group"].tolist() == [assign_risk_group(s, bundle.thresholds) for s in scores["score"]]
        patients = pd.read_csv(scored / cohort / "patient_scores.csv")
        assert patients["risk_group"].tolist() == [assign_risk_group(s, bundle.thresholds) for s in patients["score"]]
        assert json.loads((scored / cohort / "run_score.json").read_text())["thresholds"] == bundle.thresholds
    # the validation cohort never moves the thresholds: the bundle on disk is the same after scoring
    assert load_bundle(out).thresholds == bundle.thresholds and load_bundle(out).id == bundle.id


def test_the_tuning_cohort_is_scored_by_one_worker_without_claims(calibrated, synth_cohort):
    """calibrate scores into the new bundle's own folder alone (claims off there): no .claims, every
    tuning slide has its record, and the tables are written."""
    out, _ = calibrated
    scoring = out / "calibration" / "scoring"
    n_tuning = int((pd.read_csv(synth_cohort / "manifest.csv")["cohort"] == "tuning").sum())
    assert not (scoring / ".claims").exists() and (scoring / "patient_scores.csv").is_file()
    assert len(list((scoring / "slides").glob("*.json"))) == n_tuning == len(read_scores(scoring))


def test_reusing_scores_gives_the_same_thresholds(calibrated, small_bundle, tmp_path):
    out, _ = calibrated
    again = tmp_path / "again"
    scores = out / "calibration" / "scoring" / "scores.csv"
    assert cli("calibrate", f"bundle={small_bundle}", f"scores={scores}", f"out={again}", "calibration.n_bootstrap=0") == 0
    assert load_bundle(again).thresholds == load_bundle(out).thresholds


def test_survival_method_and_refusals(calibrated, small_bundle, synth_cohort, tmp_path):
    out, _ = calibrated
    scores = out / "calibration" / "scoring" / "scores.csv"
    survival = tmp_path / "survival"
    assert cli("calibrate", f"bundle={small_bundle}", f"scores={scores}", f"clinical={synth_cohort / 'clinical.csv'}",
               f"out={survival}", "calibration.method=survival", "calibration.min_share=0.15",
               "calibration.n_bootstrap=10") == 0
    bundle = load_bundle(survival)
    cal = bundle.calibration
    assert cal["method"] == "survival" and min(cal["shares"].values()) >= 0.15 - 1e-9
    assert 0 <= bundle.thresholds["low"] < bundle.thresholds["high"] <= 1
    assert cal["details"]["criterion"] == "logrank" and cal["details"]["statistic"] >= 0
    # the input bundle's own folder is refused, as is a survival fit without outcomes
    assert cli("calibrate", f"bundle={small_bundle}", f"scores={scores}", f"out={small_bundle}") == 2
    assert cli("calibrate", f"bundle={small_bundle}", f"scores={scores}", f"out={tmp_path / 'x'}",
               "calibration.method=survival") == 2


def test_rescoring_with_the_calibrated_bundle_reuses_finished_slides(calibrated, small_bundle, synth_cohort):
    out, _ = calibrated
    scoring = out / "calibration" / "scoring"  # scored with the uncalibrated bundle during calibrate
    stamps = {p.name: p.stat().st_mtime_ns for p in (scoring / "slides").glob("*.json")}
    assert cli("score", f"bundle={out}", f"manifest={synth_cohort / 'manifest.csv'}", f"tiles={synth_cohort / 'tiles'}",
               f"out={scoring}", "cohort=tuning", *FAST_ENGINE) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (scoring / "slides").glob("*.json")} == stamps
    scores = read_scores(scoring)
    bundle = load_bundle(out)
    assert scores["risk_group"].tolist() == [assign_risk_group(s, bundle.thresholds) for s in scores["score"]]
