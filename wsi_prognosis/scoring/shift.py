"""The domain-shift check: each scored cohort against the tuning cohort's reference in the bundle.

A model whose thresholds were fitted on one lab's slides can move a whole cohort into one risk
group when the stain, the scanner or the focus differ. The check never refits anything: it
measures how far a cohort moved and says so (``shift.json``, ``shift.csv``, a warning per
flagged cohort); what to do about it is a person's decision.

Three pieces:

- **tile statistics per slide** (`tile_stats`, `slide_tile_stats`): on a fixed, evenly spaced
  subsample of the slide's tiles at the bundle's coarsest resolution (10x), the mean optical
  density (OD = -ln((I + 1) / 256)) of haematoxylin and eosin over tissue pixels, from colour
  deconvolution with scikit-image's H&E(DAB) matrix (Ruifrok & Johnston), and the sharpness:
  the mean variance of the Laplacian of the gray tiles (`wsi_prognosis.tissue.blur_score`), and
  that divided per tile by the tile's gray variance (``sharpness_rel``), which a denser or paler
  stain leaves unchanged (the raw variance grows with stain contrast); the check compares the latter.
  `score` stores them in each slide's record (``slides/<id>.json``, key ``tile_stats``), so a
  resumed run keeps them; records written before the check existed are filled in on the next
  run (`backfill_tile_stats`).
- **the reference** (`build_reference`): written by `calibrate` into the new bundle's
  calibration record (``bundle.json`` -> ``calibration.reference``): the tuning scores the
  thresholds were fitted on (all of them up to `MAX_REFERENCE_SCORES`, enough for a two-sample
  KS test), their median and IQR, the tuning shares, and the mean and SD across tuning slides of
  each tile statistic. It lives in the calibration record because it describes the same fit;
  it is part of the bundle id like the rest of it.
- **the comparison** (`cohort_shift`, `shift_report`): per cohort, at the reference's level
  (patient scores by default): the median score shift in tuning IQRs, the two-sample KS
  statistic and p (``scipy.stats.ks_2samp``) against the tuning scores, the shift of each
  stain's mean OD and of log10 sharpness in tuning between-slide SDs, and the shares. A cohort
  is flagged when one of them passes its limit (`ShiftLimits`, ``shift.*`` in score.yaml) and
  the move is also significant at ``shift.alpha`` (Mann-Whitney for the median, the KS p, a z
  test of the cohort's mean tile statistic), so a cohort of a few slides is not flagged on noise.

A bundle without a reference (calibrated before this check, or not calibrated) still scores;
shift.json then says "no reference in bundle" and flags nothing.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsi_prognosis.errors import ConfigurationError

log = logging.getLogger(__name__)

REFERENCE_VERSION = 1
#: tiles per slide for the colour / sharpness statistics (evenly spaced over the tile list)
STATS_TILES = 32
#: a pixel counts as tissue when its mean OD over R, G, B exceeds this (about RGB 220 gray)
TISSUE_OD = 0.15
#: tuning scores kept in the reference; above this, evenly spaced order statistics (quantiles)
MAX_REFERENCE_SCORES = 5000
#: colour statistics compared in tuning SDs (each stain's mean OD over tissue pixels)
COLOUR_KEYS = ("od_h", "od_e")
#: floors of the tuning SDs, so a very uniform tuning cohort does not turn noise into a flag:
#: 5 % of the tuning mean for colour, 0.05 log10 units (12 %) for sharpness
COLOUR_SD_FLOOR_REL = 0.05
SHARPNESS_SD_FLOOR_LOG10 = 0.05
RISK_GROUPS = ("good", "uncertain", "poor")
NO_REFERENCE = ("no reference in bundle (calibrated before the domain-shift check existed, or not calibrated); "
                "Fix: calibrate again with this version to record the tuning reference")


# --------------------------------------------------------------------------- tile statistics

def _hed_from_rgb() -> np.ndarray:
    from skimage.color import hed_from_rgb

    return np.asarray(hed_from_rgb, dtype=np.float32)


def tile_stats(tiles: np.ndarray) -> dict[str, float]:
    """Colour and sharpness statistics of a set of tissue tiles.

    Parameters
    ----------
    tiles : (N, H, W, 3) uint8 ndarray
        RGB tiles of one resolution (N >= 1, H, W >= 3).

    Returns
    -------
    stats : dict
        ``od_h``, ``od_e``: mean haematoxylin / eosin optical density (natural-log OD,
        colour-deconvolved) over tissue pixels; ``od_mean``: mean OD over R, G, B of tissue
        pixels; ``tissue_px``: share of tissue pixels; ``sharpness``: mean variance of the
        Laplacian of the gray tiles (gray levels²; `wsi_prognosis.tissue.blur_score`);
        ``sharpness_rel``: the same per tile divided by the tile's gray variance (contrast-free:
        a denser or paler stain leaves it unchanged, blur lowers it), the one the check compares.
        The OD values are NaN when no pixel is tissue.

    Examples
    --------
    Scaling the stain (OD x 1.5) scales the stain statistics by 1.5:

    >>> rng = np.random.default_rng(0)
    >>> od = rng.uniform(0.2, 1.0, (2, 16, 16, 3)).astype(np.float32)
    >>> to_rgb = lambda o: np.clip(256 * np.exp(-o) - 1, 0, 255).round().astype(np.uint8)
    >>> a, b = tile_stats(to_rgb(od)), tile_stats(to_rgb(1.5 * od))
    >>> round(b["od_h"] / a["od_h"], 1), round(b["od_e"] / a["od_e"], 1)
    (1.5, 1.5)
    """
    from wsi_prognosis.tissue import blur_score, laplacian_variance, to_gray

    tiles = np.asarray(tiles)
    if tiles.ndim != 4 or tiles.shape[-1] != 3 or tiles.dtype != np.uint8 or len(tiles) == 0:
        raise ValueError(f"tiles must be (N, H, W, 3) uint8 with N >= 1, got {tiles.shape} {tiles.dtype}")
    od = -np.log((tiles.reshape(-1, 3).astype(np.float32) + 1.0) / 256.0)
    tissue = od.mean(axis=1) > TISSUE_OD
    if tissue.any():
        hed = od[tissue] @ _hed_from_rgb()
        od_h, od_e = float(hed[:, 0].mean()), float(hed[:, 1].mean())
        od_mean = float(od[tissue].mean())
    else:
        od_h = od_e = od_mean = math.nan
    gray = to_gray(tiles)
    lap = laplacian_variance(gray)
    contrast = gray[:, 1:-1, 1:-1].reshape(len(gray), -1).astype(np.float64).var(axis=1)
    return {"od_h": od_h, "od_e": od_e, "od_mean": od_mean, "tissue_px": float(tissue.mean()),
            "sharpness": blur_score(gray), "sharpness_rel": float((lap / np.maximum(contrast, 1.0)).mean())}


def subsample_indices(n: int, k: int = STATS_TILES) -> np.ndarray:
    """At most `k` evenly spaced indices into `n` tiles (deterministic: the same slide, the same tiles)."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def stats_resolution(grids: Mapping[str, Any]) -> str:
    """The coarsest resolution of a slide's grids (largest mpp: 10x), where colour and focus read best."""
    return max(grids, key=lambda res: float(grids[res].mpp))


