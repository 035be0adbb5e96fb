"""Resumability: a rerun skips finished slides, redoes changed ones, and a killed run leaves no
half-written store; after a rerun the files equal those of an uninterrupted run, byte for byte."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from wsi_prognosis.cohort import read_manifest
from wsi_prognosis.tiling import open_tile_store
from wsi_prognosis.tiling.pipeline import TilingConfig, tile_manifest

FAST = {"qc_thumbnails": False, "blur_tiles": 2}


def test_rerun_skips_finished_slides_and_redoes_changed_ones(tmp_path, cmu_slide, blank_slide, manifest_writer):
    slide = tmp_path / "slide.svs"
    shutil.copy(cmu_slide, slide)
    manifest = read_manifest(manifest_writer(tmp_path / "m.csv", [{"slide_id": "s", "path": slide}]))
    out = tmp_path / "tiles"
    config = TilingConfig.from_mapping(tiling=FAST)
    first = tile_manifest(manifest, out, config, workers=1)
    stamp = (out / "s.h5").stat().st_mtime_ns
    again = tile_manifest(manifest, out, config, workers=1)
    assert (out / "s.h5").stat().st_mtime_ns == stamp                  # skipped, not rewritten
    assert again.loc[0, "n_tiles_10x"] == first.loc[0, "n_tiles_10x"] and again.loc[0, "status"] == "ok"

    stricter = TilingConfig.from_mapping(tiling={**FAST, "min_tissue_fraction": 0.95})
    redone = tile_manifest(manifest, out, stricter, workers=1)          # another configuration
    assert redone.loc[0, "n_tiles_10x"] < first.loc[0, "n_tiles_10x"]

    slide.unlink()
    shutil.copy(blank_slide, slide)                                     # the slide itself changed
    changed = tile_manifest(manifest, out, stricter, workers=1)
    with open_tile_store(out / "s.h5") as store:
        assert store.dimensions == (2048, 1536)
    assert changed.loc[0, "n_tiles_10x"] == 0


@pytest.mark.slow
def test_killed_run_then_rerun_gives_identical_files(tmp_path, cmu_slide, manifest_writer):
    rows = [{"slide_id": f"cmu{i}", "path": cmu_slide} for i in range(8)]
    manifest_path = manifest_writer(tmp_path / "m.csv", rows)
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    script = textwrap.dedent(f"""
        from wsi_prognosis.cohort import read_manifest
        from wsi_prognosis.tiling.pipeline import TilingConfig, tile_manifest
        config = TilingConfig.from_mapping(tiling={FAST!r}, slides={{"max_upsample": 2.0}})
        tile_manifest(read_manifest({str(manifest_path)!r}), {str(killed)!r}, config, workers=1)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(killed.glob("*.h5")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = sorted(p.name for p in killed.glob("*.h5"))
    assert 1 <= len(finished) < len(rows), "the run was not interrupted midway"
    for store_path in killed.glob("*.h5"):                              # what is there is complete
        open_tile_store(store_path).close()

    config = TilingConfig.from_mapping(tiling=FAST, slides={"max_upsample": 2.0})
    tile_manifest(read_manifest(manifest_path), killed, config, workers=1)
    tile_manifest(read_manifest(manifest_path), reference, config, workers=1)
    assert not list(killed.glob(".*.part"))
    names = sorted(p.name for p in reference.glob("*.h5"))
    assert names == sorted(p.name for p in killed.glob("*.h5")) and len(names) == len(rows)
    for name in names:
        assert (killed / name).read_bytes() == (reference / name).read_bytes(), name
