"""Helpers of the training tests (a module with a unique name: every test folder has a conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# tiny slides are ~256 x 208 µm: the default minimum tissue area (50,000 µm²) would drop all tissue
TISSUE = {"min_tissue_area_um2": 2000.0, "max_hole_area_um2": 2000.0}
RESOLUTIONS = {"10x": {"mpp": 1.0, "tile_px": 64}, "40x": {"mpp": 0.25, "tile_px": 64}}
# every test member: tiny backbone, in-process loading, few tiles scored per tuning slide
FAST = ["experiment=scratch_cpu", "data.num_workers=0", "data.eval_max_tiles=32", "trainer.enable_progress_bar=false"]


def make_tiled_cohort(out: Path, **overrides) -> dict[str, Path]:
    from wsi_prognosis.cohort import read_manifest
    from wsi_prognosis.synth import SynthConfig, make_cohort
    from wsi_prognosis.tiling.config import TilingConfig
    from wsi_prognosis.tiling.pipeline import tile_manifest

    config = SynthConfig.from_preset("tiny", seed=0, **{"n_validation": 0, "with_test": False, **overrides})
    make_cohort(out, config)
    tiling = TilingConfig.from_mapping(tiling={"resolutions": RESOLUTIONS}, tissue=TISSUE)
    summary = tile_manifest(read_manifest(out / "manifest.csv"), out / "tiles", tiling, workers=2)
    assert (summary["status"] == "ok").all(), summary[summary["status"] != "ok"]
    return {"dir": out, "manifest": out / "manifest.csv", "clinical": out / "clinical.csv", "tiles": out / "tiles"}



def train_args(cohort: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["train", f"manifest={cohort['manifest']}", f"clinical={cohort['clinical']}", f"tiles={cohort['tiles']}",
            f"out={out}", *FAST, *extra]


def run_cli(args: list[str], timeout: float = 900, **kwargs) -> subprocess.CompletedProcess:
    """`wsi-prognosis ARGS` in a fresh process (what users run), output captured."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    return subprocess.run([sys.executable, "-m", "wsi_prognosis.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, **kwargs)
