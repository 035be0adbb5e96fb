"""Fixtures for the tiling tests: a blank slide, GeoJSON files, a manifest writer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from wsi_prognosis.slides.tiff_writer import write_array_pyramid


@pytest.fixture(scope="session")
def blank_slide(tmp_path_factory) -> Path:
    """2048 x 1536 px of glass (JPEG noise only) at 0.5 µm/px, two levels."""
    rng = np.random.default_rng(0)
    glass = (rng.normal(242, 2, size=(1536, 2048, 3))).clip(0, 255).astype(np.uint8)
    return write_array_pyramid(tmp_path_factory.mktemp("blank") / "blank.tiff", glass, 0.5, n_levels=2)


def _polygon_feature(coords: list[list[float]]) -> dict:
    return {"type": "Feature", "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}},
            "geometry": {"type": "Polygon", "coordinates": [coords]}}


@pytest.fixture(scope="session")
def geojson_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("geojson")
    files = {
        "top_half": folder / "top_half.geojson",        # CMU-1: x 0-2220, y 0-1400 (level 0)
        "outside": folder / "outside.geojson",
        "broken": folder / "broken.geojson",
    }
    rectangle = [[0, 0], [2220, 0], [2220, 1400], [0, 1400], [0, 0]]
    files["top_half"].write_text(json.dumps({"type": "FeatureCollection", "features": [_polygon_feature(rectangle)]}))
    far = [[50_000, 50_000], [60_000, 50_000], [60_000, 60_000], [50_000, 50_000]]
    files["outside"].write_text(json.dumps({"type": "FeatureCollection", "features": [_polygon_feature(far)]}))
    files["broken"].write_text('{"type": "FeatureCollection", "features": [')
    return files


def write_manifest(path: Path, rows: list[dict]) -> Path:
    import csv

    columns = ["slide_id", "patient_id", "path", "cohort", "mpp", "annotation"]
    extra = [c for row in rows for c in row if c not in columns]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns + sorted(set(extra)))
        writer.writeheader()
        for row in rows:
            writer.writerow({"patient_id": row["slide_id"], "cohort": "training", **row})
    return path


@pytest.fixture(scope="session")
def manifest_writer():
    return write_manifest
