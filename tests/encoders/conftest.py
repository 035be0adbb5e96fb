"""Encoder tests: the ONNX exports they make go to a temporary cache, never the user's."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("WSI_PROGNOSIS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
