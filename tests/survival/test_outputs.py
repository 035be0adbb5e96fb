"""The `analyze` stage end to end: CLI, summary.json shape key by key, at_risk.csv, figures, report.html
(rendered in headless Chromium)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
COMPARISON_KEYS = {"hr", "ci_low", "ci_high", "p"}


def _cli(*args: str) -> subprocess.CompletedProcess:
    """The real console script in a subprocess."""
    exe = Path(sys.executable).with_name("wsi-prognosis")
    command = [str(exe)] if exe.is_file() else [sys.executable, "-m", "wsi_prognosis.cli"]
    return subprocess.run([*command, "analyze", *args], capture_output=True, text=True, timeout=120, cwd=REPO)


@pytest.fixture(scope="module")
def cli_out(small_study, tmp_path_factory) -> Path:
    scores, clinical = small_study
    work = tmp_path_factory.mktemp("analyze")
    scores.to_csv(work / "scores.csv", index=False)
    clinical.to_csv(work / "clinical.csv", index=False)
    out = work / "analysis"
    # in-process through the CLI's own entry function (same argv as the shell; saves a second
    # interpreter start, the subprocess path is exercised by test_cli_reports_bad_paths_clearly)
    from wsi_prognosis.cli import main

    status = main(["analyze", f"scores={work / 'scores.csv'}", f"clinical={work / 'clinical.csv'}", f"out={out}",
                   "analysis.bootstrap.n=100", "analysis.confidence_bands=true"])
    assert status == 0
    return out


def test_cli_writes_every_output(cli_out):
    for name in ("summary.json", "at_risk.csv", "report.html", "run_analyze.json", "at_risk_reference_marker.csv"):
        assert (cli_out / name).is_file(), name
    for name in ("cohorts", "groups", "km", "cox", "logrank", "concordance", "ph", "excluded", "unmatched", "patients"):
        assert (cli_out / "tables" / f"{name}.csv").is_file(), name
    for cohort in ("test", "validation"):
        for stem in (f"km_{cohort}", f"km_{cohort}_grade"):
            assert (cli_out / "figures" / f"{stem}.png").stat().st_size > 10_000
            assert (cli_out / "figures" / f"{stem}.pdf").read_bytes()[:4] == b"%PDF"
    record = json.loads((cli_out / "run_analyze.json").read_text())
    assert record["seed"] == 0 and record["inputs"]["scores"]["sha256"]


def _check_comparison(entry: dict) -> None:
    assert COMPARISON_KEYS <= set(entry)
    if entry["hr"] is None:
        assert entry["reason"]
    else:
        assert 0 < entry["ci_low"] <= entry["hr"] <= entry["ci_high"] and 0 <= entry["p"] <= 1


def test_summary_json_shape_key_by_key(cli_out):
    text = (cli_out / "summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    s = json.loads(text)
    assert {"cohorts", "excluded", "unmatched", "time_unit", "primary", "versions", "failed_slides"} <= set(s)
    assert s["time_unit"] == "years" and s["time_points"] == [0, 2, 4, 6, 8]
    assert set(s["unmatched"]) == {"in_scores_not_clinical", "in_clinical_not_scores"}
    assert {"n", "by_reason"} <= set(s["excluded"])
    assert {"cohort", "measure", "comparison", "description", "result"} <= set(s["primary"])
    assert s["primary"]["result"] == s["cohorts"]["validation"]["hr"]["poor_vs_good"]
    assert "lifelines" in s["versions"]
    assert list(s["cohorts"]) == ["test", "validation"]
    for name, c in s["cohorts"].items():
        for key in ("n", "events", "median_followup", "shares", "hr", "hr_adjusted", "logrank_p", "c_index"):
            assert key in c, (name, key)
        assert isinstance(c["n"], int) and isinstance(c["events"], int) and 0 < c["events"] < c["n"]
        assert c["median_followup"] > 0
        assert set(c["shares"]) == {"good", "uncertain", "poor"}
        assert sum(c["shares"].values()) == pytest.approx(1.0)
        for model in ("hr", "hr_adjusted"):
            assert set(c[model]) == {"uncertain_vs_good", "poor_vs_good"}
            for entry in c[model].values():
                _check_comparison(entry)
        assert 0 <= c["logrank_p"] <= 1
        assert {"value", "ci_low", "ci_high"} <= set(c["c_index"])
        assert c["c_index"]["ci_low"] <= c["c_index"]["value"] <= c["c_index"]["ci_high"]
        assert c["n"] == sum(c["counts"].values())


def test_at_risk_csv_matches_patients(cli_out):
    at_risk = pd.read_csv(cli_out / "at_risk.csv")
    assert list(at_risk.columns) == ["cohort", "group", "time", "at_risk", "events"]
    patients = pd.read_csv(cli_out / "tables" / "patients.csv")
    times = [0, 2, 4, 6, 8]
    for row in at_risk.itertuples():
        p = patients[(patients["cohort"] == row.cohort) & (patients["risk_group"] == row.group)]
        assert row.at_risk == (p["time"] >= row.time).sum()
        if row.time == times[-1]:
            assert pd.isna(row.events)
        else:
            nxt = times[times.index(row.time) + 1]
            assert row.events == ((p["time"] >= row.time) & (p["time"] < nxt) & (p["event"] == 1)).sum()
    summary = json.loads((cli_out / "summary.json").read_text())
    first = at_risk[at_risk["time"] == 0].set_index(["cohort", "group"])["at_risk"]
    for name, c in summary["cohorts"].items():
        assert {g: int(first[(name, g)]) for g in ("good", "uncertain", "poor")} == c["counts"]


def test_cli_reports_bad_paths_clearly(tmp_path, small_study):
    scores, _ = small_study
    scores.to_csv(tmp_path / "scores.csv", index=False)
    done = _cli(f"scores={tmp_path / 'scores.csv'}", f"clinical={tmp_path / 'nope.csv'}", f"out={tmp_path / 'o'}")
    assert done.returncode == 2
    assert "nope.csv" in done.stderr and "not found" in done.stderr


def test_report_is_self_contained(cli_out):
    html = (cli_out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4            # 2 cohorts x (risk groups, grade)
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert html.index("primary analysis") < html.index("validation cohort (primary)") < html.index("test cohort")


def _load_screenshot_module():
    spec = importlib.util.spec_from_file_location("screenshot_report", REPO / "scripts" / "screenshot_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_renders_in_headless_chromium(cli_out, tmp_path):
    shot = _load_screenshot_module()
    if not Path("/usr/bin/chromium").is_file():
        pytest.skip("/usr/bin/chromium is absent: install Debian's chromium (apt-get install -y chromium)")
    png = shot.screenshot(cli_out / "report.html", tmp_path / "report.png", width=1280, height=3200)
    image = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert image.shape[:2] == (3200, 1280)
    # the KM figures are the only green (#1a9641, good prognosis) and red (#d7191c, poor) on the page
    green = (np.abs(image - [0x1A, 0x96, 0x41]).sum(axis=2) < 40).sum()
    red = (np.abs(image - [0xD7, 0x19, 0x1C]).sum(axis=2) < 40).sum()
    assert green > 500 and red > 500, (green, red)
    assert (image.std(axis=(0, 1)) > 10).all()                   # not a blank page
