"""Shared fixture: one tiny synthetic cohort, generated once per session (a few seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsi_prognosis.synth import SynthConfig, make_cohort


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth_tiny")
    config = SynthConfig.from_preset("tiny", seed=11)
    result = make_cohort(out, config)
    return out, result
