"""Fixtures for the validation-study tests."""

from __future__ import annotations

import pytest
from study_helpers import simulate_cohort


@pytest.fixture(scope="session")
def simulate():
    return simulate_cohort
