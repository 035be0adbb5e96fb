"""Atomic writes leave nothing half-written; run records carry config, versions and input hashes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from wsi_prognosis.atomic import atomic_path, write_text_atomic
from wsi_prognosis.provenance import write_run_record


def test_failed_write_leaves_neither_target_nor_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_successful_write_replaces_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_run_record_hashes_inputs(tmp_path: Path) -> None:
    table = tmp_path / "manifest.csv"
    table.write_text("a,b\n1,2\n")
    record_path = write_run_record(tmp_path, "tile", {"out": str(tmp_path)}, inputs={"manifest": table}, seed=7)
    record = json.loads(record_path.read_text())
    assert record["inputs"]["manifest"]["sha256"] == hashlib.sha256(table.read_bytes()).hexdigest()
    assert record["seed"] == 7
    assert record["versions"]["wsi-prognosis"]
    assert record["versions"]["numpy"] != "not installed"
