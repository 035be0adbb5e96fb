"""The stage's config validation, re-derived risk groups, and the tidy-API example the notebook follows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from wsi_prognosis.errors import ConfigurationError
from wsi_prognosis.survival import config_from_dict, prepare

REPO = Path(__file__).resolve().parents[2]


def test_stage_config_defaults_match_yaml():
    yaml = OmegaConf.load(REPO / "wsi_prognosis" / "configs" / "analyze.yaml")
    assert {"out", "scores", "clinical"} <= set(yaml)
    config = config_from_dict(OmegaConf.to_container(yaml.analysis))
    assert config.time_points == (0, 2, 4, 6, 8) and config.time_unit == "years"
    assert config.covariates is None and config.reference_marker == "auto" and config.n_bootstrap == 1000
    assert config.primary.cohort == "validation" and config.primary.comparison == "poor_vs_good"


def test_stage_config_errors_name_the_key():
    with pytest.raises(ConfigurationError, match="analysis.tiem_unit"):
        config_from_dict({"tiem_unit": "years"})
    with pytest.raises(ConfigurationError, match="thresholds"):
        config_from_dict({"thresholds": {"low": 0.5}})
    with pytest.raises(ConfigurationError, match="primary.measure"):
        config_from_dict({"primary": {"measure": "auc"}})
    config = config_from_dict({"thresholds": {"low": 0.3, "high": 0.6}, "reference_marker": None, "covariates": []})
    assert config.thresholds == (0.3, 0.6) and config.reference_marker is None and config.covariates == ()


def test_thresholds_rederive_groups_for_foreign_scores(simulate):
    scores, clinical = simulate(50, seed=21)
    foreign = scores[["patient_id", "cohort", "score"]]          # another tool's table: no groups, no status
    prepared = prepare(foreign, clinical, thresholds=(0.35, 0.65))
    p = prepared.patients
    assert ((p["score"] < 0.35) == (p["risk_group"] == "good")).all()
    assert ((p["score"] >= 0.65) == (p["risk_group"] == "poor")).all()
    assert prepared.input_level == "patient" and len(p) == 50
    assert "thresholds low=0.3500, high=0.6500." in prepared.notes[0]
    calibrated = prepare(foreign, clinical, thresholds=(0.41234567890123456, 0.6))  # as a quantile fit gives them
    assert "low=0.4123, high=0.6000" in calibrated.notes[0] and "0.412345" not in calibrated.notes[0]
    with pytest.raises(ConfigurationError, match="risk_group"):
        prepare(foreign, clinical)


def test_tidy_api_example_runs(simulate):
    spec = importlib.util.spec_from_file_location("survival_api_example", REPO / "scripts" / "survival_api_example.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    scores, clinical = simulate(120, seed=22)
    summary = module.example(scores, clinical, None, n_bootstrap=0)   # write_analysis: see test_outputs
    assert summary["cohorts"]["validation"]["n"] == 120
    assert summary["cohorts"]["validation"]["c_index"]["ci_low"] is None  # bootstrap off: said, not faked
