"""The domain-shift check: statistics (unit), score -> shift.json end to end, and analyze's shares with CIs.

A deliberately shifted cohort (stain densities x1.6 and a blur, re-rendered from the tuning slides)
is flagged; the same slides re-written without a change stay quiet. Thresholds are never refitted.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import FAST_ENGINE, cli
from wsi_prognosis.scoring.shift import (
    ShiftLimits,
    build_reference,
    cohort_shift,
    in_sample_cohorts,
    shift_report,
    shift_rows,
    subsample_indices,
    tile_stats,
)
from wsi_prognosis.survival.shift_report import (
    ShareShiftConfig,
    attach_shift,
    cohort_share_shift,
    cohort_shift_html,
    share_ci,
    shift_overview_html,
)

REPO = Path(__file__).resolve().parents[2]
TILES = sorted((REPO / "tests" / "data" / "tiles").glob("TCGA-*.jpg"))


def stain_scale(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Scale every optical density by `factor` (a denser / paler stain), back to uint8 RGB."""
    od = -np.log((rgb.astype(np.float32) + 1) / 256)
    return np.clip(256 * np.exp(-factor * od) - 1, 0, 255).round().astype(np.uint8)


def blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return np.clip(gaussian_filter(rgb.astype(np.float32), sigma=(sigma, sigma, 0)), 0, 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def real_patches() -> np.ndarray:
    """64-px patches of real H&E (TCGA colorectal tiles in tests/data)."""
    patches = []
    for path in TILES:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        for y in range(0, rgb.shape[0] - 63, 64):
            for x in range(0, rgb.shape[1] - 63, 64):
                patches.append(rgb[y:y + 64, x:x + 64])
    return np.stack(patches)


def slides_from(patches: np.ndarray, n_slides: int, seed: int, transform=None) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_slides):
        tiles = patches[rng.choice(len(patches), 12, replace=False)]
        if transform is not None:
            tiles = np.stack([transform(t) for t in tiles])
        out.append(tile_stats(tiles))
    return out


# --------------------------------------------------------------------------- unit: the statistics

def test_score_shift_flags_a_shifted_sample_and_not_an_unshifted_one():
    rng = np.random.default_rng(0)
    tuning = rng.normal(0.50, 0.05, 300)
    ref = build_reference(tuning, level="patient", shares={"good": 0.6, "uncertain": 0.15, "poor": 0.25}, cohort="tuning")
    assert ref["n"] == 300 and abs(ref["iqr"] - 0.0674) < 0.01 and len(ref["scores"]) == 300

    same = cohort_shift(ref, rng.normal(0.50, 0.05, 150))
    assert not same["flagged"], same["reasons"]
    assert abs(same["score_shift_iqr"]) < 0.3 and same["ks"] < 0.15

    shifted = cohort_shift(ref, rng.normal(0.45, 0.05, 150))  # the whole cohort 0.05 lower: ~0.75 IQR
    assert shifted["flagged"] and shifted["score_shift_iqr"] < -0.5 and shifted["ks"] > 0.3 and shifted["ks_p"] < 1e-6
    assert any("tuning IQRs" in r for r in shifted["reasons"]) and any("KS" in r for r in shifted["reasons"])

    few = cohort_shift(ref, rng.normal(0.50, 0.05, 3))  # three slides: KS cannot reach p < 0.05 on noise
    assert not any("KS" in r for r in few["reasons"])
    # a much wider spread with the same median: KS flags, the median does not
    wide = cohort_shift(ref, rng.normal(0.50, 0.20, 200))
    assert any("KS" in r for r in wide["reasons"]) and not any("IQRs" in r for r in wide["reasons"])


def test_tile_stats_detect_a_stain_scaled_and_a_blurred_tile_set(real_patches):
    a = tile_stats(real_patches[:16])
    b = tile_stats(np.stack([stain_scale(t, 1.5) for t in real_patches[:16]]))
    assert 0.05 < a["od_h"] < 1.5 and 0.0 < a["od_e"] < 1.5 and a["sharpness"] > 0
    assert 1.3 < b["od_h"] / a["od_h"] < 1.7 and 1.3 < b["od_e"] / a["od_e"] < 1.7
    blurred = tile_stats(np.stack([blur(t, 1.5) for t in real_patches[:16]]))
    assert blurred["sharpness"] < 0.3 * a["sharpness"] and blurred["sharpness_rel"] < 0.3 * a["sharpness_rel"]
    # a denser stain raises the raw Laplacian variance (contrast) but not the contrast-free sharpness the check uses
    assert b["sharpness"] > 1.15 * a["sharpness"] and abs(np.log10(b["sharpness_rel"] / a["sharpness_rel"])) < 0.05
    assert subsample_indices(10).tolist() == list(range(10)) and subsample_indices(100, 5).tolist() == [0, 25, 50, 74, 99]


