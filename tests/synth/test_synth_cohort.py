"""A tiny pixel cohort end to end: files, tables, OpenSlide, determinism, resumption."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import openslide
import pandas as pd
import pytest

from wsi_prognosis.cohort import read_clinical, read_manifest
from wsi_prognosis.synth import SynthConfig, make_cohort


def _digest(folder: Path) -> dict[str, str]:
    """sha256 of every slide and table (not the run record: it holds a timestamp)."""
    files = sorted(folder.glob("slides/*/*")) + [folder / n for n in ("manifest.csv", "clinical.csv", "truth.csv")]
    return {f.relative_to(folder).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def test_outputs_and_contracts(tiny_cohort: tuple[Path, dict]) -> None:
    out, result = tiny_cohort
    for name in ("manifest.csv", "clinical.csv", "truth.csv", "gallery.png", "run_synth.json", "slides.csv"):
        assert (out / name).is_file(), name
    manifest = read_manifest(out / "manifest.csv")
    clinical = read_clinical(out / "clinical.csv")
    truth = pd.read_csv(out / "truth.csv", dtype={"patient_id": str})
    assert list(truth.columns) == ["patient_id", "risk"]
    assert set(manifest["cohort"]) == {"training", "tuning", "test", "validation"}
    assert result["slides_per_cohort"] == {"training": 6, "tuning": 6, "test": 6, "validation": 6}
    assert set(manifest["patient_id"]) == set(clinical["patient_id"]) == set(truth["patient_id"])
    assert {"pT", "pN", "grade"} <= set(clinical.columns)
    # test = training's patients, each with a new slide (another block)
    by_cohort = manifest.groupby("cohort")
    assert set(by_cohort.get_group("test")["patient_id"]) == set(by_cohort.get_group("training")["patient_id"])
    assert set(by_cohort.get_group("test")["slide_id"]).isdisjoint(by_cohort.get_group("training")["slide_id"])
    assert set(by_cohort.get_group("validation")["patient_id"]).isdisjoint(by_cohort.get_group("training")["patient_id"])
    record = json.loads((out / "run_synth.json").read_text())
    assert record["seed"] == 11 and record["config"]["preset"] == "tiny"
    assert (out / "gallery.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_slides_open_with_openslide_at_stated_mpp(tiny_cohort: tuple[Path, dict]) -> None:
    out, _ = tiny_cohort
    manifest = read_manifest(out / "manifest.csv")
    for row in manifest.itertuples():
        with openslide.OpenSlide(row.path) as slide:
            assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.25)
            assert float(slide.properties["openslide.mpp-y"]) == pytest.approx(0.25)
            downsamples = [round(d) for d in slide.level_downsamples]
            if row.cohort == "validation":   # another scanner: Aperio-style SVS, 512-px tiles, 1/4/16
                assert openslide.OpenSlide.detect_format(row.path) == "aperio"
                assert downsamples[:3] == [1, 4, 16]
                assert slide.properties["openslide.level[0].tile-width"] == "512"
            else:
                assert openslide.OpenSlide.detect_format(row.path) == "generic-tiff"
                assert downsamples == [1, 2, 4, 8, 16, 32]   # an 8 µm/px thumbnail is one level read
                assert slide.properties["openslide.level[0].tile-width"] == "256"
            # no label or macro image, nothing that could carry a name
            assert list(slide.associated_images) == []
            width, height = slide.dimensions
            region = np.asarray(slide.read_region((width // 2 - 64, height // 2 - 64), 0, (128, 128)))
            assert region.shape == (128, 128, 4) and region[..., :3].std() > 0


def test_same_seed_same_pixels_and_tables(tmp_path: Path) -> None:
    # every cohort (and both file flavours); two worker processes vs one: identical bytes
    config = SynthConfig.from_preset("tiny", seed=21, n_training=2, n_tuning=1, n_validation=1,
                                artefact_probability=1.0)
    make_cohort(tmp_path / "a", config)
    make_cohort(tmp_path / "b", config.replace(workers=1))
    first = _digest(tmp_path / "a")
    assert len(first) == 2 + 2 + 1 + 1 + 3
    assert first == _digest(tmp_path / "b")


def test_other_seed_other_pixels(tmp_path: Path) -> None:
    config = SynthConfig.from_preset("tiny", seed=12, n_training=1, n_tuning=1, n_validation=0, with_test=False)
    make_cohort(tmp_path / "a", config)
    make_cohort(tmp_path / "b", config.replace(seed=13))
    slides = [{k: v for k, v in _digest(tmp_path / d).items() if k.startswith("slides/")} for d in "ab"]
    assert set(slides[0].values()).isdisjoint(slides[1].values())
    truth = [pd.read_csv(tmp_path / d / "truth.csv") for d in "ab"]
    assert not np.allclose(truth[0]["risk"], truth[1]["risk"])


def test_rerun_skips_finished_slides_and_redoes_missing(tmp_path: Path) -> None:
    config = SynthConfig.from_preset("tiny", seed=4, n_training=2, n_tuning=1, n_validation=1, workers=1)
    first = make_cohort(tmp_path, config)
    before = _digest(tmp_path)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.glob("slides/*/*")}
    victim = sorted(mtimes)[0]
    victim.unlink()                                   # as if killed before this slide finished
    second = make_cohort(tmp_path, config)
    assert second["n_generated"] == 1 and second["n_skipped"] == first["n_slides"] - 1
    assert _digest(tmp_path) == before                # the redone slide is identical
    for path, mtime in mtimes.items():
        if path != victim:
            assert path.stat().st_mtime_ns == mtime   # untouched
    assert not list(tmp_path.glob("**/*.part"))       # no half-written files left
    # a different configuration regenerates everything
    third = make_cohort(tmp_path, config.replace(strength_40x=0.5))
    assert third["n_generated"] == first["n_slides"]


def test_validation_at_20x(tmp_path: Path) -> None:
    """validation_base_mpp=0.5: a 20x scanner, no 40x level; the same tissue field in µm."""
    config = SynthConfig.from_preset("tiny", seed=5, n_training=1, n_tuning=0, n_validation=2,
                                validation_base_mpp=0.5, validation_format="tiff", workers=1)
    make_cohort(tmp_path, config)
    manifest = read_manifest(tmp_path / "manifest.csv")
    sizes = {}
    for row in manifest.itertuples():
        with openslide.OpenSlide(row.path) as slide:
            sizes[row.cohort] = slide.dimensions
            expected = 0.5 if row.cohort == "validation" else 0.25
            assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(expected)
    # about half the pixels across for the same field of view (sizes jitter by +-8 %)
    assert 0.4 < sizes["validation"][0] / sizes["training"][0] < 0.6


def test_cli_stage(tmp_path: Path) -> None:
    """`wsi-prognosis synth out=DIR preset=tiny seed=N ...` end to end, and a clear error exit."""
    from wsi_prognosis.cli import main

    out = tmp_path / "cli"
    status = main(["synth", f"out={out}", "preset=tiny", "seed=3", "n_training=1", "n_tuning=1",
                   "n_validation=1", "workers=1"])
    assert status == 0
    manifest = read_manifest(out / "manifest.csv")
    assert len(manifest) == 4 and (out / "gallery.png").is_file()
    assert json.loads((out / "run_synth.json").read_text())["seed"] == 3
    assert main(["synth", f"out={tmp_path / 'bad'}", "preset=tiny", "followup_max_years=-1"]) == 2
