"""manifest.csv: one row per slide (`slide_id, patient_id, path, cohort[, mpp, annotation]`).

Validated before any work starts, so a batch never fails halfway on a typo in the table.
Relative paths resolve against the manifest's folder.

The validation reads the CSV with the standard library (`read_manifest_rows`), so the `tile`
stage starts without importing pandas (a third of a second on every run); `read_manifest`
returns the same rows as a DataFrame for the stages that work with tables.
"""

from __future__ import annotations

import csv
import logging
import math
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsi_prognosis.errors import ManifestError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("slide_id", "patient_id", "path", "cohort")
OPTIONAL_COLUMNS = ("mpp", "annotation")
SLIDE_SUFFIXES = (
    ".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".dcm",
)
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]+$")


def _read_table(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and (line number, row) pairs of a CSV; blank lines skipped, cells stripped."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, [])]
            rows = []
            for values in reader:
                if not any(value.strip() for value in values):
                    continue
                if len(values) > len(header):
                    raise ManifestError(
                        f"{path}: line {reader.line_num} has {len(values)} cells but the header has "
                        f"{len(header)}. Fix: quote cells that contain commas, or add the missing column name."
                    )
                cells = [value.strip() for value in values] + [""] * (len(header) - len(values))
                rows.append((reader.line_num, dict(zip(header, cells))))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ManifestError(f"{path}: cannot be parsed as CSV ({exc}). Fix: save it as comma-separated UTF-8.") from exc
    if not header or not any(header):
        raise ManifestError(f"{path}: the file is empty. Fix: write a header line {','.join(REQUIRED_COLUMNS)}.")
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise ManifestError(f"{path}: column(s) {duplicated} appear twice in the header. Fix: keep one of each.")
    return header, rows


def _positive_mpp(text: str) -> float | None:
    """The cell as a positive finite number, None when it is not one."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def read_manifest_rows(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate a manifest; return one dict per slide in file order.

    `path` and `annotation` are made absolute (`annotation` is None when absent), `mpp` is a
    float (NaN when blank: the slide's metadata is used). Raises `ManifestError` for a missing
    file or column, an empty table, a duplicate or unsafe `slide_id`, or a bad `mpp`. Unknown
    extra columns only warn (they are kept, as text).
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found. Fix: pass manifest=PATH to an existing CSV.")
    header, rows = _read_table(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ManifestError(
            f"{path}: missing required column(s) {missing}; found {header}. "
            f"Fix: the manifest needs columns {list(REQUIRED_COLUMNS)} (optional: {list(OPTIONAL_COLUMNS)})."
        )
    extra = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if extra:
        message = f"{path}: unknown column(s) {extra} are ignored (known: {list(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)})."
        warnings.warn(message, UserWarning, stacklevel=2)
        log.warning(message)
    if not rows:
        raise ManifestError(f"{path}: the manifest has no rows. Fix: add one row per slide.")
    for column in REQUIRED_COLUMNS:
        blank = [line for line, row in rows if not row[column]]
        if blank:
            raise ManifestError(f"{path}: empty `{column}` on line(s) {blank[:5]}. Fix: fill in every required cell.")
    ids = [row["slide_id"] for _, row in rows]
    seen: set[str] = set()
    duplicated = list(dict.fromkeys(s for s in ids if s in seen or seen.add(s)))  # type: ignore[func-returns-value]
    if duplicated:
        raise ManifestError(f"{path}: duplicate slide_id(s) {duplicated[:5]}. Fix: give every slide its own id.")
    unsafe = [s for s in ids if not _SAFE_ID.match(s)]
    if unsafe:
        raise ManifestError(
            f"{path}: slide_id(s) {unsafe[:5]} contain characters unsafe in file names. "
            "Fix: use only letters, digits, '.', '_' and '-'."
        )
    bad_mpp = [row["mpp"] for _, row in rows if row.get("mpp") and _positive_mpp(row["mpp"]) is None]
    if bad_mpp:
        raise ManifestError(
            f"{path}: `mpp` must be a positive number in µm/px; bad value(s) {bad_mpp[:5]}. "
            "Fix: correct them or leave the cell empty to use the slide's metadata."
        )
    base = path.parent.resolve()
    records = []
    for _, row in rows:
        record: dict[str, Any] = {name: (value if value != "" else None) for name, value in row.items()}
        record["path"] = row["path"] if Path(row["path"]).is_absolute() else str((base / row["path"]).resolve())
        record["mpp"] = _positive_mpp(row["mpp"]) if row.get("mpp") else math.nan
        annotation = row.get("annotation", "")
        record["annotation"] = str((base / annotation).resolve()) if annotation else None
        records.append(record)
    return records


def read_manifest(path: str | Path) -> pd.DataFrame:
    """`read_manifest_rows` as a DataFrame (required columns first, then `mpp`, `annotation`, extras)."""
    import pandas as pd

    records = read_manifest_rows(path)
    columns = list(dict.fromkeys([*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS, *records[0]]))
    table = pd.DataFrame.from_records(records, columns=columns)
    table["mpp"] = table["mpp"].astype(float)
    return table


def manifest_from_folder(folder: str | Path, cohort: str = "unassigned") -> pd.DataFrame:
    """Build a manifest for every slide file in `folder`: slide_id = file stem, one patient per slide.

    For pathologists who score a folder without writing a CSV.
    """
    import pandas as pd

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
