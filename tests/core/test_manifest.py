"""manifest.csv and clinical.csv validation: every contract breach is caught before any work starts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from wsi_prognosis.cohort import manifest_from_folder, read_clinical, read_manifest
from wsi_prognosis.errors import ClinicalError, ManifestError


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path: Path) -> None:
    sub = tmp_path / "cohort"
    sub.mkdir()
    manifest = _write(sub / "manifest.csv", "slide_id,patient_id,path,cohort,mpp\ns1,p1,slides/a.svs,training,0.25\ns2,p1,/abs/b.svs,test,\n")
    table = read_manifest(manifest)
    assert table.loc[0, "path"] == str((sub / "slides" / "a.svs").resolve())
    assert table.loc[1, "path"] == "/abs/b.svs"
    assert table.loc[0, "mpp"] == pytest.approx(0.25)
    assert pd.isna(table.loc[1, "mpp"])
    assert table["annotation"].isna().all()


def test_duplicate_slide_id_is_refused_by_name(tmp_path: Path) -> None:
    manifest = _write(tmp_path / "m.csv", "slide_id,patient_id,path,cohort\ns1,p1,a.svs,training\ns1,p2,b.svs,training\n")
    with pytest.raises(ManifestError, match=r"duplicate slide_id.*s1"):
        read_manifest(manifest)


def test_missing_column_names_the_column_and_the_file(tmp_path: Path) -> None:
    manifest = _write(tmp_path / "m.csv", "slide_id,path,cohort\ns1,a.svs,training\n")
    with pytest.raises(ManifestError) as info:
        read_manifest(manifest)
    assert "patient_id" in str(info.value) and "m.csv" in str(info.value)


def test_unknown_column_only_warns(tmp_path: Path) -> None:
    manifest = _write(tmp_path / "m.csv", "slide_id,patient_id,path,cohort,scanner\ns1,p1,a.svs,training,GT450\n")
    with pytest.warns(UserWarning, match="scanner"):
        table = read_manifest(manifest)
    assert len(table) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("s1,p1,a.svs,training,-1\n", "positive number"),
        ("s1,p1,a.svs,training,abc\n", "positive number"),
        ("s/1,p1,a.svs,training,\n", "unsafe"),
        (",p1,a.svs,training,\n", "empty `slide_id`"),
    ],
)
def test_bad_cells_are_refused(tmp_path: Path, body: str, message: str) -> None:
    manifest = _write(tmp_path / "m.csv", "slide_id,patient_id,path,cohort,mpp\n" + body)
    with pytest.raises(ManifestError, match=message):
        read_manifest(manifest)


def test_missing_manifest_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "nope.csv")


def test_manifest_from_folder_lists_slides_only(tmp_path: Path) -> None:
    for name in ("b.svs", "a.tiff", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    table = manifest_from_folder(tmp_path)
    assert table["slide_id"].tolist() == ["a", "b"]
    assert (table["patient_id"] == table["slide_id"]).all()


def test_clinical_is_strict_about_time_and_event(tmp_path: Path) -> None:
    good = _write(tmp_path / "c.csv", "patient_id,time,event,pT\np1,3.5,1,3\np2,7,0,2\n")
    table = read_clinical(good)
    assert table["event"].tolist() == [1, 0]
    bad_event = _write(tmp_path / "e.csv", "patient_id,time,event\np1,3.5,2\n")
    with pytest.raises(ClinicalError, match="event"):
        read_clinical(bad_event)
    bad_time = _write(tmp_path / "t.csv", "patient_id,time,event\np1,-1,1\n")
    with pytest.raises(ClinicalError, match="line"):
        read_clinical(bad_time)
    duplicate = _write(tmp_path / "d.csv", "patient_id,time,event\np1,1,1\np1,2,0\n")
    with pytest.raises(ClinicalError, match="duplicate"):
        read_clinical(duplicate)


def test_manifest_rows_tolerate_excel_habits(tmp_path: Path) -> None:
    """A BOM, blank lines, padded cells and a short last row (Excel exports) read the same as a clean file."""
    from wsi_prognosis.cohort import read_manifest_rows

    manifest = tmp_path / "m.csv"
    manifest.write_bytes("\ufeffslide_id,patient_id,path,cohort,mpp,annotation\n"
                         " s1 , p1 ,a.svs, training ,0.5,\n\n,,,,,\ns2,p2,b.svs,test\n".encode("utf-8"))
    rows = read_manifest_rows(manifest)
    assert [r["slide_id"] for r in rows] == ["s1", "s2"]
    assert rows[0]["cohort"] == "training" and rows[0]["mpp"] == 0.5 and rows[0]["annotation"] is None
    assert rows[1]["path"] == str((tmp_path / "b.svs").resolve()) and pd.isna(rows[1]["mpp"])
    table = read_manifest(manifest)
    assert table["mpp"].dtype == float and table["slide_id"].tolist() == ["s1", "s2"]


def test_row_with_more_cells_than_the_header_names_its_line(tmp_path: Path) -> None:
    manifest = _write(tmp_path / "m.csv", "slide_id,patient_id,path,cohort\ns1,p1,a.svs,training\ns2,p2,b,c.svs,test\n")
    with pytest.raises(ManifestError, match=r"line 3 has 5 cells"):
        read_manifest(manifest)


def test_repeated_header_column_is_refused(tmp_path: Path) -> None:
    manifest = _write(tmp_path / "m.csv", "slide_id,patient_id,path,cohort,mpp,mpp\ns1,p1,a.svs,training,0.5,0.25\n")
    with pytest.raises(ManifestError, match=r"\['mpp'\] appear twice"):
        read_manifest(manifest)


def test_infinite_mpp_is_refused(tmp_path: Path) -> None:
    manifest = _write(tmp_path / "m.csv", "slide_id,patient_id,path,cohort,mpp\ns1,p1,a.svs,training,inf\n")
    with pytest.raises(ManifestError, match="positive number"):
        read_manifest(manifest)
