"""The analysis options: `AnalysisConfig`, `PrimaryAnalysis`, and `config_from_dict` for an `analysis:` block.

They live in the library, not in the `analyze` stage, because the locked protocol
(`wsi_prognosis.study.protocol`) validates its analysis block with the same function the stage
uses; a library module never imports a CLI stage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from wsi_prognosis.errors import ConfigurationError

COMPARISONS = ("uncertain_vs_good", "poor_vs_good")
PRIMARY_MEASURES = ("hr", "hr_adjusted", "c_index", "logrank_p")
#: the keys of an `analysis:` block (analyze.yaml); anything else is a typo
ANALYSIS_KEYS = ("time_unit", "time_points", "endpoint", "covariates", "reference_marker", "reference_order",
                 "patient_aggregation", "thresholds", "bootstrap", "confidence_bands", "alpha", "ph_alpha", "seed",
                 "primary", "pool", "landmarks")


@dataclass(frozen=True)
class PrimaryAnalysis:
    """The pre-defined primary analysis (Kleppe et al. 2021): fixed before the external cohort is seen.

    Default, as in DoMore-v1-CRC's validation: univariable HR poor vs good in the validation cohort.
    """

    cohort: str = "validation"
    measure: str = "hr"                 # hr | hr_adjusted | c_index | logrank_p
    comparison: str = "poor_vs_good"    # for hr / hr_adjusted
    description: str = "Cancer-specific survival, poor vs good prognosis, univariable Cox HR in the validation cohort"


@dataclass(frozen=True)
class AnalysisConfig:
    """Options of the analysis; every default is documented in configs/analyze.yaml."""

    time_unit: str = "years"
    time_points: tuple[float, ...] = (0, 2, 4, 6, 8)
    covariates: tuple[str, ...] | None = None       # None: pT, pN when present
    reference_marker: str | None = "auto"           # "auto": grade when present; None: none
    reference_order: tuple[str, ...] | None = None  # text marker levels, lowest risk first
    n_bootstrap: int = 1000
    confidence_bands: bool = False
    seed: int = 0
    alpha: float = 0.05
    ph_alpha: float = 0.05
    patient_aggregation: str = "mean"
    thresholds: tuple[float, float] | None = None   # re-derive risk groups from the patient score
    endpoint: str = "Cancer-specific survival"
    primary: PrimaryAnalysis = field(default_factory=PrimaryAnalysis)
    pool: tuple[str, ...] = ()                      # cohorts pooled by random-effects meta-analysis
    landmarks: tuple[float, ...] = ()               # KM survival per group, Uno's C and AUC at these times

    def __post_init__(self) -> None:
        if any(not float(t) > 0 for t in self.landmarks):
            raise ConfigurationError(f"analysis.landmarks={list(self.landmarks)}: need times > 0, e.g. [5].")
        points = [float(t) for t in self.time_points]
        if len(points) < 2 or points != sorted(set(points)) or points[0] < 0:
            raise ConfigurationError(
                f"analysis.time_points={list(self.time_points)}: need at least two increasing values >= 0, e.g. [0,2,4,6,8].")
        if not 0 < self.alpha < 1 or not 0 < self.ph_alpha < 1:
            raise ConfigurationError("analysis.alpha and analysis.ph_alpha must lie in (0, 1).")
        if self.n_bootstrap < 0:
            raise ConfigurationError("analysis.bootstrap.n must be >= 0 (0 disables bootstrap CIs).")
        if self.primary.measure not in PRIMARY_MEASURES:
            raise ConfigurationError(f"analysis.primary.measure={self.primary.measure!r}: use one of {PRIMARY_MEASURES}.")
        if self.primary.measure.startswith("hr") and self.primary.comparison not in COMPARISONS:
            raise ConfigurationError(f"analysis.primary.comparison={self.primary.comparison!r}: use one of {COMPARISONS}.")
        if self.thresholds is not None and not self.thresholds[0] <= self.thresholds[1]:
            raise ConfigurationError(f"analysis.thresholds={self.thresholds}: need low <= high.")


def _tuple(value: Any, key: str, cast: Callable[[Any], Any] = str) -> tuple | None:
    if value is None:
        return None
    if isinstance(value, (str, int, float)):
        value = [value]
    try:
        return tuple(cast(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{key}={value!r}: expected a list ({exc}).") from exc


def config_from_dict(a: Mapping[str, Any]) -> AnalysisConfig:
    """The `analysis:` block as an AnalysisConfig; ConfigurationError names the bad key."""
    unknown = sorted(set(a) - set(ANALYSIS_KEYS))
    if unknown:
        raise ConfigurationError(f"analysis.{unknown[0]}: unknown option (known: {sorted(ANALYSIS_KEYS)}).")
    thresholds = a.get("thresholds")
    if thresholds is not None:
        try:
            thresholds = (float(thresholds["low"]), float(thresholds["high"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError("analysis.thresholds: expected {low: L, high: H} or null.") from exc
    try:
        primary = PrimaryAnalysis(**(a.get("primary") or {}))
        return AnalysisConfig(
            time_unit=str(a.get("time_unit", "years")),
            time_points=_tuple(a.get("time_points", (0, 2, 4, 6, 8)), "analysis.time_points", float),
            endpoint=str(a.get("endpoint", "Cancer-specific survival")),
            covariates=_tuple(a.get("covariates"), "analysis.covariates"),
            reference_marker=a.get("reference_marker", "auto"),
            reference_order=_tuple(a.get("reference_order"), "analysis.reference_order"),
            patient_aggregation=str(a.get("patient_aggregation", "mean")),
            thresholds=thresholds,
            n_bootstrap=int((a.get("bootstrap") or {}).get("n", 1000)),
            confidence_bands=bool(a.get("confidence_bands", False)),
            alpha=float(a.get("alpha", 0.05)),
            ph_alpha=float(a.get("ph_alpha", 0.05)),
            seed=int(a.get("seed", 0)),
            primary=primary,
            pool=_tuple(a.get("pool"), "analysis.pool") or (),
            landmarks=_tuple(a.get("landmarks"), "analysis.landmarks", float) or (),
        )
    except TypeError as exc:
        raise ConfigurationError(f"analysis: {exc}") from exc


__all__ = ["AnalysisConfig", "PrimaryAnalysis", "config_from_dict", "COMPARISONS", "PRIMARY_MEASURES", "ANALYSIS_KEYS"]
