"""Helpers of the validation-study tests: tests/survival's simulator and an Rscript runner."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location("_survival_sim", Path(__file__).parents[1] / "survival" / "conftest.py")
_SIM = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_SIM)
simulate_cohort = _SIM.simulate_cohort


def run_r(script: str, tmp_path: Path) -> str:
    """Run an R script with Rscript; skip (saying why) when R or its packages are missing."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        pytest.skip("Rscript not found: install r-base-core r-cran-survival r-cran-metafor (.ci/run does, as root)")
    path = tmp_path / "reference.R"
    path.write_text(script)
    result = subprocess.run([rscript, "--vanilla", str(path)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        if "there is no package called" in result.stderr:
            pytest.skip(f"an R package is missing: {result.stderr.strip().splitlines()[-1]}")
        raise AssertionError(f"Rscript failed:\n{result.stderr}")
    return result.stdout
