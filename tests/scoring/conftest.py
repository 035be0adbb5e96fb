"""Fixtures for the scoring tests: tiny bundles written through the real bundle writer, a tiny
synthetic cohort, and a small CLI runner."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from wsi_prognosis.ensemble import Member, load_bundle, write_bundle
from wsi_prognosis.models import build_backbone, default_preprocessing
from wsi_prognosis.tiling.config import TilingConfig

ARCH = "test_efficientnet"
# 20x-compatible test spec: "10x" 64 µm tiles at 2 µm/px, "40x" 32 µm tiles at 1 µm/px (2 x 2 per 10x tile),
# small enough that a CPU scores a slide in about a second.
SMALL_RESOLUTIONS = {"10x": {"mpp": 2.0, "tile_px": 32}, "40x": {"mpp": 1.0, "tile_px": 32}}
# the project's real magnifications (40x = 0.25 µm/px), which a 20x scan cannot serve
REAL_RESOLUTIONS = {"10x": {"mpp": 1.0, "tile_px": 32}, "40x": {"mpp": 0.25, "tile_px": 32}}
# tissue found on tiny synthetic slides (a few hundred µm across): finer mask, small minimum areas
SMALL_TISSUE = {"mask_mpp": 2.0, "min_tissue_area_um2": 2000, "max_hole_area_um2": 2000, "closing_um": 8}
# the bundle's pooling reaches scoring: mean for 10x members, top-k for 40x members
POOLING = {"10x": {"method": "mean"}, "40x": {"method": "topk", "k_fraction": 0.25}}
FAST_ENGINE = ["engine.workers=0", "engine.batch_tiles=256", "tiling_workers=1"]


def make_bundle(out: Path, resolutions: dict, members_per_res: int = 1, pooling: dict | None = None) -> Path:
    """A bundle of random-initialised tiny timm members, written by `ensemble.write_bundle`."""
    tile_spec = TilingConfig.from_mapping(tiling={"resolutions": resolutions, "min_tissue_fraction": 0.5},
                                          tissue=SMALL_TISSUE).tile_spec()
    pairs = []
    weights_dir = out.parent / f"{out.name}-weights"
    weights_dir.mkdir(parents=True, exist_ok=True)
    seed = 0
    for res, spec in resolutions.items():
        for k in range(members_per_res):
            torch.manual_seed(1000 + seed)
            seed += 1
            model = build_backbone(ARCH)
            with torch.no_grad():  # spread the tile logits so scores differ between tiles and slides
                head = model.get_classifier()
                head.weight.mul_(40.0)
            path = weights_dir / f"m{res}{k}.pt"
            torch.save(model.state_dict(), path)
            prep = default_preprocessing(ARCH, tile_px=spec["tile_px"], mpp=spec["mpp"]).to_dict()
            member = Member(name=f"{res}_{k}", resolution=res, arch=ARCH, weights="", sha256="",
                            preprocessing=prep, pooling=dict(pooling or POOLING[res]))
            pairs.append((member, path))
    write_bundle(out, pairs, tile_spec=tile_spec, aggregation={"members": "mean"}, training_configs={})
    return out


@pytest.fixture(scope="session")
def small_bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundles") / "small", SMALL_RESOLUTIONS)


@pytest.fixture(scope="session")
def real_bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundles") / "real", REAL_RESOLUTIONS)


@pytest.fixture(scope="session")
def synth_cohort(tmp_path_factory, small_bundle) -> Path:
    """A tiny synthetic cohort (training, tuning, test, validation) with its tile stores."""
    from wsi_prognosis.cohort import read_manifest
    from wsi_prognosis.synth import SynthConfig, make_cohort
    from wsi_prognosis.tiling.pipeline import tile_manifest

    root = tmp_path_factory.mktemp("synth")
    make_cohort(root, SynthConfig.from_preset("tiny", seed=3, n_training=2, n_tuning=10, n_validation=3,
                                         width_px=768, height_px=640, workers=1))
    config = TilingConfig.from_tile_spec(load_bundle(small_bundle).tile_spec)  # the bundle's own spec
    summary = tile_manifest(read_manifest(root / "manifest.csv"), root / "tiles", config, workers=1)
    assert (summary["status"] == "ok").all(), summary[summary["status"] != "ok"]
    return root


def cli(*args: str) -> int:
    from wsi_prognosis.cli import main

    return main(list(args))


def read_scores(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "scores.csv", dtype={"slide_id": str, "patient_id": str, "error": str}, float_precision="round_trip")


@pytest.fixture()
def bundle_copy(small_bundle, tmp_path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(small_bundle, target)
    load_bundle(target)
    return target
