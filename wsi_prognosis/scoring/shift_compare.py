"""One cohort against the tuning reference: score shift, KS, colour and sharpness shift, and the flag.

A limit flags only when the move is also significant (`ShiftLimits.alpha`), so a cohort of a
few slides is never flagged on noise. Nothing is refitted here or anywhere in the check.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from wsi_prognosis.errors import ConfigurationError
from wsi_prognosis.scoring.shift_reference import COLOUR_KEYS, RISK_GROUPS, _finite, _stat_values

#: floors of the tuning SDs, so a very uniform tuning cohort does not turn noise into a flag:
#: 5 % of the tuning mean for colour, 0.05 log10 units (12 %) for sharpness
COLOUR_SD_FLOOR_REL = 0.05
SHARPNESS_SD_FLOOR_LOG10 = 0.05


@dataclass(frozen=True)
class ShiftLimits:
    """When a cohort is flagged (score.yaml ``shift.*``; every default documented there)."""

    max_score_shift_iqr: float = 0.5   # |median - tuning median| / tuning IQR
    max_ks: float = 0.3                # two-sample KS statistic D
    max_colour_sd: float = 1.0         # |stain mean OD shift| in tuning between-slide SDs
    max_sharpness_sd: float = 1.0      # |log10 sharpness shift| in tuning between-slide SDs
    alpha: float = 0.05                # every limit flags only when the move is also significant at this level
                                       # (Mann-Whitney, KS, z of the cohort mean): a few slides never flag on noise

    def __post_init__(self) -> None:
        for key, value in asdict(self).items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ConfigurationError(f"shift.{key}={value!r}: must be a number > 0.")
        if not self.alpha < 1 or not self.max_ks <= 1:
            raise ConfigurationError("shift.alpha must lie in (0, 1) and shift.max_ks in (0, 1].")

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any] | None) -> ShiftLimits:
        section = dict(section or {})
        known = set(cls.__dataclass_fields__)
        if set(section) - known:
            raise ConfigurationError(f"shift: unknown key(s) {sorted(set(section) - known)}; known: {sorted(known)}.")
        try:
            return cls(**{k: float(v) for k, v in section.items()})
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"shift: {exc}") from exc


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def _p(p: float | None) -> float | None:
    """A p-value with 3 significant digits (never rounded to 0)."""
    return None if p is None or not math.isfinite(p) else float(f"{p:.3g}")


def _tile_shift(reference_tiles: Mapping[str, Any] | None, slide_stats: Sequence[Mapping[str, Any]],
                limits: ShiftLimits) -> tuple[dict[str, Any], list[str]]:
    from scipy.stats import norm

    usable = [s for s in slide_stats if s and not s.get("error")]
    out: dict[str, Any] = {"n_slides": len(usable)}
    reasons: list[str] = []
    if reference_tiles is None:
        out["note"] = "no tile statistics in the reference"
        return out, reasons
    if not usable:
        out["note"] = "no tile statistics for this cohort's slides"
        return out, reasons
    ref = reference_tiles.get("stats") or {}
    for key in (*COLOUR_KEYS, "sharpness"):
        name = "log10_sharpness" if key == "sharpness" else key
        v = _stat_values(usable, key)
        if name not in ref or not len(v):
            continue
        mean, ref_mean = float(v.mean()), float(ref[name]["mean"])
        floor = SHARPNESS_SD_FLOOR_LOG10 if key == "sharpness" else COLOUR_SD_FLOOR_REL * abs(ref_mean)
        sd = max(float(ref[name]["sd"]), floor)
        shift_sd = (mean - ref_mean) / sd if sd > 0 else math.nan
        # z of the difference of the two means (tuning SD for both): is the move more than slide-to-slide noise?
        z = shift_sd / math.sqrt(1 / len(v) + 1 / max(int(ref[name].get("n", 1)), 1))
        p = float(2 * norm.sf(abs(z))) if math.isfinite(z) else math.nan
        limit = limits.max_sharpness_sd if key == "sharpness" else limits.max_colour_sd
        out[name] = {"mean": _r(mean), "tuning_mean": _r(ref_mean), "tuning_sd": _r(sd), "shift_sd": _r(shift_sd, 3),
                     "p": _p(p),
                     "ratio": _r(10 ** (mean - ref_mean) if key == "sharpness" else mean / ref_mean if ref_mean else math.nan, 3)}
        if math.isfinite(shift_sd) and abs(shift_sd) > limit and p < limits.alpha:
            what = "sharpness" if key == "sharpness" else f"{'haematoxylin' if key == 'od_h' else 'eosin'} OD"
            reasons.append(f"{what} moved {shift_sd:+.1f} tuning SDs (x{out[name]['ratio']:.2f}, p = {p:.2g}; limit {limit:g})")
    return out, reasons


def cohort_shift(reference: Mapping[str, Any], scores: Iterable[float], slide_stats: Sequence[Mapping[str, Any]] = (),
                 limits: ShiftLimits = ShiftLimits(), risk_groups: Iterable[str] | None = None) -> dict[str, Any]:
    """One cohort against the reference: score shift, KS, colour and sharpness shift, flag and reasons.

    `scores` at the reference's level; `risk_groups` (optional, same rows) give the cohort's shares.
    """
    from scipy.stats import ks_2samp, mannwhitneyu

    s = _finite(scores)
    ref_scores = np.asarray(reference["scores"], dtype=np.float64)
    entry: dict[str, Any] = {"n": int(len(s)), "level": reference.get("level")}
    reasons: list[str] = []
    if len(s):
        median = float(np.median(s))
        iqr = float(reference.get("iqr") or 0.0)
        shift_iqr = (median - float(reference["median"])) / iqr if iqr > 0 else math.nan
        ks = ks_2samp(s, ref_scores)
        location_p = float(mannwhitneyu(s, ref_scores, alternative="two-sided").pvalue)
        entry.update(median=_r(median), tuning_median=_r(float(reference["median"])), tuning_iqr=_r(iqr),
                     score_shift_iqr=_r(shift_iqr, 3), score_shift_p=_p(location_p),
                     ks=_r(float(ks.statistic)), ks_p=_p(float(ks.pvalue)))
        if math.isfinite(shift_iqr) and abs(shift_iqr) > limits.max_score_shift_iqr and location_p < limits.alpha:
            reasons.append(f"median score moved {shift_iqr:+.2f} tuning IQRs (Mann-Whitney p = {location_p:.2g}; "
                           f"limit {limits.max_score_shift_iqr:g})")
        if ks.statistic > limits.max_ks and ks.pvalue < limits.alpha:
            reasons.append(f"score distribution differs: KS D = {ks.statistic:.2f}, p = {ks.pvalue:.2g} "
                           f"(limit D {limits.max_ks:g})")
    else:
        entry["note"] = "no scored rows"
    if risk_groups is not None:
        groups = [g for g in risk_groups if g in RISK_GROUPS]
        entry["shares"] = {g: _r(groups.count(g) / len(groups)) if groups else None for g in RISK_GROUPS}
        entry["tuning_shares"] = {g: _r(v) for g, v in (reference.get("shares") or {}).items()}
    tiles, tile_reasons = _tile_shift(reference.get("tiles"), slide_stats, limits)
    entry["tiles"] = tiles
    reasons += tile_reasons
    entry.update(flagged=bool(reasons), reasons=reasons)
    return entry


def _cohort_tile_means(slide_stats: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    usable = [s for s in slide_stats if s and not s.get("error")]
    out: dict[str, Any] = {"n_slides": len(usable)}
    for key in (*COLOUR_KEYS, "sharpness"):
        v = _stat_values(usable, key)
        if len(v):
            out["log10_sharpness" if key == "sharpness" else key] = {"mean": _r(float(v.mean()))}
    return out


__all__ = ["ShiftLimits", "cohort_shift", "COLOUR_SD_FLOOR_REL", "SHARPNESS_SD_FLOOR_LOG10"]
