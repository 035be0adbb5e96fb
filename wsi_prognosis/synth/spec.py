"""`FieldSpec`: what one synthetic field is rendered from.

Its own module so that `render` (which draws the field) and `artefacts` (which draws on it)
both import it and neither imports the other's caller: imports flow render -> artefacts -> spec.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldSpec:
    """What to render: size, resolution, risk, signal strengths and the lab's look."""

    width_px: int
    height_px: int
    mpp: float
    risk: float
    strength_40x: float = 1.0
    strength_10x: float = 1.0
    tissue_fraction: float = 0.5
    stain_scale: float = 1.0          # validation lab: OD x (1 + shift)
    blur_um: float = 0.0              # scanner blur (Gaussian sigma, µm)
    artefacts: tuple[str, ...] = ()   # subset of artefacts.KINDS
    full_tissue: bool = False         # fill the field with tissue (patch bank)
