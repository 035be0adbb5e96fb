"""Tissue-mask parameters in physical units, and their one conversion to pixels.

Every size is given in microns (µm, µm²) so that a mask does not depend on the scanner or the
thumbnail resolution; `pixel_sizes` is the only place that turns them into pixels.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wsi_prognosis.errors import ConfigurationError

__all__ = ["TissueParams", "PixelSizes", "pixel_sizes"]


@dataclass(frozen=True)
class TissueParams:
    """How a tissue mask is computed. Defaults suit H&E on a white glass background.

    Parameters
    ----------
    mask_mpp : float
        µm/px of the thumbnail the mask is computed on (default 8.0: an 80,000 x 60,000 px
        40x slide becomes about 2500 x 1900 px, enough to place 224-µm tiles).
    threshold_method : {"otsu", "fixed"}
        "otsu": Otsu's threshold on the saturation histogram, clipped to
        [`min_saturation`, `max_saturation`]; "fixed": `fixed_saturation` as is.
    min_saturation : float
        Floor of the Otsu threshold, saturation in [0, 1] (default 0.05). Glass is below
        about 0.03; the floor keeps a blank slide's threshold out of its JPEG noise, so a
        blank slide gives an empty mask.
    max_saturation : float
        Cap of the Otsu threshold (default 0.10). Otsu assumes two classes; when a
        thumbnail is nearly all tissue it splits pale stroma (saturation 0.1-0.2) from
        dense tissue and would drop the stroma. On thumbnails with glass Otsu lands at
        0.15-0.25, and capping it at 0.10 changes their masks by a few percent at most.
    fixed_saturation : float
        The threshold when `threshold_method="fixed"` (default 0.08).
    closing_um : float
        Radius of the binary closing that bridges small gaps in tissue, µm (default 16,
        2 px at 8 µm/px; 0 switches it off).
    min_tissue_area_um2 : float
        Tissue pieces of this area or less are dropped, µm² (default 50,000 µm² = 0.05 mm²,
        about one 224-µm tile: dust and debris, not sections).
    max_hole_area_um2 : float
        Holes of this area or less inside tissue are filled, µm² (default 20,000 µm²,
        a circle of about 160 µm: small lumens and tears, not fat or glass).
    detect_pen : bool
        Exclude pen ink (blue, green, black) from the mask (default True).
    pen_min_saturation : float
        Blue and green ink must be at least this saturated (default 0.3). Hematoxylin
        that looks blue on some scanners stays below, marker ink is far above.
    blue_hue_deg : tuple[float, float]
        Hue range (degrees, HSV) counted as blue ink (default 180-250; hematoxylin is
        purple, above 250).
    green_hue_deg : tuple[float, float]
        Hue range counted as green ink (default 70-180; H&E has no green).
    black_max_value : int
        Black ink: the brightest channel at most this (0-255, default 60) ...
    black_max_chroma : int
        ... and max - min channel at most this (0-255, default 40): dark and grey, unlike
        dense nuclei which stay purple.
    min_pen_area_um2 : float
        Pen components of this area or less are ignored, µm² (default 5,000 µm², about
        80 px at 8 µm/px): isolated dark or blue pixels are not a marker stroke.
    pen_dilation_um : float
        Pen is grown by this radius, µm (default 24), to cover the stroke's pale fringe.
    """

    mask_mpp: float = 8.0
    threshold_method: str = "otsu"
    min_saturation: float = 0.05
    max_saturation: float = 0.10
    fixed_saturation: float = 0.08
    closing_um: float = 16.0
    min_tissue_area_um2: float = 50_000.0
    max_hole_area_um2: float = 20_000.0
    detect_pen: bool = True
    pen_min_saturation: float = 0.3
    blue_hue_deg: tuple[float, float] = (180.0, 250.0)
    green_hue_deg: tuple[float, float] = (70.0, 180.0)
    black_max_value: int = 60
    black_max_chroma: int = 40
    min_pen_area_um2: float = 5_000.0
    pen_dilation_um: float = 24.0

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> ConfigurationError:
            return ConfigurationError(f"tissue.{key}={getattr(self, key)!r}: {why}")

        if not (math.isfinite(self.mask_mpp) and self.mask_mpp > 0):
            raise bad("mask_mpp", "must be a positive number of µm/px (e.g. 8.0)")
        if self.threshold_method not in ("otsu", "fixed"):
            raise bad("threshold_method", 'must be "otsu" or "fixed"')
        for key in ("min_saturation", "max_saturation", "fixed_saturation", "pen_min_saturation"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise bad(key, "must be a saturation between 0 and 1")
        if self.min_saturation > self.max_saturation:
            raise bad("min_saturation", f"must not exceed max_saturation={self.max_saturation}")
        for key in ("closing_um", "min_tissue_area_um2", "max_hole_area_um2",
                    "min_pen_area_um2", "pen_dilation_um"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise bad(key, "must be a non-negative number (microns)")
        for key in ("blue_hue_deg", "green_hue_deg"):
            lo, hi = getattr(self, key)
            if not 0.0 <= lo <= hi <= 360.0:
                raise bad(key, "must be [low, high] degrees with 0 <= low <= high <= 360")
        for key in ("black_max_value", "black_max_chroma"):
            if not 0 <= getattr(self, key) <= 255:
                raise bad(key, "must be an 8-bit level between 0 and 255")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> TissueParams:
        """Build from a plain mapping (e.g. the `tissue` config group); `None` gives defaults.

        Raises
        ------
        ConfigurationError
            Naming the key, for an unknown key or a value of the wrong type or range.
        """
        if d is None:
            return cls()
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in dict(d).items():
            if key not in fields:
                raise ConfigurationError(
                    f"tissue.{key}: unknown tissue-mask option; known: {', '.join(fields)}"
                )
            kwargs[key] = _coerce(key, value, fields[key].default)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready mapping (tuples become lists); `from_dict` reads it back."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Check `value` against the type of the field's default; ints are fine for floats."""
    where = f"tissue.{key}={value!r}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigurationError(f"{where}: must be true or false")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigurationError(f"{where}: must be a string")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigurationError(f"{where}: must be an integer")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigurationError(f"{where}: must be a number")
        return float(value)
    if isinstance(default, tuple):
        try:
            pair = tuple(float(v) for v in value)
        except (TypeError, ValueError):
            raise ConfigurationError(f"{where}: must be a pair of numbers [low, high]") from None
        if len(pair) != 2 or any(isinstance(v, bool) for v in value):
            raise ConfigurationError(f"{where}: must be a pair of numbers [low, high]")
        return pair
    return value  # pragma: no cover - every field has one of the types above


@dataclass(frozen=True)
class PixelSizes:
    """The parameters' physical sizes in pixels at one resolution."""

    closing_radius_px: int
    min_tissue_px: int
    max_hole_px: int
    min_pen_px: int
    pen_dilation_px: int


def pixel_sizes(params: TissueParams, mpp: float) -> PixelSizes:
    """Convert every µm / µm² size of `params` to pixels at `mpp` µm/px (rounded)."""
    if not (math.isfinite(mpp) and mpp > 0):
        raise ValueError(f"mpp must be a positive number of µm/px, got {mpp!r}")
    px_area_um2 = mpp * mpp
    return PixelSizes(
        closing_radius_px=round(params.closing_um / mpp),
        min_tissue_px=round(params.min_tissue_area_um2 / px_area_um2),
        max_hole_px=round(params.max_hole_area_um2 / px_area_um2),
        min_pen_px=round(params.min_pen_area_um2 / px_area_um2),
        pen_dilation_px=round(params.pen_dilation_um / mpp),
    )
