"""Lock -> the real `score` stage -> analyze under the protocol: the bundle id that score records is the one
the protocol checks (tiny random-weight bundle from the scoring tests, the tiny synthetic cohort)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from wsi_prognosis.cli import main
from wsi_prognosis.errors import ProtocolError

SCORING_CONFTEST = Path(__file__).resolve().parents[1] / "scoring" / "conftest.py"


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> dict:
    spec = importlib.util.spec_from_file_location("scoring_conftest_for_study", SCORING_CONFTEST)
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    from wsi_prognosis.cohort import read_manifest
    from wsi_prognosis.ensemble import derive_bundle, load_bundle
    from wsi_prognosis.synth import SynthConfig, make_cohort
    from wsi_prognosis.tiling.config import TilingConfig
    from wsi_prognosis.tiling.pipeline import tile_manifest

    root = tmp_path_factory.mktemp("study-real")
    plain = load_bundle(helpers.make_bundle(root / "bundle", helpers.SMALL_RESOLUTIONS))
    make_cohort(root / "cohort", SynthConfig.from_preset("tiny", seed=3, n_training=2, n_tuning=4, n_validation=4,
                                                         width_px=768, height_px=640, workers=1))
    manifest = root / "cohort" / "manifest.csv"
    tile_manifest(read_manifest(manifest), root / "tiles", TilingConfig.from_tile_spec(plain.tile_spec), workers=1)
    bundles = {}
    for name, (low, high) in {"locked": (0.3, 0.7), "other": (0.4, 0.6)}.items():
        bundles[name] = derive_bundle(plain, root / name, thresholds={"low": low, "high": high},
                                      calibration={"method": "fixed", "cohort": "tuning",
                                                   "shares": {"good": 0.5, "uncertain": 0.25, "poor": 0.25}})
    protocol = root / "study" / "protocol.json"
    assert main(["protocol", f"bundle={bundles['locked'].dir}", f"out={protocol}", f"manifest={manifest}",
                 f"clinical={root / 'cohort' / 'clinical.csv'}", "secondary.covariates=[pT]"]) == 0
    for name, bundle in bundles.items():  # scored after the lock; the other bundle scores the validation cohort only
        extra = [] if name == "locked" else ["cohort=validation"]
        assert main(["score", f"bundle={bundle.dir}", f"manifest={manifest}", f"tiles={root / 'tiles'}",
                     f"out={root / ('scores_' + name)}", "exports.heatmap=false", "exports.geojson=false",
                     *helpers.FAST_ENGINE, *extra]) == 0
    return {"root": root, "protocol": protocol, "clinical": root / "cohort" / "clinical.csv", "bundles": bundles}


def test_real_score_output_verifies_and_analyses_under_the_protocol(scored, tmp_path):
    root = scored["root"]
    run = json.loads((root / "scores_locked" / "run_score.json").read_text())
    assert run["bundle_id"] == scored["bundles"]["locked"].id  # what score records, and what the protocol checks
    assert main(["analyze", f"scores={root / 'scores_locked' / 'scores.csv'}", f"clinical={scored['clinical']}",
                 f"out={tmp_path / 'a'}", f"protocol={scored['protocol']}", "analysis.bootstrap.n=0"]) == 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    p = summary["protocol"]
    assert p["bundle_id"] == scored["bundles"]["locked"].id and p["scores_verified_by"].endswith("run_score.json")
    assert p["primary"]["cohort"] == "validation" and "met" in p["primary"]
    assert p["deviations"] == ["analysis.bootstrap.n: the protocol locks 1000, this run uses 0"]


def test_real_scores_of_another_bundle_are_refused(scored, tmp_path):
    from wsi_prognosis.study.protocol import ProtocolRun

    with pytest.raises(ProtocolError, match="scored with bundle .* but the protocol locks bundle"):
        ProtocolRun(scored["protocol"], scored["root"] / "scores_other" / "scores.csv", {})
    with pytest.raises(ProtocolError, match="scored with bundle"):  # patient_scores.csv: the same record
        ProtocolRun(scored["protocol"], scored["root"] / "scores_other" / "patient_scores.csv", {})
