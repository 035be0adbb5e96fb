"""The locked protocol: lock -> score -> analyze under it; deviations listed; edits and foreign scores refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from study_helpers import make_calibrated_bundle, write_scored_cohorts

from wsi_prognosis.cli import main
from wsi_prognosis.errors import BundleError, ProtocolError
from wsi_prognosis.study.protocol import ProtocolRun, build_protocol, load_protocol, protocol_id

FAST = ["analysis.bootstrap.n=50"]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("study")
    bundle = make_calibrated_bundle(root)
    scores, clinical = write_scored_cohorts(root / "scores", bundle)
    protocol = root / "protocol" / "protocol.json"
    assert main(["protocol", f"bundle={bundle}", f"out={protocol}", f"clinical={clinical}",
                 "secondary.pool=[test,validation]", *FAST]) == 0
    return {"root": root, "bundle": bundle, "scores": scores, "clinical": clinical, "protocol": protocol}


def _analyze(study: dict, out: Path, *extra: str) -> int:
    return main(["analyze", f"scores={study['scores']}", f"clinical={study['clinical']}", f"out={out}",
                 f"protocol={study['protocol']}", *extra])


def test_lock_writes_json_and_html_with_a_content_id(study):
    record = json.loads(study["protocol"].read_text())
    assert record["id"] == protocol_id(record) and len(record["id"]) == 64
    assert record["bundle"]["id"] == json.loads((study["bundle"] / "bundle.json").read_text())["id"]
    assert record["analysis"]["thresholds"] == record["bundle"]["thresholds"]
    assert record["primary"]["cohort"] == "validation" and record["primary"]["alpha"] == 0.05
    assert "CI excludes 1" in record["primary"]["decision_rule"]
    assert record["analysis"]["covariates"] == ["pT", "pN"] and record["analysis"]["pool"] == ["test", "validation"]
    assert record["locked_at"].endswith("Z") and record["versions"]["statsmodels"] != "not installed"
    html = study["protocol"].with_suffix(".html").read_text()
    assert record["id"] in html and "Decision rule" in html
    assert (study["protocol"].parent / "run_protocol.json").is_file()


def test_round_trip_primary_result_and_met(study, tmp_path):
    assert _analyze(study, tmp_path / "a") == 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    p = summary["protocol"]
    record = json.loads(study["protocol"].read_text())
    assert p["id"] == record["id"] and p["locked_at"] == record["locked_at"] and p["deviations"] == []
    primary = p["primary"]
    assert set(primary) >= {"cohort", "measure", "comparison", "value", "ci_low", "ci_high", "p", "met"}
    hr = summary["cohorts"]["validation"]["hr"]["poor_vs_good"]
    assert primary["value"] == hr["hr"] and primary["ci_low"] == hr["ci_low"] and primary["status"] == "as_planned"
    assert primary["met"] is True and hr["ci_low"] > 1  # simulated HR 4 vs good
    assert summary["cohorts"]["validation"]["adjusted_for"] == ["pT", "pN"]
    assert "pooled" in summary and summary["pooled"]["cohorts"] == ["test", "validation"]
    report = (tmp_path / "a" / "report.html").read_text()
    assert report.index(record["id"][:16]) < report.index("<h2>Overview</h2>")  # the report opens with the protocol box
    assert "decision rule met" in report and ">exploratory<" not in report.split("<h2>Overview</h2>")[0]
    run = json.loads((tmp_path / "a" / "run_analyze.json").read_text())
    assert run["inputs"]["protocol"]["sha256"]
    # the locked thresholds re-derive the groups; the report's note prints them with 4 decimals
    low, high = record["bundle"]["thresholds"]["low"], record["bundle"]["thresholds"]["high"]
    assert f"thresholds low={low:.4f}, high={high:.4f}" in report and repr(low) not in report and repr(high) not in report


def test_thresholds_print_with_4_decimals_and_stay_exact_in_json(study):
    record = json.loads(study["protocol"].read_text())
    low, high = record["bundle"]["thresholds"]["low"], record["bundle"]["thresholds"]["high"]
    assert len(repr(low)) > 10 and record["analysis"]["thresholds"] == {"low": low, "high": high}  # exact in JSON
    html = study["protocol"].with_suffix(".html").read_text()
    assert f"score &lt; {low:.4f}" in html and repr(low) not in html and repr(high) not in html
    run = ProtocolRun(study["protocol"], study["scores"], {"thresholds": {"low": 0.3, "high": high}})
    assert run.deviations == [f"analysis.thresholds.low: the protocol locks {low:.4f}, this run uses 0.3000"]
    assert run.config.thresholds == (0.3, high)  # applied exactly
    # two values that look alike with 4 decimals are shown in full, so a deviation never reads "x, this run uses x"
    near = ProtocolRun(study["protocol"], study["scores"], {"thresholds": {"low": low + 1e-9, "high": high}})
    assert near.deviations == [f"analysis.thresholds.low: the protocol locks {low!r}, this run uses {low + 1e-9!r}"]


def test_changed_covariate_is_a_listed_deviation(study, tmp_path):
    assert _analyze(study, tmp_path / "b", "analysis.covariates=[pT]") == 0
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    deviations = summary["protocol"]["deviations"]
    assert len(deviations) == 1 and "analysis.covariates" in deviations[0] and "['pT', 'pN']" in deviations[0]
    assert summary["protocol"]["primary"]["status"] == "deviates_from_protocol"
    assert summary["cohorts"]["validation"]["adjusted_for"] == ["pT"]  # the run's choice is applied, and reported
    assert "deviates from protocol" in (tmp_path / "b" / "report.html").read_text()


def test_other_primary_cohort_is_a_deviation(study):
    run = ProtocolRun(study["protocol"], study["scores"], {"primary": {"cohort": "test"}})
    assert run.config.primary.cohort == "test" and any("primary.cohort" in d for d in run.deviations)
    same = ProtocolRun(study["protocol"], study["scores"], {"covariates": ["pT", "pN"], "bootstrap": {"n": 50}})
    assert same.deviations == []  # setting the locked values is no deviation


def test_hand_edited_protocol_is_refused(study, tmp_path, capsys):
    record = json.loads(study["protocol"].read_text())
    record["primary"]["cohort"] = "test"
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(record, indent=2))
    with pytest.raises(ProtocolError, match="edited after it was locked"):
        load_protocol(edited)
    code = main(["analyze", f"scores={study['scores']}", f"clinical={study['clinical']}", f"out={tmp_path / 'c'}",
                 f"protocol={edited}"])
    assert code == 2 and "edited after it was locked" in capsys.readouterr().err
    assert not (tmp_path / "c" / "summary.json").exists()


def test_scores_from_another_bundle_are_refused(study, tmp_path, capsys):
    other = make_calibrated_bundle(tmp_path / "other", seed=9, name="other_bundle")
    scores, clinical = write_scored_cohorts(tmp_path / "other_scores", other)
    code = main(["analyze", f"scores={scores}", f"clinical={clinical}", f"out={tmp_path / 'd'}",
                 f"protocol={study['protocol']}"])
    err = capsys.readouterr().err
    assert code == 2 and "scored with bundle" in err and "protocol locks bundle" in err
    bare = tmp_path / "bare" / "scores.csv"
    bare.parent.mkdir()
    bare.write_text(study["scores"].read_text())  # no run_score.json: the bundle cannot be verified
    with pytest.raises(ProtocolError, match="no run_score.json"):
        ProtocolRun(study["protocol"], bare, {})


def test_clinical_without_a_locked_covariate_is_refused(study, tmp_path):
    import pandas as pd

    clinical = pd.read_csv(study["clinical"]).drop(columns=["pN"])
    path = tmp_path / "clinical.csv"
    clinical.to_csv(path, index=False)
    code = main(["analyze", f"scores={study['scores']}", f"clinical={path}", f"out={tmp_path / 'e'}",
                 f"protocol={study['protocol']}"])
    assert code == 2


def _lock(study, **kw):
    args = dict(primary={"cohort": "validation"}, secondary={"covariates": ["pT", "pN"]}, analysis={},
                endpoint={}, clinical=study["clinical"])
    args.update(kw)
    return build_protocol(args.pop("bundle", study["bundle"]), **args)


def test_lock_refusals_name_the_value(study, tmp_path):
    with pytest.raises(ProtocolError, match="no thresholds"):
        _lock(study, bundle=study["root"] / "bundle_calibrated-selected")
    with pytest.raises(ProtocolError, match="'validaton'.*did you mean 'validation'"):
        _lock(study, primary={"cohort": "validaton"})
    with pytest.raises(ProtocolError, match="'pn'.*did you mean 'pN'"):
        _lock(study, secondary={"covariates": ["pT", "pn"]})
    with pytest.raises(ProtocolError, match=r"primary.alpha=0.6.*\(0, 0.5\)"):
        _lock(study, primary={"alpha": 0.6})
    code = main(["protocol", f"bundle={study['bundle']}", f"out={study['protocol']}"])
    assert code == 2  # an existing protocol is never replaced
    tampered = make_calibrated_bundle(tmp_path / "t", name="tampered")
    weights = next((tampered / "members").glob("*.pt"))
    weights.write_bytes(weights.read_bytes() + b"!")
    with pytest.raises(BundleError, match="sha256"):
        _lock(study, bundle=tampered)


def test_without_protocol_summary_is_as_before(study, tmp_path):
    assert main(["analyze", f"scores={study['scores']}", f"clinical={study['clinical']}", f"out={tmp_path / 'f'}",
                 *FAST]) == 0
    summary = json.loads((tmp_path / "f" / "summary.json").read_text())
    assert "protocol" not in summary and "pooled" not in summary
    assert set(summary["cohorts"]["validation"]["landmarks"]["5"]) == {"good", "uncertain", "poor"}