def slide_tile_stats(path: str, grids: Mapping[str, Any], coords: Mapping[str, np.ndarray], slide_mpp: float,
                     n_tiles: int = STATS_TILES) -> dict[str, Any]:
    """`tile_stats` of a slide's tile subsample, with where it came from; ``{"error": ...}`` if unreadable.

    `grids` / `coords`: the slide's `GridSpec` and (N, 2) level-0 coordinates per resolution. Never
    raises: the statistics are a check, not a reason to fail a slide.
    """
    from wsi_prognosis.slides import TileReader

    try:
        res = stats_resolution(grids)
        idx = subsample_indices(len(coords[res]), n_tiles)
        if len(idx) == 0:
            return {"error": f"no {res} tiles"}
        reader = TileReader(str(path), grids[res], float(slide_mpp))
        try:
            tiles = reader.read(np.asarray(coords[res])[idx])
        finally:
            reader.close()
        stats = tile_stats(tiles)
        return {"resolution": res, "mpp": float(grids[res].mpp), "n_tiles": int(len(idx)),
                **{k: (None if isinstance(v, float) and math.isnan(v) else round(float(v), 6)) for k, v in stats.items()}}
    except Exception as exc:  # noqa: BLE001 - recorded, never fatal
        log.warning("%s: tile statistics for the shift check failed: %s", path, exc)
        return {"error": f"{type(exc).__name__}: {exc}"}