def test_colour_and_sharpness_shift_against_the_reference(real_patches):
    tuning = slides_from(real_patches, 20, seed=1)
    ref = build_reference(np.linspace(0.4, 0.6, 20), level="slide", shares={"good": 0.6, "uncertain": 0.15, "poor": 0.25},
                          cohort="tuning", slide_stats=tuning)
    assert ref["tiles"]["n_slides"] == 20 and set(ref["tiles"]["stats"]) >= {"od_h", "od_e", "log10_sharpness"}
    scores = np.linspace(0.4, 0.6, 10)
    quiet = cohort_shift(ref, scores, slides_from(real_patches, 10, seed=2))
    assert not quiet["flagged"], quiet["reasons"]
    assert abs(quiet["tiles"]["od_h"]["shift_sd"]) < 1 and abs(quiet["tiles"]["log10_sharpness"]["shift_sd"]) < 1

    stained = cohort_shift(ref, scores, slides_from(real_patches, 10, seed=2, transform=lambda t: stain_scale(t, 1.4)))
    assert stained["flagged"] and stained["tiles"]["od_h"]["shift_sd"] > 2 and stained["tiles"]["od_e"]["shift_sd"] > 2
    assert any("haematoxylin" in r for r in stained["reasons"]) and not any("sharpness" in r for r in stained["reasons"])

    blurred = cohort_shift(ref, scores, slides_from(real_patches, 10, seed=2, transform=lambda t: blur(t, 1.0)))
    assert blurred["flagged"] and blurred["tiles"]["log10_sharpness"]["shift_sd"] < -2
    assert any("sharpness" in r for r in blurred["reasons"])


def test_no_reference_in_bundle_scores_and_says_so():
    class Bundle:
        id, calibration = "b0", {"method": "quantile"}   # calibrated before the check existed

    slides = pd.DataFrame({"slide_id": ["a", "b"], "patient_id": ["1", "2"], "cohort": ["x", "x"],
                           "score": [0.4, 0.5], "risk_group": ["good", "poor"], "status": ["ok", "ok"]})
    report = shift_report(Bundle(), slides, slides.drop(columns="slide_id"), {})
    assert report["reference"] == {"available": False, "reason": report["reference"]["reason"]}
    assert "no reference in bundle" in report["reference"]["reason"]
    assert report["flagged"] == [] and report["cohorts"]["x"]["note"] == "no reference in bundle"
    json.dumps(report, allow_nan=False)


def test_limits_validate():
    from wsi_prognosis.errors import ConfigurationError

    assert ShiftLimits.from_mapping({"max_ks": 0.2}).max_ks == 0.2
    for bad in ({"max_ks": 0}, {"max_colour": 1}, {"alpha": 2}):
        with pytest.raises(ConfigurationError):
            ShiftLimits.from_mapping(bad)
    with pytest.raises(ConfigurationError):
        ShareShiftConfig.from_mapping({"max_share_change": 10})


# --------------------------------------------------------------------------- unit: shares in the analysis

def test_share_shift_flags_a_moved_cohort_beyond_noise():
    tuning = {"good": 0.60, "uncertain": 0.15, "poor": 0.25}
    config = ShareShiftConfig()
    lo, hi = share_ci(60, 100)
    assert lo < 0.6 < hi and abs(lo - 0.502) < 1e-3
    moved = cohort_share_shift({"good": 88, "uncertain": 7, "poor": 5}, 100, tuning, config)
    assert moved["reasons"] and "good share 88 % vs 60 %" in moved["reasons"][0]
    assert moved["share_change"]["good"] == pytest.approx(0.28)
    assert not cohort_share_shift({"good": 63, "uncertain": 14, "poor": 23}, 100, tuning, config)["reasons"]
    # 10 patients, 8 good: +20 points but the tuning share lies inside the wide CI -> not flagged by default
    small = {"good": 8, "uncertain": 1, "poor": 1}
    assert not cohort_share_shift(small, 10, tuning, config)["reasons"]
    assert cohort_share_shift(small, 10, tuning, ShareShiftConfig(require_outside_ci=False))["reasons"]


# --------------------------------------------------------------------------- unit: the training cohort is in-sample

