"""Several `embed` workers on one output folder (issue 18): every slide embedded exactly once, a worker
killed with SIGKILL is taken over, the stores and embed_summary.csv equal a single worker's, the
summary is written once.

The workers are real `python -m wsi_prognosis.cli embed ...` processes (random-cnn, two augmented views
for the training slides) on the tiny tiled cohort of tests/features, each slowed down per slide where
its store is written (`claims_workers`), so that the slides spread and a kill lands mid-slide.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
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

from wsi_prognosis.claims import CLAIMS_DIR
from wsi_prognosis.claims import files as claim_files
from wsi_prognosis.cli import main
from wsi_prognosis.features import open_feature_store

SLOW_TARGET = "wsi_prognosis.features.embed:_finish"   # slowed down per slide in the workers
EMBEDDED = re.compile(r"\] - (\S+): embedded \(")
SUMMARY = "embed_summary.csv: written for all"


def embed_args(tiled: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["embed", f"tiles={tiled['tiles']}", f"out={out}", f"manifest={tiled['manifest']}", "encoder=random-cnn",
            "views=2", *extra]


@pytest.fixture(scope="module")
def single(tiled, tmp_path_factory) -> Path:
    """One worker alone (claims on, as by default), the plain CLI."""
    out = tmp_path_factory.mktemp("single_embed") / "features"
    result = subprocess.run([sys.executable, "-m", "wsi_prognosis.cli", *embed_args(tiled, out)], capture_output=True,
                            text=True, timeout=600, check=False, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def slide_ids(tiled) -> list[str]:
    return pd.read_csv(tiled["manifest"], dtype={"slide_id": str})["slide_id"].tolist()


def assert_equal_to_single(out: Path, single: Path, slide_ids: list[str]) -> None:
    folder, reference = out / "random-cnn", single / "random-cnn"
    assert (folder / "embed_summary.csv").read_bytes() == (reference / "embed_summary.csv").read_bytes()
    assert set(pd.read_csv(folder / "embed_summary.csv")["status"]) == {"ok"}
    for slide_id in slide_ids:
        with open_feature_store(folder / f"{slide_id}.h5") as got, open_feature_store(reference / f"{slide_id}.h5") as ref:
            for res in ref.resolutions:
                np.testing.assert_array_equal(got.features(res), ref.features(res))
                np.testing.assert_array_equal(got.coords(res), ref.coords(res))
                assert (got.views(res) is None) == (ref.views(res) is None)
                if ref.views(res) is not None:
                    np.testing.assert_array_equal(got.views(res), ref.views(res))
    assert list((folder / CLAIMS_DIR).iterdir()) == []                           # every claim released
    assert not list(out.rglob(".*.part"))                                        # no half-written file


def test_three_workers_embed_every_slide_exactly_once(tiled, single, slide_ids, tmp_path):
    out = tmp_path / "features"
    logs = [tmp_path / f"worker{i}.log" for i in range(3)]
    started = time.monotonic()
    workers = [start_worker(embed_args(tiled, out), log, SLOW_TARGET, 0.5) for log in logs]
    wait_all(workers, logs, timeout_s=600)
    elapsed = time.monotonic() - started
    texts = [log.read_text() for log in logs]
    embedded = per_worker(logs, EMBEDDED)
    assert_each_once(embedded, slide_ids)                                        # each slide exactly once
    assert sum(1 for slides in embedded if slides) >= 2, [len(s) for s in embedded]   # the work was shared
    for text, slides in zip(texts, embedded):
        assert f"this worker embedded {len(slides)} of {len(slide_ids)} slide(s) (0 failed;" in text
        if slides:
            assert "took=" in text and "others=" in text and "taken_over=0" in text  # the progress bar's share
    assert sum(SUMMARY in text for text in texts) == 1                           # the summary, written once
    assert_equal_to_single(out, single, slide_ids)
    print(f"3 workers: {elapsed:.1f} s wall, slides per worker {[len(s) for s in embedded]}")


def test_a_killed_worker_is_taken_over_and_the_batch_completes(tiled, single, slide_ids, tmp_path):
    out = tmp_path / "features"
    logs = [tmp_path / f"worker{i}.log" for i in range(3)]
    victim = start_worker(embed_args(tiled, out, "claims.stale_s=3"), logs[0], SLOW_TARGET, 8.0)
    survivors = []
    try:
        wait_inside_slide(victim, logs[0], 1)   # the others start once the victim holds slides (start-ups vary)
        survivors = [start_worker(embed_args(tiled, out, "claims.stale_s=3"), log, SLOW_TARGET, 0.3) for log in logs[1:]]
        killed_in = kill_inside_slide(victim, logs[0])                           # it holds the claim on that slide
        wait_all(survivors, logs[1:], timeout_s=600)
    finally:
        stop([victim, *survivors])
    texts = [log.read_text() for log in logs]
    assert_each_once(per_worker(logs, EMBEDDED), slide_ids)
    assert killed_in not in EMBEDDED.findall(texts[0])
    takeover = f"{killed_in}: taking over the claim of {socket.gethostname()} pid {victim.pid}"
    assert sum(takeover in text for text in texts[1:]) == 1, texts[1:]
    assert sum(SUMMARY in text for text in texts[1:]) == 1
    assert_equal_to_single(out, single, slide_ids)


@pytest.mark.parametrize("fault", ["no hard links", "read-only"])
def test_a_folder_without_claims_stops_before_any_work(tiled, tmp_path, monkeypatch, capsys, fault):
    def refuse(*args, **kwargs):
        code = errno.EPERM if fault == "no hard links" else errno.EROFS
        raise OSError(code, os.strerror(code))

    if fault == "no hard links":
        monkeypatch.setattr(claim_files.os, "link", refuse)
    else:  # root ignores permission bits: the filesystem's answer is simulated where the probe is written
        monkeypatch.setattr(claim_files, "open", refuse, raising=False)
    out = tmp_path / "features"
    assert main(embed_args(tiled, out)) == 2
    error = capsys.readouterr().err
    assert str(out / "random-cnn" / CLAIMS_DIR) in error and "Fix:" in error and "claims.enabled=false" in error
    assert not list(out.rglob("*.h5")) and not list(out.rglob("embed_summary.csv"))


def test_claims_disabled_is_the_single_worker_run(tiled, single, tmp_path):
    out = tmp_path / "features"
    assert main(embed_args(tiled, out, "claims.enabled=false")) == 0
    folder = out / "random-cnn"
    assert not (folder / CLAIMS_DIR).exists() and not (folder / ".summary").exists()
    assert (folder / "embed_summary.csv").read_bytes() == (single / "random-cnn" / "embed_summary.csv").read_bytes()
