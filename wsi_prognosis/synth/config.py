"""SynthConfig: every knob of a synthetic cohort, validated once, with named presets.

Presets are kept here (one source of truth) rather than in YAML: the `synth` stage config only
exposes `preset`, `seed` and `null` overrides, so a test and the CLI build the same object.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from wsi_prognosis.errors import ConfigurationError

COHORTS = ("training", "tuning", "test", "validation")


@dataclass(frozen=True)
class OutcomeParams:
    """Weibull proportional hazards on the latent risk r ~ N(0, 1), plus censoring.

    Cancer-specific death time T = scale * (-ln U / exp(log_hr_per_sd * r)) ** (1 / shape);
    death from other causes (exponential) and end of follow-up (uniform) censor it.
    """

    weibull_shape: float = 1.3
    weibull_scale_years: float = 9.0       # baseline (r = 0) characteristic life
    log_hr_per_sd: float = 1.4             # hazard ratio per SD of r = e^1.4 ~ 4
    followup_min_years: float = 5.0
    followup_max_years: float = 12.0
    other_cause_rate_per_year: float = 0.015   # 0 disables death from other causes
    good_min_years: float = 6.0            # DoMore "good": > 6 y cancer-specific survival
    poor_min_years: float = 100 / 365.25   # DoMore "poor": cancer death 100 d - 2.5 y
    poor_max_years: float = 2.5


@dataclass(frozen=True)
class SynthConfig:
    """A synthetic cohort: patients per cohort, slide geometry, signal strengths, scanner look."""

    preset: str = "demo"
    seed: int = 0
    # patients
    n_training: int = 44
    n_tuning: int = 44
    n_validation: int = 44
    with_test: bool = True              # test cohort = training patients, a second slide
    slides_per_patient: int = 1
    outcome: OutcomeParams = field(default_factory=OutcomeParams)
    # slide geometry (level 0)
    base_mpp: float = 0.25
    width_px: int = 2560
    height_px: int = 1920
    size_jitter: float = 0.08           # +- fraction, drawn independently of r
    tissue_fraction: float = 0.5
    tissue_fraction_jitter: float = 0.08
    tile_px: int = 256
    jpeg_quality: int = 85
    max_levels: int = 6                 # downsamples 1, 2, 4, 8, 16, 32 as far as the size allows
    # signal: 40x nuclear features, 10x architecture (0 switches a scale off)
    strength_40x: float = 1.0
    strength_10x: float = 1.0
    # artefacts: probability per slide, independent of r
    artefact_probability: float = 0.25
    # validation: another lab and scanner
    validation_stain_shift: float = 0.15    # H&E optical density scaled by (1 + shift)
    validation_blur_px: float = 1.2         # Gaussian sigma at level 0
    validation_jpeg_quality: int = 70
    validation_tile_px: int = 512
    validation_format: str = "svs"          # "svs" (Aperio-style, downsamples 1, 4, 16) | "tiff"
    validation_base_mpp: float = 0.25       # 0.5 = a 20x scanner, no 40x level
    # engine
    bank_engine_min_px: int = 12000     # slides at least this wide use the patch-bank renderer
    workers: int = 2

    # ------------------------------------------------------------------ construction
    @classmethod
    def preset_names(cls) -> tuple[str, ...]:
        return tuple(PRESETS)

    @classmethod
    def from_preset(cls, name: str = "demo", seed: int = 0, **overrides: Any) -> "SynthConfig":
        """A named preset (`tiny`, `demo`, `benchmark`) with `overrides` applied and validated.

        Outcome parameters can be overridden by their own names (e.g. `followup_max_years=8`).
        """
        if name not in PRESETS:
            raise ConfigurationError(
                f"synth: unknown preset {name!r}. Fix: preset= one of {sorted(PRESETS)}."
            )
        values: dict[str, Any] = {**PRESETS[name], "preset": name, "seed": seed}
        outcome_keys = {f.name for f in dataclasses.fields(OutcomeParams)}
        own_keys = {f.name for f in dataclasses.fields(cls)}
        outcome_over: dict[str, Any] = {}
        for key, value in overrides.items():
            if key in outcome_keys:
                outcome_over[key] = value
            elif key in own_keys and key != "outcome":
                values[key] = value
            else:
                raise ConfigurationError(
                    f"synth: unknown option {key!r}. Fix: use one of "
                    f"{sorted((own_keys | outcome_keys) - {'outcome'})}."
                )
        values["outcome"] = dataclasses.replace(values.get("outcome", OutcomeParams()), **outcome_over)
        config = cls(**values)
        config.validate()
        return config

    def replace(self, **changes: Any) -> "SynthConfig":
        """A validated copy with `changes` (outcome fields, `seed` and `preset` allowed too)."""
        merged = {**self._overrides(), **changes}
        preset = merged.pop("preset", self.preset)
        seed = merged.pop("seed", self.seed)
        return SynthConfig.from_preset(preset, seed=seed, **merged)

    def _overrides(self) -> dict[str, Any]:
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in {"preset", "seed", "outcome"}}
        out.update(dataclasses.asdict(self.outcome))
        return out

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ConfigurationError naming the key for any value out of range."""

        def bad(key: str, problem: str, fix: str) -> ConfigurationError:
            return ConfigurationError(f"synth: {key}={getattr(self, key, None)!r} {problem}. Fix: {fix}.")

        for key in ("n_training", "n_tuning", "n_validation"):
            if int(getattr(self, key)) < 0:
                raise bad(key, "is negative", "give a patient count >= 0")
        if self.n_training + self.n_tuning + self.n_validation <= 0:
            raise ConfigurationError(
                "synth: the cohort has zero patients (n_training + n_tuning + n_validation = 0). "
                "Fix: set at least one of n_training, n_tuning, n_validation > 0."
            )
        if self.with_test and self.n_training <= 0:
            raise bad("with_test", "needs training patients (test = training patients, second slide)",
                      "set n_training > 0 or with_test=false")
        if self.slides_per_patient < 1:
            raise bad("slides_per_patient", "must be >= 1", "set slides_per_patient >= 1")
        o = self.outcome
        for key in ("followup_min_years", "followup_max_years"):
            if getattr(o, key) < 0:
                raise ConfigurationError(
                    f"synth: {key}={getattr(o, key)!r} is negative. Fix: follow-up is a duration in years >= 0."
                )
        if o.followup_max_years < o.followup_min_years or o.followup_max_years <= 0:
            raise ConfigurationError(
                f"synth: follow-up range [{o.followup_min_years}, {o.followup_max_years}] years is empty. "
                "Fix: 0 <= followup_min_years <= followup_max_years, followup_max_years > 0."
            )
        if o.weibull_shape <= 0 or o.weibull_scale_years <= 0:
            raise ConfigurationError("synth: weibull_shape and weibull_scale_years must be > 0.")
        if o.other_cause_rate_per_year < 0:
            raise ConfigurationError("synth: other_cause_rate_per_year must be >= 0 (0 disables it).")
        if self.base_mpp <= 0 or self.validation_base_mpp <= 0:
            raise bad("base_mpp", "must be > 0", "give micrometres per pixel, e.g. 0.25")
        if self.validation_base_mpp < self.base_mpp:
            raise bad("validation_base_mpp", f"is finer than base_mpp={self.base_mpp}",
                      "use base_mpp or a coarser value such as 0.5")
        if min(self.width_px, self.height_px) < 256:
            raise bad("width_px", "or height_px is below 256 px", "make slides at least 256 x 256 px")
        if not 0.05 <= self.tissue_fraction <= 0.9:
            raise bad("tissue_fraction", "is outside [0.05, 0.9]", "use e.g. 0.5")
        for key in ("tile_px", "validation_tile_px"):
            value = getattr(self, key)
            if value % 16 or value < 64:
                raise bad(key, "must be a multiple of 16 and >= 64", "use 256 or 512")
        for key in ("jpeg_quality", "validation_jpeg_quality"):
            if not 10 <= getattr(self, key) <= 100:
                raise bad(key, "is outside [10, 100]", "use e.g. 85")
        for key in ("strength_40x", "strength_10x"):
            if getattr(self, key) < 0:
                raise bad(key, "is negative", "0 switches the scale's signal off; default 1")
        if self.validation_format not in {"svs", "tiff"}:
            raise bad("validation_format", "is unknown", "use 'svs' or 'tiff'")
        if not 0 <= self.artefact_probability <= 1:
            raise bad("artefact_probability", "is not a probability", "use a value in [0, 1]")
        if self.validation_stain_shift <= -0.9:
            raise bad("validation_stain_shift", "would remove the stain", "use a value > -0.9")
        if self.workers < 1:
            raise bad("workers", "must be >= 1", "use 1 or 2")

    def fingerprint(self) -> str:
        """Hash of everything that changes pixels or tables (not `workers`)."""
        payload = {k: v for k, v in dataclasses.asdict(self).items() if k != "workers"}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, dict[str, Any]] = {
    # tests: a handful of small slides per cohort, seconds in all
    "tiny": dict(n_training=6, n_tuning=6, n_validation=6, width_px=1024, height_px=832,
                 validation_tile_px=512),
    # the demo: ~45 patients per cohort, 2.5k x 1.9k px slides (640 x 480 µm), ~50 % tissue: ~30 tiles of
    # 224 px at 40x and 2-4 at 10x per slide, for a 224-px encoder
    "demo": dict(n_training=44, n_tuning=44, n_validation=44, width_px=2560, height_px=1920),
    # throughput: one ~80,000 x 60,000 px slide, ~38 % tissue, rendered from a patch bank
    "benchmark": dict(n_training=1, n_tuning=0, n_validation=0, with_test=False,
                      width_px=80000, height_px=60000, size_jitter=0.0, tissue_fraction=0.38,
                      tissue_fraction_jitter=0.0, artefact_probability=0.0, jpeg_quality=80),
}