TUNING_SHARES = {"good": 0.60, "uncertain": 0.15, "poor": 0.25}
IN_SAMPLE = "in-sample (training): not flagged, expected to differ"


def _bundle(train_cohort: str | None) -> dict:
    """A bundle.json dict with a patient-level tuning reference (scores ~ N(0.5, 0.05)) and two members."""
    ref = build_reference(np.random.default_rng(3).normal(0.50, 0.05, 200), level="patient", shares=TUNING_SHARES,
                          cohort="tuning")
    configs = {} if train_cohort is None else {f"10x_{i}": {"data": {"train_cohort": train_cohort}} for i in range(2)}
    return {"id": "b1", "calibration": {"reference": ref}, "training_configs": configs}


def _scored(centres: dict[str, float], n: int = 80) -> pd.DataFrame:
    """One ok slide per patient; each cohort's scores ~ N(centre, 0.05)."""
    rng = np.random.default_rng(4)
    rows = []
    for cohort, centre in centres.items():
        for i, score in enumerate(rng.normal(centre, 0.05, n)):
            rows.append({"slide_id": f"{cohort}{i}", "patient_id": f"{cohort}{i}", "cohort": cohort, "score": score,
                         "risk_group": "good" if score < 0.45 else "poor", "status": "ok"})
    return pd.DataFrame(rows)


def test_training_cohort_with_shifted_scores_is_reported_but_not_flagged():
    slides = _scored({"training": 0.40, "validation": 0.40})  # both 0.10 below tuning: about 1.5 tuning IQRs
    report = shift_report(_bundle(None), slides, slides.drop(columns="slide_id"), {})
    train, validation = report["cohorts"]["training"], report["cohorts"]["validation"]
    assert report["in_sample_cohorts"] == ["training"] and report["flagged"] == ["validation"]
    assert validation["flagged"] and not validation["in_sample"]
    assert not train["flagged"] and train["in_sample"] and train["note"] == IN_SAMPLE
    # its numbers are still reported, with what would have flagged another cohort
    assert train["score_shift_iqr"] < -1 and train["ks"] > 0.5 and any("tuning IQRs" in r for r in train["reasons"])
    rows = {r["cohort"]: r for r in shift_rows(report)}
    assert rows["training"]["flagged"] is False and rows["training"]["reasons"].startswith(IN_SAMPLE + "; median score")
    assert rows["validation"]["flagged"] is True
    json.dumps(report, allow_nan=False)


def test_in_sample_cohorts_come_from_the_members_training_configs():
    slides = _scored({"training": 0.40, "train": 0.40})
    report = shift_report(_bundle("train"), slides, slides.drop(columns="slide_id"), {})
    assert report["in_sample_cohorts"] == ["train"] and report["flagged"] == ["training"]  # "training" is just a name here
    assert report["cohorts"]["train"]["note"] == "in-sample (train): not flagged, expected to differ"

    class Bundle:  # a loaded bundle (attributes, not keys)
        training_configs = {"40x_0": {"data": {"train_cohort": "site_a"}}, "10x_0": {"data": {}}}

    assert in_sample_cohorts(Bundle()) == ["site_a"] and in_sample_cohorts({"training_configs": {}}) == ["training"]


def test_analysis_shares_of_the_training_cohort_are_shown_but_not_flagged():
    moved = {"n": 100, "counts": {"good": 90, "uncertain": 5, "poor": 5}}  # +30 points good: far beyond 10
    summary = {"cohorts": {"training": dict(moved), "validation": dict(moved)}}
    check = {"flagged": False, "in_sample": True, "reasons": ["median score moved -1.50 tuning IQRs"]}
    loaded = {"source": "shift.json", "reference": {"shares": TUNING_SHARES, "level": "patient"}, "reason": None,
              "score_check": {"training": check}, "in_sample_cohorts": ["training"]}
    block = attach_shift(summary, loaded)
    assert block["flagged"] == ["validation"] and block["in_sample_cohorts"] == ["training"]
    train = summary["cohorts"]["training"]["shift"]
    assert not train["flagged"] and train["in_sample"] and train["note"] == IN_SAMPLE
    assert train["share_change"]["good"] == pytest.approx(0.30)
    assert len(train["reasons"]) == 3 and train["reasons"][-1].startswith("score check:")  # good, poor, score check
    assert summary["cohorts"]["validation"]["shift"]["flagged"]
    overview = shift_overview_html(summary)
    assert "<b>validation</b>" in overview and "<b>training</b>" not in overview and "in-sample: training" in overview
    section = cohort_shift_html(train)
    assert IN_SAMPLE in section and "Domain shift flagged" not in section
    # shift.json written before in-sample cohorts were recorded: the default name, "training"
    older = {k: v for k, v in loaded.items() if k != "in_sample_cohorts"}
    assert attach_shift({"cohorts": {"training": dict(moved)}}, older)["flagged"] == []


