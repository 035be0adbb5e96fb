"""manifest.csv: one row per slide (`slide_id, patient_id, path, cohort[, mpp, annotation]`).

Validated before any work starts, so a batch never fails halfway on a typo in the table.
Relative paths resolve against the manifest's folder.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import pandas as pd

from wsi_prognosis.errors import ManifestError

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("slide_id", "patient_id", "path", "cohort")
OPTIONAL_COLUMNS = ("mpp", "annotation")
SLIDE_SUFFIXES = (
    ".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".dcm",
)
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]+$")


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read and validate a manifest; return it with `path` (and `annotation`) made absolute.

    Raises `ManifestError` for a missing file or column, an empty table, a duplicate or unsafe
    `slide_id`, or a non-numeric `mpp`. Unknown extra columns only warn (they are kept).
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found. Fix: pass manifest=PATH to an existing CSV.")
    try:
        table = pd.read_csv(path, dtype={"slide_id": str, "patient_id": str, "cohort": str, "path": str})
    except Exception as exc:  # pandas raises several types for malformed CSV
        raise ManifestError(f"{path}: cannot be parsed as CSV ({exc}). Fix: save it as comma-separated UTF-8.") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ManifestError(
            f"{path}: missing required column(s) {missing}; found {list(table.columns)}. "
            f"Fix: the manifest needs columns {list(REQUIRED_COLUMNS)} (optional: {list(OPTIONAL_COLUMNS)})."
        )
    extra = [c for c in table.columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if extra:
        message = f"{path}: unknown column(s) {extra} are ignored (known: {list(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)})."
        warnings.warn(message, UserWarning, stacklevel=2)
        log.warning(message)
    if table.empty:
        raise ManifestError(f"{path}: the manifest has no rows. Fix: add one row per slide.")
    for column in REQUIRED_COLUMNS:
        blank = table[column].isna() | (table[column].astype(str).str.strip() == "")
        if blank.any():
            rows = [int(i) + 2 for i in table.index[blank][:5]]
            raise ManifestError(f"{path}: empty `{column}` on line(s) {rows}. Fix: fill in every required cell.")
    table["slide_id"] = table["slide_id"].str.strip()
    duplicated = table["slide_id"][table["slide_id"].duplicated()].unique().tolist()
    if duplicated:
        raise ManifestError(f"{path}: duplicate slide_id(s) {duplicated[:5]}. Fix: give every slide its own id.")
    unsafe = [s for s in table["slide_id"] if not _SAFE_ID.match(s)]
    if unsafe:
        raise ManifestError(
            f"{path}: slide_id(s) {unsafe[:5]} contain characters unsafe in file names. "
            "Fix: use only letters, digits, '.', '_' and '-'."
        )
    if "mpp" in table.columns:
        mpp = pd.to_numeric(table["mpp"], errors="coerce")
        bad = table["mpp"].notna() & (mpp.isna() | (mpp <= 0))
        if bad.any():
            raise ManifestError(
                f"{path}: `mpp` must be a positive number in µm/px; bad value(s) {table['mpp'][bad].tolist()[:5]}. "
                "Fix: correct them or leave the cell empty to use the slide's metadata."
            )
        table["mpp"] = mpp
    else:
        table["mpp"] = float("nan")
    base = path.parent.resolve()
    table["path"] = [str((base / p).resolve()) if not Path(p).is_absolute() else p for p in table["path"]]
    if "annotation" in table.columns:
        table["annotation"] = [
            None if pd.isna(a) or str(a).strip() == "" else str((base / str(a)).resolve()) for a in table["annotation"]
        ]
    else:
        table["annotation"] = None
    return table.reset_index(drop=True)


def manifest_from_folder(folder: str | Path, cohort: str = "unassigned") -> pd.DataFrame:
    """Build a manifest for every slide file in `folder`: slide_id = file stem, one patient per slide.

    For pathologists who score a folder without writing a CSV.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ManifestError(f"{folder}: not a folder. Fix: pass a folder of slides or a manifest CSV.")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SLIDE_SUFFIXES and p.is_file())
    if not files:
        raise ManifestError(f"{folder}: no slide files ({', '.join(SLIDE_SUFFIXES)}). Fix: point at the slide folder.")
    ids = [_SAFE_ID.sub("_", p.stem) if not _SAFE_ID.match(p.stem) else p.stem for p in files]
    if len(set(ids)) != len(ids):
        raise ManifestError(f"{folder}: two files share a stem; write a manifest.csv with explicit slide_ids.")
    return pd.DataFrame(
        {
            "slide_id": ids,
            "patient_id": ids,
            "path": [str(p.resolve()) for p in files],
            "cohort": cohort,
            "mpp": float("nan"),
            "annotation": None,
        }
    )
