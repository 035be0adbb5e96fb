"""Several `score` workers on one output folder (issue 18): every slide scored exactly once, a worker
killed with SIGKILL is taken over, the tables equal a single worker's and are written once.

The workers are real `python -m wsi_prognosis.cli score ...` processes on the tiny synthetic cohort
of tests/scoring (tile stores given, so nothing is tiled), each slowed down per slide in its
finisher (`claims_workers`) so that the slides spread over the workers and a kill lands mid-slide.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from claims_workers import (
    assert_each_once,
    kill_inside_slide,
    per_worker,
    start_worker,
    stop,
    wait_all,
    wait_inside_slide,
)
from conftest import FAST_ENGINE, cli

from wsi_prognosis.claims import CLAIMS_DIR, ClaimSettings
from wsi_prognosis.claims import files as claim_files
from wsi_prognosis.cohort import read_manifest
from wsi_prognosis.ensemble import load_bundle

SLOW_TARGET = "wsi_prognosis.scoring.finish:finish_and_record"   # slowed down per slide in the workers
SCORED = re.compile(r"\] - (\S+): scored \(")
TABLES = "scores.csv, patient_scores.csv, shift.json, shift.csv: written for all"
QUICK = [*FAST_ENGINE, "exports.heatmap=false", "exports.geojson=false"]


def score_args(bundle: Path, cohort: Path, out: Path, *extra: str) -> list[str]:
    return ["score", f"bundle={bundle}", f"manifest={cohort / 'manifest.csv'}", f"out={out}",
            f"tiles={cohort / 'tiles'}", *QUICK, *extra]


@pytest.fixture(scope="module")
def single(tmp_path_factory, small_bundle, synth_cohort) -> Path:
    """One worker alone (claims on, as by default), the plain CLI."""
    out = tmp_path_factory.mktemp("single") / "out"
    result = subprocess.run([sys.executable, "-m", "wsi_prognosis.cli", *score_args(small_bundle, synth_cohort, out)],
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def slide_ids(synth_cohort) -> list[str]:
    return read_manifest(synth_cohort / "manifest.csv")["slide_id"].tolist()


def assert_equal_to_single(out: Path, single: Path) -> None:
    for name in ("scores.csv", "patient_scores.csv", "shift.csv"):
        assert (out / name).read_bytes() == (single / name).read_bytes(), name
    assert set(pd.read_csv(out / "scores.csv")["status"]) == {"ok"}
    assert list((out / CLAIMS_DIR).iterdir()) == []                              # every claim released
    assert not list(out.rglob(".*.part"))                                        # no half-written file


def test_three_workers_score_every_slide_exactly_once(small_bundle, synth_cohort, single, slide_ids, tmp_path):
    out = tmp_path / "out"
    logs = [tmp_path / f"worker{i}.log" for i in range(3)]
    started = time.monotonic()
    workers = [start_worker(score_args(small_bundle, synth_cohort, out, "claims.batch_slides=2"), log, SLOW_TARGET, 0.5)
               for log in logs]
    wait_all(workers, logs, timeout_s=600)
    elapsed = time.monotonic() - started
    texts = [log.read_text() for log in logs]
    scored = per_worker(logs, SCORED)
    assert_each_once(scored, slide_ids)                                          # each slide exactly once
    assert sum(1 for slides in scored if slides) >= 2, [len(s) for s in scored]  # the work was shared
    for text, slides in zip(texts, scored):
        assert f"this worker scored {len(slides)} of {len(slide_ids)} slide(s) ({len(slides)} ok, 0 failed" in text
        assert "taken over from stopped workers" in text
        if slides:
            assert "took=" in text and "others=" in text and "taken_over=0" in text  # the progress bar's share
    assert sum(TABLES in text for text in texts) == 1                            # the tables, written once
    assert_equal_to_single(out, single)
    record = json.loads((out / "run_score.json").read_text())                    # the last worker's own share
    assert record["claims"]["taken"] == record["scored"] and record["slides"] == len(slide_ids)
    print(f"3 workers: {elapsed:.1f} s wall, slides per worker {[len(s) for s in scored]}")


def test_a_killed_worker_is_taken_over_and_the_batch_completes(small_bundle, synth_cohort, single, slide_ids, tmp_path):
    out = tmp_path / "out"
    logs = [tmp_path / f"worker{i}.log" for i in range(3)]
    extra = ("claims.batch_slides=2", "claims.stale_s=3")
    victim = start_worker(score_args(small_bundle, synth_cohort, out, *extra), logs[0], SLOW_TARGET, 8.0)
    survivors = []
    try:
        # the others start once the victim holds its first slides (a worker's start-up on a loaded machine
        # varies by more than the whole batch takes the others)
        wait_inside_slide(victim, logs[0], 1)
        survivors = [start_worker(score_args(small_bundle, synth_cohort, out, *extra), log, SLOW_TARGET, 0.3)
                     for log in logs[1:]]
        killed_in = kill_inside_slide(victim, logs[0])                           # it holds the claim on that slide
        wait_all(survivors, logs[1:], timeout_s=600)
    finally:
        stop([victim, *survivors])
    texts = [log.read_text() for log in logs]
    assert_each_once(per_worker(logs, SCORED), slide_ids)
    assert killed_in not in SCORED.findall(texts[0])
    takeover = f"{killed_in}: taking over the claim of {socket.gethostname()} pid {victim.pid}"
    assert sum(takeover in text for text in texts[1:]) == 1, texts[1:]
    assert sum(TABLES in text for text in texts[1:]) == 1
    assert_equal_to_single(out, single)


def _manifest(synth_cohort: Path, n: int, *extra: dict) -> pd.DataFrame:
    rows = read_manifest(synth_cohort / "manifest.csv").iloc[:n]
    return pd.concat([rows, pd.DataFrame(list(extra))], ignore_index=True) if extra else rows


def _options(synth_cohort: Path, **claims):
    from wsi_prognosis.scoring.batch import ScoreOptions
    from wsi_prognosis.scoring.engine import EngineConfig

    return ScoreOptions(tiles=synth_cohort / "tiles", engine=EngineConfig(device="cpu", workers=0), heatmap=False,
                        geojson=False, claims=ClaimSettings(**claims))


def test_a_claim_whose_heartbeat_stops_is_taken_over_after_stale_s(small_bundle, synth_cohort, tmp_path, caplog):
    """Another host's claim looks live until its heartbeat is older than claims.stale_s; then this worker
    scores the slide itself, and its share says so."""
    from wsi_prognosis.scoring.batch import score_manifest

    out = tmp_path / "out"
    manifest = _manifest(synth_cohort, 3)
    held = manifest["slide_id"].iloc[1]
    record = {"host": "node-elsewhere", "pidns": "", "pid": 4242, "pid_start": None, "worker": "node-elsewhere:4242:x",
              "stage": "score", "started": time.time(), "heartbeat": time.time()}
    (out / CLAIMS_DIR).mkdir(parents=True)
    (out / CLAIMS_DIR / held).write_text(json.dumps(record))
    started = time.monotonic()
    with caplog.at_level(logging.INFO):
        result = score_manifest(load_bundle(small_bundle), manifest, out, _options(synth_cohort, stale_s=1.0, poll_s=0.1))
    assert time.monotonic() - started >= 1.0
    assert (result.slides["status"] == "ok").all() and (out / "scores.csv").is_file()
    assert result.claims == {"taken": 3, "held_by_others": 1, "taken_over": 1} and result.n_scored == 3
    assert f"{held}: taking over the claim of node-elsewhere pid 4242" in caplog.text
    assert "this worker scored 3 of 3 slide(s) (3 ok, 0 failed; 0 finished before it started); 1 held by other " \
           "workers, 1 taken over from stopped workers" in caplog.text
    assert list((out / CLAIMS_DIR).iterdir()) == []


def test_a_failed_slide_is_tried_once_per_batch_and_a_rerun_rebuilds_the_tables(small_bundle, synth_cohort, tmp_path,
                                                                                caplog):
    from wsi_prognosis.scoring.batch import score_manifest

    out = tmp_path / "out"
    missing = {"slide_id": "missing", "patient_id": "pm", "path": str(tmp_path / "no.svs"), "cohort": "validation"}
    manifest = _manifest(synth_cohort, 2, missing)
    bundle = load_bundle(small_bundle)
    first = score_manifest(bundle, manifest, out, _options(synth_cohort, poll_s=0.1))
    assert first.slides["status"].tolist() == ["ok", "ok", "failed"] and "no.svs" in first.slides["error"].iloc[2]
    assert (first.n_scored, first.n_failed) == (2, 1)
    tiled = pd.read_csv(out / "tiles" / "summary.csv")                           # tiled here (no store given)
    assert tiled["slide_id"].tolist() == ["missing"] and tiled["status"].tolist() == ["failed"]
    scores = (out / "scores.csv").read_bytes()
    (out / "scores.csv").unlink()
    with caplog.at_level(logging.INFO):
        again = score_manifest(bundle, manifest, out, _options(synth_cohort, poll_s=0.1))
    assert (again.n_scored, again.n_failed, again.n_skipped) == (0, 1, 2)      # the failed slide, tried again once
    assert (out / "scores.csv").read_bytes() == scores                            # rebuilt, the same
    assert "scores.csv, patient_scores.csv: written for all 3 slide(s)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        score_manifest(bundle, _manifest(synth_cohort, 2), out, _options(synth_cohort))  # nothing left to do
    assert "0 to score" in caplog.text and "written for all 2 slide(s)" in caplog.text
    assert len(pd.read_csv(out / "scores.csv")) == 2


def test_the_shards_of_one_run_sharing_a_folder_publish_their_tables_under_their_own_claims():
    from wsi_prognosis.scoring.batch import ScoreOptions
    from wsi_prognosis.scoring.shard import Shard
    from wsi_prognosis.scoring.shared import tables_task

    tasks = {tables_task(ScoreOptions(shard=Shard(i, n))) for i, n in ((0, 1), (0, 3), (1, 3), (2, 3))}
    assert len(tasks) == 4 and all(task.startswith("@") for task in tasks)


@pytest.mark.parametrize("fault", ["no hard links", "read-only"])
def test_a_folder_without_claims_stops_before_any_work(small_bundle, synth_cohort, tmp_path, monkeypatch, capsys, fault):
    def refuse(*args, **kwargs):
        code = errno.EPERM if fault == "no hard links" else errno.EROFS
        raise OSError(code, os.strerror(code))

    if fault == "no hard links":
        monkeypatch.setattr(claim_files.os, "link", refuse)
    else:  # root ignores permission bits: the filesystem's answer is simulated where the probe is written
        monkeypatch.setattr(claim_files, "open", refuse, raising=False)
    out = tmp_path / "out"
    assert cli(*score_args(small_bundle, synth_cohort, out)[:5], *QUICK) == 2
    error = capsys.readouterr().err
    assert str(out / CLAIMS_DIR) in error and "Fix:" in error and "claims.enabled=false" in error
    assert not (out / "slides").exists() and not (out / "scores.csv").exists()


def test_claims_disabled_is_the_single_worker_run(small_bundle, synth_cohort, tmp_path):
    out = tmp_path / "out"
    assert cli(*score_args(small_bundle, synth_cohort, out)[:5], *QUICK, "cohort=validation",
               "claims.enabled=false") == 0
    assert (out / "scores.csv").is_file() and (out / "shift.json").is_file() and not (out / CLAIMS_DIR).exists()