# --------------------------------------------------------------------------- end to end: calibrate, score, analyze

def _rewrite(src: Path, dst: Path, transform=None) -> None:
    import tifffile

    from wsi_prognosis.slides.tiff_writer import write_array_pyramid

    with tifffile.TiffFile(src) as tif:
        rgb = tif.series[0].levels[0].asarray()[..., :3]
    if transform is not None:
        rgb = transform(rgb)
    write_array_pyramid(dst, np.ascontiguousarray(rgb), 0.25, n_levels=6, quality=90)


@pytest.fixture(scope="module")
def shifted_run(tmp_path_factory, small_bundle, synth_cohort):
    """Calibrate on the tuning cohort; score its slides re-written unchanged ('unshifted') and with a
    stain x1.6 + blur ('shifted'); analyze."""
    root = tmp_path_factory.mktemp("shift")
    bundle = root / "bundle"
    assert cli("calibrate", f"bundle={small_bundle}", f"manifest={synth_cohort / 'manifest.csv'}",
               f"tiles={synth_cohort / 'tiles'}", f"out={bundle}", "calibration.n_bootstrap=0", *FAST_ENGINE) == 0
    manifest = pd.read_csv(synth_cohort / "manifest.csv", dtype=str)
    tuning = manifest[manifest["cohort"] == "tuning"]
    rows, clinical_rows = [], []
    clinical = pd.read_csv(synth_cohort / "clinical.csv", dtype={"patient_id": str}).set_index("patient_id")
    for cohort, transform in (("unshifted", None), ("shifted", lambda rgb: blur(stain_scale(rgb, 1.6), 6.0))):
        (root / cohort).mkdir()
        for r in tuning.itertuples():
            src = Path(r.path) if Path(r.path).is_absolute() else synth_cohort / r.path
            dst = root / cohort / f"{r.slide_id}.tif"
            _rewrite(src, dst, transform)
            pid = f"{cohort[0]}{r.patient_id}"
            rows.append({"slide_id": f"{cohort[0]}_{r.slide_id}", "patient_id": pid, "path": str(dst), "cohort": cohort})
            clinical_rows.append({"patient_id": pid, **clinical.loc[r.patient_id, ["time", "event"]].to_dict()})
    for r in manifest[manifest["cohort"].isin(["test", "validation"])].itertuples():  # the synth's own cohorts
        path = Path(r.path) if Path(r.path).is_absolute() else synth_cohort / r.path
        rows.append({"slide_id": r.slide_id, "patient_id": r.patient_id, "path": str(path), "cohort": r.cohort})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    pd.DataFrame(clinical_rows).to_csv(root / "clinical.csv", index=False)
    scored = root / "scored"
    assert cli("score", f"bundle={bundle}", f"manifest={root / 'manifest.csv'}", f"out={scored}",
               "exports.heatmap=false", "exports.geojson=false", *FAST_ENGINE) == 0
    analysis = root / "analysis"
    assert cli("analyze", f"scores={scored / 'patient_scores.csv'}", f"clinical={root / 'clinical.csv'}",
               f"out={analysis}", "analysis.bootstrap.n=0", "analysis.reference_marker=null") == 0
    return {"root": root, "bundle": bundle, "scored": scored, "analysis": analysis}


def test_calibrated_bundle_records_the_tuning_reference(shifted_run, synth_cohort):
    from wsi_prognosis.ensemble import load_bundle

    bundle = load_bundle(shifted_run["bundle"])
    ref = bundle.calibration["reference"]
    n_tuning = (pd.read_csv(synth_cohort / "manifest.csv")["cohort"] == "tuning").sum()
    assert ref["cohort"] == "tuning" and ref["level"] == "patient" and ref["n"] == n_tuning == len(ref["scores"])
    assert ref["iqr"] > 0 and abs(sum(ref["shares"].values()) - 1) < 1e-9
    assert ref["tiles"]["n_slides"] == n_tuning and ref["tiles"]["resolution"] == "10x"
    # the slide records keep the statistics (a resumed run reuses them)
    rec = json.loads(next((shifted_run["scored"] / "slides").glob("u_*.json")).read_text())
    assert rec["tile_stats"]["n_tiles"] >= 1 and rec["tile_stats"]["od_h"] > 0


