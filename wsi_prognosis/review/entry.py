"""One scored slide as the review server sees it (`SlideEntry`), and its QC flags (`qc_flags`).

Kept apart from building the index (`review.index`) and from filtering it (`review.query`):
the viewer's overlays (`review.overlay`) need only this.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GROUPS = ("good", "uncertain", "poor")


@dataclass(frozen=True)
class QcThresholds:
    """When a slide gets a QC flag (the tile store's QC values against these).

    "little tissue" needs both: less tissue than `little_tissue_mm2` (real resections have tens
    to hundreds of mm², a small biopsy a few mm², so 0.1 mm² flags only a near-empty slide) and
    less than `little_tissue_share` of the scanned area. The second keeps a small image that is
    mostly tissue (a cropped region; the demo's synthetic slides, about 0.1 mm² and half tissue)
    from being flagged for its size: it is not a slide whose tissue went missing.
    """

    blur_below: float = 300.0          # tissue.BLUR_WARNING_THRESHOLD: variance of the Laplacian
    pen_above: float = 0.05            # tiling.slide_job.PEN_WARNING_FRACTION: share of tissue area
    little_tissue_mm2: float = 0.1     # tissue area in mm² below which a slide may be flagged ...
    little_tissue_share: float = 0.1   # ... when it also covers less than this share of the slide's area

    def __post_init__(self) -> None:
        if not 0.0 <= self.little_tissue_share <= 1.0:
            from wsi_prognosis.errors import ConfigurationError

            raise ConfigurationError(f"qc.little_tissue_share={self.little_tissue_share!r}: a share of the slide's "
                                     "area must lie in [0, 1]. Fix: e.g. 0.1 (1 disables the relative test).")


@dataclass
class SlideEntry:
    """One scored slide. `available` / `reason` say whether its pixels may be served."""

    slide_id: str
    patient_id: str
    cohort: str
    score: float | None
    risk_group: str
    n_tiles: dict[str, int]
    status: str
    error: str
    members: dict[str, float]
    path: Path | None = None
    tile_store: Path | None = None
    heatmap: Path | None = None
    tile_scores: Path | None = None
    mpp: float | None = None
    dimensions: tuple[int, int] | None = None   # level-0 width, height (from the tile store)
    qc: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    available: bool = False
    reason: str = "not checked yet"
    checked: bool = False
    notes: list[str] = field(default_factory=list)
    expected_fingerprint: str | None = None

    @property
    def spread(self) -> float | None:
        """Member disagreement: max - min of the member slide scores (None with < 2 members)."""
        values = [v for v in self.members.values() if v is not None and not math.isnan(v)]
        return max(values) - min(values) if len(values) >= 2 else None

    def sort_value(self, key: str) -> Any:
        if key == "spread":
            return self.spread
        if key == "qc":
            return len(self.flags)
        if key in ("n_tiles_10x", "n_tiles_40x"):
            return self.n_tiles.get(key.rsplit("_", 1)[1], 0)
        return getattr(self, key)

    def summary(self) -> dict[str, Any]:
        """What a page may show: no file paths, except inside `reason` where the fix needs one."""
        return {
            "slide_id": self.slide_id, "patient_id": self.patient_id, "cohort": self.cohort, "score": self.score,
            "risk_group": self.risk_group, "n_tiles_10x": self.n_tiles.get("10x", 0),
            "n_tiles_40x": self.n_tiles.get("40x", 0), "status": self.status, "error": self.error,
            "members": self.members, "spread": self.spread, "flags": list(self.flags), "available": self.available,
            "reason": self.reason, "checked": self.checked, "notes": list(self.notes),
            "has_tile_scores": self.tile_scores is not None, "has_heatmap": self.heatmap is not None,
        }


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def slide_area_mm2(dimensions: tuple[int, int] | None, mpp: float | None) -> float | None:
    """The scanned area in mm² from the level-0 size (width, height px) and µm/px; None when unknown.

    >>> round(slide_area_mm2((1000, 800), 0.25), 6)
    0.05
    """
    if dimensions is None or mpp is None:
        return None
    return dimensions[0] * dimensions[1] * (mpp / 1000.0) ** 2


def qc_flags(qc: Mapping[str, Any], thresholds: QcThresholds, slide_mm2: float | None = None) -> list[str]:
    """`blur`, `pen`, `little tissue` from a tile store's QC record (missing values raise no flag).

    `slide_mm2`: the slide's scanned area; with it, "little tissue" also needs the tissue to cover
    less than `thresholds.little_tissue_share` of it (see `QcThresholds`); without it, the
    absolute area decides alone.
    """
    flags = []
    blur = _float(qc.get("blur"))
    if blur is not None and blur < thresholds.blur_below:
        flags.append("blur")
    pen = _float(qc.get("pen_fraction"))
    if pen is not None and pen > thresholds.pen_above:
        flags.append("pen")
    tissue = _float(qc.get("tissue_mm2"))
    if tissue is not None and tissue < thresholds.little_tissue_mm2 and (
            slide_mm2 is None or tissue < thresholds.little_tissue_share * slide_mm2):
        flags.append("little tissue")
    return flags


__all__ = ["GROUPS", "QcThresholds", "SlideEntry", "qc_flags", "slide_area_mm2"]