def backfill_tile_stats(out: Path, record: dict[str, Any]) -> dict[str, Any]:
    """A record of an ok slide scored before the check existed gets its `tile_stats` (rewritten in place)."""
    from wsi_prognosis.scoring import records
    from wsi_prognosis.tiling import open_tile_store

    if record.get("status") != "ok" or "tile_stats" in record or not record.get("tile_store"):
        return record
    try:
        with open_tile_store(record["tile_store"]) as store:
            res_names = [r for r in store.resolutions if r in (record.get("n_tiles") or {})] or list(store.resolutions)
            grids = {r: store.grid(r) for r in res_names}
            coords = {r: store.coords(r) for r in res_names}
            mpp = store.mpp
    except Exception as exc:  # noqa: BLE001
        stats: dict[str, Any] = {"error": f"tile store unreadable: {exc}"}
    else:
        stats = slide_tile_stats(record["path"], grids, coords, mpp)
    record = {**record, "tile_stats": stats}
    records.write_record(out, {k: v for k, v in record.items() if k != "record_version"})
    return record


# --------------------------------------------------------------------------- reference

def _finite(values: Iterable[Any]) -> np.ndarray:
    a = np.asarray([float(v) for v in values if v is not None], dtype=np.float64)
    return a[np.isfinite(a)]


