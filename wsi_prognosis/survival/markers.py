"""The reference marker (e.g. grade): which clinical column it is and its levels from low to high risk.

Apart from `api` because ordering free-text levels is its own problem: a wrong order flips the
sign of the marker's C-index, so anything not safely orderable is refused with the fix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

_MARKER_WORDS = {"low": 0, "well": 0, "moderate": 1, "moderately": 1, "intermediate": 1,
                 "high": 2, "poor": 2, "poorly": 2, "undifferentiated": 3}


def marker_levels(values: pd.Series, order: Sequence[str] | None = None) -> tuple[list | None, str | None]:
    """Levels of a reference marker ordered from lowest to highest risk, or (None, reason).

    Numbers sort numerically; "G1".."G4" / "grade 2" by their digit; low/moderate/high and
    well/moderately/poorly differentiated by meaning; anything else needs `order`, because an
    alphabetical guess could flip the sign of the marker's C-index.
    """
    present = [v for v in values.dropna().astype(str).str.strip().unique() if v != ""]
    if not present:
        return None, "no values"
    if order is not None:  # values outside `order` (e.g. "unknown") count as missing
        order = [str(o) for o in order]
        levels = [o for o in order if o in present]
        return (levels, None) if levels else (None, f"no value is in analysis.reference_order={order}")
    numeric = pd.to_numeric(pd.Series(present), errors="coerce")
    if numeric.notna().all():
        return [v for _, v in sorted(zip(numeric, present))], None
    digits = [re.findall(r"\d+", v) for v in present]
    if all(len(d) == 1 for d in digits):
        return [v for _, v in sorted(zip((int(d[0]) for d in digits), present))], None
    words = [_MARKER_WORDS.get(re.split(r"[\s_-]+", v.lower())[0]) for v in present]
    if all(w is not None for w in words) and len(set(words)) == len(words):
        return [v for _, v in sorted(zip(words, present))], None
    return None, (f"cannot order values {present[:6]} from low to high risk; "
                  "set analysis.reference_order=[lowest,...,highest]")


def marker_strings(values: pd.Series) -> pd.Series:
    """Marker values as stripped text; numbers without a spurious '.0' (2.0 -> "2"); blanks -> NA."""
    if pd.api.types.is_numeric_dtype(values):
        return values.map(lambda v: pd.NA if pd.isna(v) else f"{v:g}").astype("string")
    return values.astype("string").str.strip().replace("", pd.NA)


def resolve_marker(marker: str | None, columns: Sequence[str]) -> tuple[str | None, str | None]:
    """The clinical column used as reference marker for `analysis.reference_marker`, or (None, why not)."""
    if marker is None or str(marker).lower() in ("none", "null", ""):
        return None, "no reference marker configured"
    if marker == "auto":
        return ("grade", None) if "grade" in columns else (None, "no `grade` column in clinical.csv")
    if marker not in columns:
        return None, f"reference marker {marker!r} is not a column of clinical.csv"
    return marker, None


__all__ = ["marker_levels", "marker_strings", "resolve_marker"]
