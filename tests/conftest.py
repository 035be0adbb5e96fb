"""Shared fixtures: paths to the real test slides shipped in tests/data (see ATTRIBUTION.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA_DIR = Path(__file__).parent / "data"
SLIDES_DIR = DATA_DIR / "slides"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture(scope="session")
def slides_dir() -> Path:
    return SLIDES_DIR


@pytest.fixture(scope="session")
def cmu_slide() -> Path:
    """Aperio SVS, 2220x2967, 0.499 µm/px (20x), H&E skin."""
    return SLIDES_DIR / "CMU-1-Small-Region.svs"


@pytest.fixture(scope="session")
def tcga_no_mpp_slide() -> Path:
    """Aperio SVS with no MPP and no objective power in its metadata."""
    return SLIDES_DIR / "TCGA-CR-7395-01A-01-TS1.svs"