def _stat_values(slide_stats: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    source = "sharpness_rel" if key == "sharpness" else key  # compared: the contrast-free sharpness
    values = _finite(s.get(source) for s in slide_stats if not s.get("error"))
    if key == "sharpness":
        values = np.log10(values[values > 0])
    return values


def build_reference(scores: Iterable[float], *, level: str, shares: Mapping[str, float], cohort: str,
                    slide_stats: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The tuning reference recorded in the calibrated bundle (``calibration.reference``).

    `scores`: the scores the thresholds were fitted on (at `level`: patient or slide); `shares`:
    the fitted shares of good / uncertain / poor; `slide_stats`: the `tile_stats` of the tuning
    slides (slides without them are left out of the tile reference, which is None without any).
    """
    s = np.sort(_finite(scores))
    if len(s) == 0:
        raise ValueError("no finite tuning scores for the reference")
    q1, median, q3 = (float(v) for v in np.percentile(s, [25, 50, 75]))
    stored = s if len(s) <= MAX_REFERENCE_SCORES else np.quantile(s, np.linspace(0, 1, MAX_REFERENCE_SCORES))
    tiles: dict[str, Any] | None = None
    usable = [st for st in slide_stats if st and not st.get("error")]
    if usable:
        stats = {}
        for key in (*COLOUR_KEYS, "od_mean", "sharpness"):
            v = _stat_values(usable, key)
            if len(v):
                stats["log10_sharpness" if key == "sharpness" else key] = {
                    "mean": round(float(v.mean()), 6), "sd": round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 6),
                    "n": int(len(v))}
        first = usable[0]
        tiles = {"n_slides": len(usable), "resolution": first.get("resolution"), "mpp": first.get("mpp"),
                 "tiles_per_slide": STATS_TILES, "stats": stats}
    return {
        "version": REFERENCE_VERSION, "cohort": cohort, "level": level, "n": int(len(s)),
        "scores": [round(float(v), 7) for v in stored], "scores_are_quantiles": bool(len(s) > MAX_REFERENCE_SCORES),
        "median": median, "q1": q1, "q3": q3, "iqr": q3 - q1,
        "shares": {g: (None if shares.get(g) is None else float(shares[g])) for g in RISK_GROUPS},
        "tiles": tiles,
    }


def bundle_reference(bundle: Any) -> dict[str, Any] | None:
    """The reference of a loaded bundle (or a bundle.json dict), None for bundles without one."""
    calibration = bundle.get("calibration") if isinstance(bundle, Mapping) else getattr(bundle, "calibration", None)
    reference = (calibration or {}).get("reference")
    return reference if isinstance(reference, Mapping) and reference.get("scores") else None


def cohort_tile_stats(records_dir: Path, cohort: str, patient_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """`tile_stats` of the ok slides of `cohort` (optionally only these patients) in a score out= folder."""
    wanted = None if patient_ids is None else {str(p) for p in patient_ids}
    found = []
    for path in sorted((Path(records_dir) / "slides").glob("*.json")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if rec.get("status") != "ok" or str(rec.get("cohort")) != cohort or not rec.get("tile_stats"):
            continue
        if wanted is not None and str(rec.get("patient_id")) not in wanted:
            continue
        found.append(rec["tile_stats"])
    return found


# --------------------------------------------------------------------------- comparison

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


def shift_report(bundle: Any, slides: Any, patients: Any, slide_records: Mapping[str, Mapping[str, Any]],
                 limits: ShiftLimits = ShiftLimits()) -> dict[str, Any]:
    """The content of shift.json: every cohort of `slides` (scores.csv) against the bundle's reference.

    `patients`: patient_scores.csv (used when the reference is patient-level); `slide_records`:
    slide_id -> record (for `tile_stats`).
    """
    reference = bundle_reference(bundle)
    ok = slides[slides["status"] == "ok"]
    cohorts = sorted({str(c) for c in slides["cohort"]})
    bundle_id = bundle.get("id") if isinstance(bundle, Mapping) else getattr(bundle, "id", None)
    report: dict[str, Any] = {"version": REFERENCE_VERSION, "bundle_id": bundle_id,
                              "limits": asdict(limits)}
    if reference is None:
        report["reference"] = {"available": False, "reason": NO_REFERENCE}
    else:
        report["reference"] = {"available": True, **{k: v for k, v in reference.items() if k != "scores"}}
    level = (reference or {}).get("level", "patient")
    table = patients if level == "patient" and patients is not None else ok
    report["cohorts"] = {}
    for cohort in cohorts:
        stats = [slide_records.get(sid, {}).get("tile_stats") or {} for sid in ok.loc[ok["cohort"].astype(str) == cohort, "slide_id"]]
        rows = table[table["cohort"].astype(str) == cohort]
        if reference is None:
            entry = {"n": int(len(rows)), "level": level, "tiles": _cohort_tile_means(stats), "flagged": False,
                     "reasons": [], "note": "no reference in bundle"}
        else:
            groups = rows["risk_group"].astype(str).tolist() if "risk_group" in rows else None
            entry = cohort_shift(reference, rows["score"].to_numpy(float), stats, limits, groups)
        entry["n_slides"] = int((ok["cohort"].astype(str) == cohort).sum())
        report["cohorts"][cohort] = entry
    report["flagged"] = [c for c, e in report["cohorts"].items() if e["flagged"]]
    return report


CSV_COLUMNS = ("cohort", "n", "n_slides", "level", "median", "score_shift_iqr", "ks", "ks_p", "od_h_shift_sd",
               "od_e_shift_sd", "sharpness_shift_sd", "flagged", "reasons")


def shift_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """shift.csv rows: one per cohort."""
    rows = []
    for cohort, e in report["cohorts"].items():
        tiles = e.get("tiles") or {}
        rows.append({
            "cohort": cohort, "n": e.get("n"), "n_slides": e.get("n_slides"), "level": e.get("level"),
            "median": e.get("median"), "score_shift_iqr": e.get("score_shift_iqr"), "ks": e.get("ks"),
            "ks_p": e.get("ks_p"), "od_h_shift_sd": (tiles.get("od_h") or {}).get("shift_sd"),
            "od_e_shift_sd": (tiles.get("od_e") or {}).get("shift_sd"),
            "sharpness_shift_sd": (tiles.get("log10_sharpness") or {}).get("shift_sd"),
            "flagged": bool(e.get("flagged")), "reasons": "; ".join(e.get("reasons") or []) or e.get("note", ""),
        })
    return rows


def _json_safe(value: Any) -> Any:
    """NaN / inf -> None, numpy scalars -> Python, recursively (shift.json is strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_shift_report(out: Path, report: Mapping[str, Any]) -> tuple[Path, Path]:
    """shift.json and shift.csv in `out`, atomically; a warning per flagged cohort."""
    import csv
    import io

    from wsi_prognosis.atomic import write_text_atomic

    out = Path(out)
    json_path, csv_path = out / "shift.json", out / "shift.csv"
    write_text_atomic(json_path, json.dumps(_json_safe(report), indent=1, allow_nan=False) + "\n")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in shift_rows(report):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    write_text_atomic(csv_path, buffer.getvalue())
    if not report["reference"]["available"]:
        log.warning("domain-shift check: %s", report["reference"]["reason"])
    for cohort in report["flagged"]:
        log.warning("domain shift: cohort %r moved away from the tuning cohort: %s. The thresholds are NOT refitted; "
                    "read its risk groups with care (shift.json).", cohort, "; ".join(report["cohorts"][cohort]["reasons"]))
    return json_path, csv_path


def run_shift_check(bundle: Any, out: Path, slides: Any, patients: Any, limits: ShiftLimits | None = None) -> dict[str, Any]:
    """Read the records of `slides` in `out` (filling in missing tile statistics), build and write the report."""
    from wsi_prognosis.scoring import records

    limits = limits or ShiftLimits()
    try:
        recs: dict[str, dict[str, Any]] = {}
        for sid in slides.loc[slides["status"] == "ok", "slide_id"]:
            rec = records.read_record(out, str(sid))
            if rec is not None:
                recs[str(sid)] = backfill_tile_stats(out, rec)
        report = shift_report(bundle, slides, patients, recs, limits)
    except Exception as exc:  # noqa: BLE001 - the scores are written; a failed check is reported, not fatal
        log.exception("domain-shift check failed")
        report = {"version": REFERENCE_VERSION, "error": f"{type(exc).__name__}: {exc}", "limits": asdict(limits),
                  "reference": {"available": False, "reason": f"the check failed: {exc}"}, "cohorts": {}, "flagged": []}
    write_shift_report(out, report)
    return report


def merged_shift_check(folders: Sequence[str | Path], out: Path) -> dict[str, Any] | None:
    """The check after `merge`: the bundle (as recorded by the shard runs) against the merged tables."""
    import pandas as pd

    from wsi_prognosis.scoring.merge import find_shard_runs

    runs = find_shard_runs([Path(f) for f in folders])
    if not runs:
        return None
    run = runs[0].record
    bundle: dict[str, Any] = {"id": run.get("bundle_id"), "calibration": None}
    path = Path(str(run.get("bundle_dir", ""))) / "bundle.json"
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
        if recorded.get("id") == run.get("bundle_id"):
            bundle = recorded
        else:
            log.warning("%s: not the bundle the shards were scored with; the shift check runs without a reference", path)
    except (OSError, ValueError) as exc:
        log.warning("bundle of the shard runs unreadable (%s); the shift check runs without a reference", exc)
    limits = ShiftLimits.from_mapping(((run.get("config") or {}).get("shift")))
    dtypes = {"slide_id": str, "patient_id": str, "cohort": str}
    slides = pd.read_csv(Path(out) / "scores.csv", dtype=dtypes, float_precision="round_trip")
    patients = pd.read_csv(Path(out) / "patient_scores.csv", dtype=dtypes, float_precision="round_trip")
    return run_shift_check(bundle, Path(out), slides, patients, limits)
