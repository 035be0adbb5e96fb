"""How the latent risk r becomes morphology, one scale at a time.

40x (nuclear, visible in 16-56 µm tiles at 0.25 µm/px): size, density, pleomorphism, chromatin
darkness and coarseness, nucleoli, loss of polarity.
10x (architecture, visible in 64-224 µm tiles at 1 µm/px): gland disruption (ragged outlines,
cribriform lumens), solid sheets, tumour budding.

Each scale reads only its own strength, so `strength_10x=0` leaves architecture independent of
r while nuclei still carry it (and vice versa).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


@dataclass(frozen=True)
class NuclearParams:
    radius_um: float          # mean equivalent radius of an epithelial nucleus
    pleomorphism_cv: float    # coefficient of variation of size (and aspect)
    darkness: float           # haematoxylin concentration in the nucleus
    coarseness: float         # chromatin texture amplitude
    density_per_um2: float    # epithelial nuclei per µm² of epithelium
    nucleolus_probability: float
    disorder: float           # 0 = basal, radially oriented row; 1 = random orientation, jitter


@dataclass(frozen=True)
class ArchitectureParams:
    solid_probability: float      # a gland is a solid sheet (no lumen)
    cribriform_probability: float # a gland has several small lumens
    irregularity: float           # amplitude of outline perturbation
    budding_per_mm2: float        # tumour buds per mm² of stroma
    disruption: float             # the 0..1 summary the above are made from


def nuclear_params(risk: float, strength_40x: float) -> NuclearParams:
    """40x nuclear features; n = strength * r, clipped to +-2.5."""
    n = float(np.clip(strength_40x * risk, -2.5, 2.5))
    return NuclearParams(
        radius_um=2.6 * np.exp(0.11 * n),
        pleomorphism_cv=float(np.clip(0.10 * np.exp(0.45 * n), 0.04, 0.35)),
        darkness=1.0 + 0.10 * n,
        coarseness=float(np.clip(0.22 + 0.10 * n, 0.05, 0.5)),
        density_per_um2=(1.0 / 40.0) * np.exp(-0.05 * n),  # held: size, not count, grows
        nucleolus_probability=_sigmoid(1.6 * n - 1.5),
        disorder=_sigmoid(1.5 * n - 0.5),
    )


def architecture_params(risk: float, strength_10x: float) -> ArchitectureParams:
    """10x architecture; a = sigmoid(1.4 * strength * r - 0.4) in (0, 1)."""
    n = float(np.clip(strength_10x * risk, -2.5, 2.5))
    a = _sigmoid(1.4 * n - 0.4)
    return ArchitectureParams(
        solid_probability=0.65 * a ** 1.5,
        cribriform_probability=0.45 * a,
        irregularity=0.03 + 0.22 * a,
        budding_per_mm2=220.0 * a ** 2,
        disruption=a,
    )
