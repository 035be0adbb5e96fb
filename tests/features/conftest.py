"""Fixtures of the feature tests: a tiny tiled cohort (64-px tiles) and its random-cnn features, made once."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsi_prognosis.cli import main

TISSUE = ["tissue.min_tissue_area_um2=2000", "tissue.max_hole_area_um2=2000"]
TILES = ["tiling.tile_px=64", *TISSUE]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("WSI_PROGNOSIS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def tiled(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("features_cohort")
    cohort, tiles = root / "cohort", root / "tiles"
    assert main(["synth", f"out={cohort}", "preset=tiny", "seed=3"]) == 0
    assert main(["tile", f"manifest={cohort / 'manifest.csv'}", f"out={tiles}", *TILES]) == 0
    return {"root": root, "manifest": cohort / "manifest.csv", "clinical": cohort / "clinical.csv", "tiles": tiles}


@pytest.fixture(scope="session")
def embedded(tiled, tmp_path_factory) -> dict[str, Path]:
    import os

    os.environ.setdefault("WSI_PROGNOSIS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    features = tiled["root"] / "features"
    assert main(["embed", f"tiles={tiled['tiles']}", f"out={features}", f"manifest={tiled['manifest']}",
                 "encoder=random-cnn", "views=2"]) == 0
    return {**tiled, "features": features}
