"""Microns per pixel: where a slide's resolution comes from, and the audit record of it.

Order (DESIGN.md, "never assume a resolution silently"):
1. the slide's metadata (`openslide.mpp-x/-y`)          -> source "metadata"
2. the manifest's `mpp` column                           -> source "manifest"
3. the objective power, only when allowed                -> source "objective-power"
   (40x ≙ 0.25 µm/px, i.e. mpp = 10 / power)
4. otherwise `MppMissingError`, naming the slide and both fixes.

A manifest value that disagrees with the metadata by more than 1 % is reported back as a
warning (the metadata still wins), so a wrong table never changes a resolution silently.
Anisotropic pixels (x and y differing by more than 1 %) are refused: every grid here is square.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from wsi_prognosis.errors import MppMissingError, ResolutionError

MICRONS_AT_1X = 10.0          # 40x ≙ 0.25 µm/px, 20x ≙ 0.5 µm/px
ANISOTROPY_TOLERANCE = 0.01   # relative difference of mpp-x and mpp-y accepted as square pixels


@dataclass(frozen=True)
class MppResolution:
    """The resolved MPP, where it came from, and warnings worth showing the user."""

    mpp: float
    source: str               # "metadata" | "manifest" | "objective-power"
    warnings: tuple[str, ...] = ()


def _positive(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def resolve_mpp(
    properties: Mapping[str, str],
    path: str | Path,
    *,
    manifest_mpp: float | None = None,
    allow_objective_power: bool = False,
) -> MppResolution:
    """Resolve a slide's µm/px from OpenSlide `properties`, the manifest, or the objective power.

    Raises `MppMissingError` when no allowed source has a value and `ResolutionError` for
    anisotropic metadata.
    """
    mpp_x = _positive(properties.get("openslide.mpp-x"))
    mpp_y = _positive(properties.get("openslide.mpp-y"))
    manifest = _positive(manifest_mpp)
    if mpp_x is not None or mpp_y is not None:
        if mpp_x is None or mpp_y is None:
            mpp_x = mpp_y = mpp_x or mpp_y
        assert mpp_x is not None and mpp_y is not None
        if abs(mpp_x - mpp_y) > ANISOTROPY_TOLERANCE * max(mpp_x, mpp_y):
            raise ResolutionError(
                f"{path}: anisotropic pixels (mpp-x={mpp_x:g}, mpp-y={mpp_y:g} µm/px) are not supported: "
                "tiles would not be square in microns. Fix: resample the slide to square pixels."
            )
        mpp = (mpp_x + mpp_y) / 2
        warnings: tuple[str, ...] = ()
        if manifest is not None and abs(manifest - mpp) > 0.01 * mpp:
            warnings = (
                f"manifest mpp {manifest:g} disagrees with the slide metadata ({mpp:g} µm/px); "
                "the metadata is used",
            )
        return MppResolution(mpp, "metadata", warnings)
    if manifest is not None:
        return MppResolution(manifest, "manifest")
    power = _positive(properties.get("openslide.objective-power"))
    if power is not None and allow_objective_power:
        return MppResolution(MICRONS_AT_1X / power, "objective-power")
    power_note = (
        f"its objective power ({power:g}x) is only used with slides.allow_objective_power=true"
        if power is not None
        else "it records no objective power either"
    )
    raise MppMissingError(
        f"{path}: MPP (microns per pixel) is missing: the slide metadata has none, the manifest gives none, "
        f"and {power_note}. Fix: put the slide's µm/px in the manifest's `mpp` column, or set "
        "slides.allow_objective_power=true to derive it from the objective power (40x ≙ 0.25 µm/px)."
    )
