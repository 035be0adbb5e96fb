"""Which pyramid level to read for a target resolution, and how to resample it.

The rule (documented here, in configs/slides/default.yaml and in the README):

* The level read is the coarsest one that is **not coarser than needed**: the largest level
  downsample ``d`` with ``d <= (target_mpp / slide_mpp) * (1 + LEVEL_TOLERANCE)``. The 1 %
  tolerance absorbs pyramids whose downsamples are 4.016 instead of 4.
* The region read at that level is resampled to exactly ``tile_px`` pixels (no resampling when
  the level already matches, e.g. 0.25 µm/px tiles from a 0.25 µm/px level).
* When even level 0 is coarser than the target, the pixels must be **upsampled** by
  ``slide_mpp / target_mpp``. Up to ``max_upsample`` (default 1.05, i.e. 5 %) this is accepted;
  beyond it (a 40x = 0.25 µm/px grid on a 20x = 0.5 µm/px scan needs 2x) the plan is refused
  with `ResolutionError`, unless `slides.max_upsample` is raised (e.g. to 2.0) on purpose.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wsi_prognosis.errors import ResolutionError

LEVEL_TOLERANCE = 0.01
DEFAULT_MAX_UPSAMPLE = 1.05


@dataclass(frozen=True)
class ReadPlan:
    """How to produce pixels at `target_mpp` from a slide."""

    target_mpp: float
    level: int
    downsample: float          # the level's downsample relative to level 0
    scale: float               # level pixels per output pixel (< 1 means upsampling)

    def read_px(self, out_px: int) -> float:
        """Level pixels covered by `out_px` output pixels (may be fractional)."""
        return out_px * self.scale

    def level0_px(self, out_px: int) -> float:
        """Level-0 pixels covered by `out_px` output pixels."""
        return out_px * self.scale * self.downsample

    @property
    def resamples(self) -> bool:
        return abs(self.scale - 1.0) > 1e-9


def plan_read(
    slide_mpp: float,
    level_downsamples: Sequence[float],
    target_mpp: float,
    *,
    max_upsample: float = DEFAULT_MAX_UPSAMPLE,
    path: str | Path = "slide",
) -> ReadPlan:
    """Pick the level for `target_mpp` (µm/px) by the rule in this module's docstring.

    Raises `ResolutionError` when the target needs more upsampling than `max_upsample` allows.
    """
    if target_mpp <= 0 or slide_mpp <= 0:
        raise ResolutionError(f"{path}: target and slide MPP must be positive (got {target_mpp}, {slide_mpp}).")
    needed = target_mpp / slide_mpp
    if needed < 1.0 / max_upsample:
        power = 10.0 / slide_mpp
        raise ResolutionError(
            f"{path}: a {target_mpp:g} µm/px grid needs {1 / needed:.2f}x upsampling of this slide's finest level "
            f"({slide_mpp:g} µm/px, about {power:.0f}x); refused because slides.max_upsample={max_upsample:g}. "
            f"Fix: drop that resolution (tiling.resolutions) or set slides.max_upsample={1 / needed:.2f} "
            "to accept upsampled tiles."
        )
    level = 0
    for index, downsample in enumerate(level_downsamples):
        if downsample <= needed * (1 + LEVEL_TOLERANCE) and downsample >= level_downsamples[level]:
            level = index
    downsample = float(level_downsamples[level])
    return ReadPlan(target_mpp=target_mpp, level=level, downsample=downsample, scale=needed / downsample)
