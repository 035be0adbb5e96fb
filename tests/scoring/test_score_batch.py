"""Robust batches: bad slides become failed rows, tampered bundles are refused, a killed batch
resumes to the same scores.csv, and shards merged equal one run."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import FAST_ENGINE, cli, read_scores
from wsi_prognosis.cohort import read_manifest
from wsi_prognosis.ensemble import load_bundle
from wsi_prognosis.slides import TileReader


@pytest.fixture(scope="module")
def reference(tmp_path_factory, small_bundle, synth_cohort) -> Path:
    """One clean, unsharded run over the whole synthetic cohort."""
    out = tmp_path_factory.mktemp("reference")
    assert cli("score", f"bundle={small_bundle}", f"manifest={synth_cohort / 'manifest.csv'}", f"out={out}",
               f"tiles={synth_cohort / 'tiles'}", *FAST_ENGINE) == 0
    return out


def test_reference_run_is_complete(reference, synth_cohort):
    scores = read_scores(reference)
    manifest = read_manifest(synth_cohort / "manifest.csv")
    assert scores["slide_id"].tolist() == manifest["slide_id"].tolist()
    assert (scores["status"] == "ok").all() and scores["score"].between(0, 1).all()
    assert scores["score"].nunique() == len(scores)
    patients = pd.read_csv(reference / "patient_scores.csv", dtype={"patient_id": str})
    # test-cohort patients are training patients too: patients are kept apart per (cohort, patient_id)
    assert len(patients) == scores.groupby(["cohort", "patient_id"]).ngroups
    assert (patients["n_slides"] == 1).all()
    assert not list(reference.rglob(".*.part"))


def test_bad_slides_become_failed_rows(tmp_path, small_bundle, synth_cohort, slides_dir, tcga_no_mpp_slide):
    good = read_manifest(synth_cohort / "manifest.csv").iloc[:2][["slide_id", "patient_id", "path", "cohort"]]
    bad = pd.DataFrame([
        {"slide_id": "unopenable", "path": str(slides_dir / "unopenable.tiff")},
        {"slide_id": "not-a-slide", "path": str(slides_dir / "not-a-slide.svs")},
        {"slide_id": "unreadable", "path": str(slides_dir / "unreadable.svs")},
        {"slide_id": "missing", "path": str(tmp_path / "nowhere.svs")},
        {"slide_id": "tcga-no-mpp", "path": str(tcga_no_mpp_slide)},
    ]).assign(patient_id=lambda d: "pb-" + d["slide_id"], cohort="validation")
    manifest = tmp_path / "manifest.csv"
    pd.concat([bad.iloc[:3], good, bad.iloc[3:]])[["slide_id", "patient_id", "path", "cohort"]].to_csv(manifest, index=False)
    out = tmp_path / "out"
    assert cli("score", f"bundle={small_bundle}", f"manifest={manifest}", f"out={out}",
               f"tiles={synth_cohort / 'tiles'}", *FAST_ENGINE) == 0
    scores = read_scores(out).set_index("slide_id")
    assert (scores.loc[good["slide_id"], "status"] == "ok").all()
    failed = scores.loc[bad["slide_id"]]
    assert (failed["status"] == "failed").all() and failed["score"].isna().all()
    assert failed["error"].str.len().gt(10).all()
    assert "mpp" in failed.loc["tcga-no-mpp", "error"].lower()
    assert "nowhere.svs" in failed.loc["missing", "error"]
    patients = pd.read_csv(out / "patient_scores.csv", dtype={"patient_id": str})
    assert sorted(patients["patient_id"]) == sorted(good["patient_id"])  # no patient from failed slides only


def test_a_tampered_bundle_is_refused(tmp_path, bundle_copy, synth_cohort, capsys):
    weights = sorted((bundle_copy / "members").glob("*.pt"))[0]
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    out = tmp_path / "out"
    status = cli("score", f"bundle={bundle_copy}", f"manifest={synth_cohort / 'manifest.csv'}", f"out={out}",
                 f"tiles={synth_cohort / 'tiles'}", *FAST_ENGINE)
    assert status == 2
    assert weights.name in capsys.readouterr().err
    assert not (out / "scores.csv").exists() and not (out / "slides").exists()


def _assert_same_table(path: Path, expected: Path) -> None:
    got, want = pd.read_csv(path), pd.read_csv(expected)
    assert list(got.columns) == list(want.columns) and len(got) == len(want)
    numbers = want.select_dtypes("number").columns
    pd.testing.assert_frame_equal(got.drop(columns=numbers), want.drop(columns=numbers))
    np.testing.assert_allclose(got[numbers].to_numpy(float), want[numbers].to_numpy(float), rtol=1e-6, atol=1e-6)


def test_killed_batch_resumes_to_identical_scores(tmp_path, reference, small_bundle, synth_cohort):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "wsi_prognosis.cli", "score", f"bundle={small_bundle}",
            f"manifest={synth_cohort / 'manifest.csv'}", f"out={out}", f"tiles={synth_cohort / 'tiles'}",
            "engine.workers=1", "engine.batch_tiles=4", "tiling_workers=1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and len(list((out / "slides").glob("*.json"))) < 2:
            time.sleep(0.01)
        assert proc.poll() is None, "the batch finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    done_before = {p.stem for p in (out / "slides").glob("*.json")}
    n_slides = len(read_scores(reference))
    assert 2 <= len(done_before) < n_slides and not (out / "scores.csv").exists()
    stamps = {s: (out / "slides" / f"{s}.json").stat().st_mtime_ns for s in done_before}
    assert cli("score", f"bundle={small_bundle}", f"manifest={synth_cohort / 'manifest.csv'}", f"out={out}",
               f"tiles={synth_cohort / 'tiles'}", *FAST_ENGINE) == 0
    # the killed run batched 4 tiles in a worker process: ONNX Runtime's float32 sums may round
    # differently per batch, so numbers agree to float precision and everything else exactly
    for table in ("scores.csv", "patient_scores.csv"):
        _assert_same_table(out / table, reference / table)
    # finished slides were skipped, not redone
    assert {s: (out / "slides" / f"{s}.json").stat().st_mtime_ns for s in done_before} == stamps
    record = json.loads((out / "run_score.json").read_text())
    assert record["skipped"] == len(done_before) and record["scored"] == n_slides - len(done_before)


def test_shards_merged_equal_one_run(tmp_path, reference, small_bundle, synth_cohort):
    common = [f"bundle={small_bundle}", f"manifest={synth_cohort / 'manifest.csv'}", f"tiles={synth_cohort / 'tiles'}",
              *FAST_ENGINE, "exports.heatmap=false"]
    # shards 0 and 1 in one shared folder (as a Hydra multirun writes them), shard 2 elsewhere
    shared, other = tmp_path / "shared", tmp_path / "other"
    assert cli("score", *common, f"out={shared}", "shard=0/3") == 0
    assert cli("score", *common, f"out={shared}", "shard.index=1", "shard.count=3") == 0
    with pytest.raises(Exception):
        from wsi_prognosis.scoring.merge import merge_shards

        merge_shards([shared], tmp_path / "incomplete")
    assert cli("score", *common, f"out={other}", "shard=2/3") == 0
    parts = [pd.read_csv(p, dtype=str) for p in [*sorted((shared / "shards").glob("*.csv")), *(other / "shards").glob("*.csv")]]
    assert len(parts) == 3 and sum(len(p) for p in parts) == len(read_scores(reference))
    patients = [set(zip(p["cohort"], p["patient_id"])) for p in parts]
    assert not patients[0] & patients[1] and not patients[1] & patients[2]  # a patient's slides stay in one shard
    merged = tmp_path / "merged"
    assert cli("merge", f"out={merged}", f"inputs=[{shared},{other}]") == 0
    assert (merged / "patient_scores.csv").read_bytes() == (reference / "patient_scores.csv").read_bytes()
    ref = read_scores(reference)
    got = read_scores(merged)
    pd.testing.assert_frame_equal(got, ref)
    assert (merged / "scores.csv").read_bytes() == (reference / "scores.csv").read_bytes()
    assert (merged / "shift.json").read_bytes() == (reference / "shift.json").read_bytes()  # the domain-shift check
    assert len(list((merged / "geojson").glob("*.geojson"))) == len(ref)
    # merging in place (the shared multirun folder) works too once every shard is there
    shutil.copytree(other / "slides", shared / "slides", dirs_exist_ok=True)
    shutil.copy(next(other.glob("run_score.shard-2-of-3.json")), shared)
    assert cli("merge", f"out={shared}") == 0
    assert (shared / "scores.csv").read_bytes() == (reference / "scores.csv").read_bytes()


def test_a_folder_of_slides_instead_of_a_manifest(tmp_path, small_bundle, synth_cohort, reference):
    folder = synth_cohort / "slides" / "validation"
    out = tmp_path / "out"
    assert cli("score", f"bundle={small_bundle}", f"manifest={folder}", f"out={out}", f"tiles={synth_cohort / 'tiles'}",
               *FAST_ENGINE, "exports.heatmap=false", "exports.geojson=false") == 0
    scores = read_scores(out)
    ref = read_scores(reference).set_index("slide_id")
    assert len(scores) == len(list(folder.iterdir())) and (scores["status"] == "ok").all()
    assert (scores["cohort"] == "unassigned").all() and (scores["patient_id"] == scores["slide_id"]).all()
    np.testing.assert_allclose(scores["score"], ref.loc[scores["slide_id"], "score"], rtol=0, atol=1e-12)


def test_batch_size_and_reader_workers_do_not_change_scores(tmp_path, small_bundle, synth_cohort, reference):
    out = tmp_path / "out"
    assert cli("score", f"bundle={small_bundle}", f"manifest={synth_cohort / 'manifest.csv'}", f"out={out}",
               f"tiles={synth_cohort / 'tiles'}", "cohort=validation", "engine.batch_tiles=3", "engine.workers=2",
               "engine.prefetch_batches=1", "exports.heatmap=false", "exports.geojson=false") == 0
    got = read_scores(out).set_index("slide_id")
    ref = read_scores(reference).set_index("slide_id").loc[got.index]
    member_columns = [c for c in got.columns if c.startswith("member_")]
    np.testing.assert_allclose(got[["score", *member_columns]], ref[["score", *member_columns]], rtol=1e-5, atol=1e-6)
    for slide_id in got.index:
        a, b = np.load(out / "slides" / f"{slide_id}.npz"), np.load(reference / "slides" / f"{slide_id}.npz")
        for key in ("logits_10x", "logits_40x"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(a["coords_40x"], b["coords_40x"])


class CrashingReader(TileReader):
    """A TileReader whose worker process dies on one slide, as a crashing decoder would."""

    crash_on = ""

    def read(self, coords):
        if self.slide_path.name == CrashingReader.crash_on and mp.parent_process() is not None:
            os._exit(1)
        return super().read(coords)


def test_a_reader_process_that_dies_fails_only_its_slide(tmp_path, small_bundle, synth_cohort, reference, monkeypatch):
    from wsi_prognosis.scoring.batch import ScoreOptions, score_manifest
    from wsi_prognosis.scoring.engine import EngineConfig

    manifest = read_manifest(synth_cohort / "manifest.csv")
    manifest = manifest[manifest["cohort"] == "validation"].reset_index(drop=True)
    victim = manifest["slide_id"].iloc[1]
    CrashingReader.crash_on = Path(manifest["path"].iloc[1]).name
    monkeypatch.setattr("wsi_prognosis.slides.TileReader", CrashingReader)
    options = ScoreOptions(tiles=synth_cohort / "tiles", engine=EngineConfig(device="cpu", workers=1, batch_tiles=8),
                           heatmap=False, geojson=False)
    result = score_manifest(load_bundle(small_bundle), manifest, tmp_path / "out", options)
    scores = result.slides.set_index("slide_id")
    assert scores.loc[victim, "status"] == "failed" and "reader process" in scores.loc[victim, "error"]
    others = scores.drop(victim)
    assert (others["status"] == "ok").all()
    ref = read_scores(reference).set_index("slide_id").loc[others.index]
    np.testing.assert_allclose(others["score"], ref["score"], rtol=1e-6)