def test_score_flags_the_shifted_cohort_and_stays_quiet_on_the_unshifted(shifted_run):
    shift = json.loads((shifted_run["scored"] / "shift.json").read_text())
    assert shift["reference"]["available"] and shift["bundle_id"] == json.loads(
        (shifted_run["bundle"] / "bundle.json").read_text())["id"]
    assert shift["in_sample_cohorts"] == ["training"]
    quiet, moved = shift["cohorts"]["unshifted"], shift["cohorts"]["shifted"]
    assert not quiet["flagged"], quiet["reasons"]
    assert abs(quiet["tiles"]["od_h"]["shift_sd"]) < 1 and abs(quiet["score_shift_iqr"]) < 0.5
    assert moved["flagged"] and "shifted" in shift["flagged"] and "unshifted" not in shift["flagged"]
    assert moved["tiles"]["od_h"]["shift_sd"] > 2 and moved["tiles"]["log10_sharpness"]["shift_sd"] < -2
    assert any("haematoxylin" in r for r in moved["reasons"]) and any("sharpness" in r for r in moved["reasons"])
    table = pd.read_csv(shifted_run["scored"] / "shift.csv").set_index("cohort")
    assert bool(table.loc["shifted", "flagged"]) and not bool(table.loc["unshifted", "flagged"])
    assert not shift["cohorts"]["test"]["flagged"], shift["cohorts"]["test"]["reasons"]  # same lab, 2 slides
    print("\nshift e2e:", table[["n", "score_shift_iqr", "ks", "ks_p", "od_h_shift_sd", "od_e_shift_sd",
                                  "sharpness_shift_sd", "flagged"]].to_string())


def test_shift_is_recomputed_on_a_rerun_with_every_slide_finished(shifted_run):
    scored = shifted_run["scored"]
    before = (scored / "shift.json").read_text()
    (scored / "shift.json").unlink()
    old = next((scored / "slides").glob("u_*.json"))  # a record written before the check existed
    record = json.loads(old.read_text())
    stats = record.pop("tile_stats")
    old.write_text(json.dumps(record))
    assert cli("score", f"bundle={shifted_run['bundle']}", f"manifest={shifted_run['root'] / 'manifest.csv'}",
               f"out={scored}", "exports.heatmap=false", "exports.geojson=false", *FAST_ENGINE) == 0
    assert (scored / "shift.json").read_text() == before
    assert json.loads(old.read_text())["tile_stats"] == stats  # filled in again, from the same tiles


def test_analyze_shows_shares_with_ci_and_the_flag(shifted_run):
    summary = json.loads((shifted_run["analysis"] / "summary.json").read_text())
    assert summary["shift"]["available"] and summary["shift"]["source"].endswith("shift.json")
    assert "shifted" in summary["shift"]["flagged"] and "unshifted" not in summary["shift"]["flagged"]
    moved = summary["cohorts"]["shifted"]["shift"]
    assert moved["flagged"] and any(r.startswith("score check:") for r in moved["reasons"])
    for entry in (moved, summary["cohorts"]["unshifted"]["shift"]):
        for g in ("good", "uncertain", "poor"):
            lo, hi = entry["shares_ci"][g]
            assert lo <= entry["shares"][g] <= hi and entry["tuning_shares"][g] is not None
    html = (shifted_run["analysis"] / "report.html").read_text()
    assert "Domain shift" in html and "95 % CI (Wilson)" in html


def test_analyze_takes_the_reference_from_the_bundle(shifted_run, tmp_path):
    from wsi_prognosis.survival.shift_report import load_shift_reference

    loaded = load_shift_reference(tmp_path / "scores.csv", shifted_run["bundle"])  # no shift.json there
    assert loaded["reason"] is None and set(loaded["reference"]["shares"]) == {"good", "uncertain", "poor"}
    assert loaded["in_sample_cohorts"] == ["training"]  # the test bundle records no training config
    summary = {"cohorts": {"x": {"n": 100, "counts": {"good": 95, "uncertain": 3, "poor": 2}}}}
    block = attach_shift(summary, loaded)
    assert block["flagged"] == ["x"] and summary["cohorts"]["x"]["shift"]["flagged"]
    missing = load_shift_reference(tmp_path / "scores.csv")
    assert missing["reference"] is None and "no shift.json" in missing["reason"]
