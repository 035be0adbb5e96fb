"""`TilingConfig`: everything the `tile` stage needs, validated once at the boundary."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsi_prognosis.errors import ConfigurationError
from wsi_prognosis.slides.plan import DEFAULT_MAX_UPSAMPLE
from wsi_prognosis.tiling.grid import subdivision
from wsi_prognosis.tissue.params import TissueParams


@dataclass(frozen=True)
class ResolutionSpec:
    """One requested grid: a name ("10x"), its µm/px and tile size in pixels."""

    name: str
    mpp: float
    tile_px: int

    @property
    def tile_um(self) -> float:
        return self.mpp * self.tile_px


DEFAULT_RESOLUTIONS = (ResolutionSpec("10x", 1.0, 224), ResolutionSpec("40x", 0.25, 224))


@dataclass(frozen=True)
class TilingConfig:
    """How slides are tiled. Build with `from_mapping` (config groups) or `from_tile_spec` (a bundle)."""

    resolutions: tuple[ResolutionSpec, ...] = DEFAULT_RESOLUTIONS
    min_tissue_fraction: float = 0.5
    tissue: TissueParams = field(default_factory=TissueParams)
    allow_objective_power: bool = False
    max_upsample: float = DEFAULT_MAX_UPSAMPLE
    annotations_dir: Path | None = None
    qc_thumbnails: bool = True
    blur_tiles: int = 16

    def __post_init__(self) -> None:
        if not self.resolutions:
            raise ConfigurationError("tiling.resolutions: empty. Fix: give at least one, e.g. 10x: {mpp: 1.0, tile_px: 224}.")
        names = [r.name for r in self.resolutions]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"tiling.resolutions: duplicate names {names}.")
        for spec in self.resolutions:
            if not (math.isfinite(spec.mpp) and spec.mpp > 0):
                raise ConfigurationError(f"tiling.resolutions.{spec.name}.mpp={spec.mpp!r}: must be a positive µm/px.")
            if spec.tile_px < 8:
                raise ConfigurationError(f"tiling.resolutions.{spec.name}.tile_px={spec.tile_px!r}: must be an integer >= 8.")
        base = max(self.resolutions, key=lambda r: r.tile_um)
        for spec in self.resolutions:
            try:
                subdivision(base.tile_um, spec.tile_um)
            except ValueError as exc:
                raise ConfigurationError(
                    f"tiling.resolutions.{spec.name}: {exc} (base {base.name}: {base.tile_um:g} µm)."
                ) from None
        if not 0.0 <= self.min_tissue_fraction <= 1.0:
            raise ConfigurationError(f"tiling.min_tissue_fraction={self.min_tissue_fraction!r}: must be in [0, 1].")
        if not (math.isfinite(self.max_upsample) and self.max_upsample >= 1.0):
            raise ConfigurationError(f"slides.max_upsample={self.max_upsample!r}: must be a number >= 1 (1.05 = 5 %).")
        if self.blur_tiles < 0:
            raise ConfigurationError(f"tiling.blur_tiles={self.blur_tiles!r}: must be >= 0.")

    @property
    def base(self) -> ResolutionSpec:
        """The coarsest grid (largest tile in µm); finer grids subdivide it."""
        return max(self.resolutions, key=lambda r: r.tile_um)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; what a tile store records and compares on rerun (no output paths)."""
        return {
            "resolutions": {r.name: {"mpp": r.mpp, "tile_px": r.tile_px} for r in self.resolutions},
            "min_tissue_fraction": self.min_tissue_fraction,
            "tissue": self.tissue.to_dict(),
            "allow_objective_power": self.allow_objective_power,
            "max_upsample": self.max_upsample,
            "blur_tiles": self.blur_tiles,
        }

    def tile_spec(self) -> dict[str, Any]:
        """The bundle's tile specification (the inverse of `from_tile_spec`)."""
        spec = self.to_dict()
        return {k: spec[k] for k in ("resolutions", "min_tissue_fraction", "tissue")}

    @classmethod
    def from_tile_spec(cls, tile_spec: Mapping[str, Any], **overrides: Any) -> TilingConfig:
        """From a bundle's `tile_spec` ({"resolutions": {...}, "min_tissue_fraction", "tissue"})."""
        known = {"resolutions", "min_tissue_fraction", "tissue", "allow_objective_power", "max_upsample", "blur_tiles"}
        unknown = set(tile_spec) - known
        if unknown:
            raise ConfigurationError(f"tile_spec: unknown key(s) {sorted(unknown)}; known: {sorted(known)}.")
        return cls.from_mapping(
            tiling={k: tile_spec[k] for k in ("resolutions", "min_tissue_fraction", "blur_tiles") if k in tile_spec},
            tissue=tile_spec.get("tissue"),
            slides={k: tile_spec[k] for k in ("allow_objective_power", "max_upsample") if k in tile_spec},
            **overrides,
        )

    @classmethod
    def from_mapping(
        cls,
        tiling: Mapping[str, Any] | None = None,
        tissue: Mapping[str, Any] | None = None,
        slides: Mapping[str, Any] | None = None,
        annotations_dir: str | Path | None = None,
    ) -> TilingConfig:
        """From the `tiling`, `tissue` and `slides` config groups (plain mappings)."""
        tiling = dict(tiling or {})
        slides = dict(slides or {})
        flat = {k for k in tiling if k == "tile_px" or k.startswith(("mpp_", "tile_px_"))}
        _only({k: v for k, v in tiling.items() if k not in flat}, "tiling",
              {"resolutions", "min_tissue_fraction", "qc_thumbnails", "blur_tiles", "tile_px", "mpp_<name>"})
        _only(slides, "slides", {"allow_objective_power", "max_upsample"})
        kwargs: dict[str, Any] = {"tissue": TissueParams.from_dict(tissue)}
        if isinstance(tiling.get("resolutions"), Mapping):
            if flat:
                raise ConfigurationError(f"tiling.{sorted(flat)[0]}: give either a resolutions mapping or a list plus "
                                         "tile_px / mpp_<name>, not both.")
            kwargs["resolutions"] = _resolutions(tiling["resolutions"])
        elif "resolutions" in tiling or flat:
            kwargs["resolutions"] = _flat_resolutions(tiling, flat)
        if "min_tissue_fraction" in tiling:
            kwargs["min_tissue_fraction"] = _number(tiling["min_tissue_fraction"], "tiling.min_tissue_fraction")
        if "qc_thumbnails" in tiling:
            kwargs["qc_thumbnails"] = _flag(tiling["qc_thumbnails"], "tiling.qc_thumbnails")
        if "blur_tiles" in tiling:
            kwargs["blur_tiles"] = _integer(tiling["blur_tiles"], "tiling.blur_tiles")
        if "allow_objective_power" in slides:
            kwargs["allow_objective_power"] = _flag(slides["allow_objective_power"], "slides.allow_objective_power")
        if "max_upsample" in slides:
            kwargs["max_upsample"] = _number(slides["max_upsample"], "slides.max_upsample")
        if annotations_dir not in (None, ""):
            folder = Path(str(annotations_dir)).expanduser().resolve()
            if not folder.is_dir():
                raise ConfigurationError(f"annotations={annotations_dir}: not a folder. Fix: a folder of <slide_id>.geojson.")
            kwargs["annotations_dir"] = folder
        return cls(**kwargs)


def _only(mapping: Mapping[str, Any], group: str, known: set[str]) -> None:
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise ConfigurationError(f"{group}.{unknown[0]}: unknown option; known: {sorted(known)}.")


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{key}={value!r}: must be a number.")
    return float(value)


def _integer(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{key}={value!r}: must be an integer.")
    return int(value)


def _flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{key}={value!r}: must be true or false.")
    return value


def _resolutions(value: Any) -> tuple[ResolutionSpec, ...]:
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"tiling.resolutions={value!r}: must map names to {{mpp, tile_px}}, e.g. 10x: {{mpp: 1.0, tile_px: 224}}."
        )
    specs = []
    for name, spec in value.items():
        if spec is None:  # `tiling.resolutions.40x=null` drops a grid
            continue
        if not isinstance(spec, Mapping) or set(spec) != {"mpp", "tile_px"}:
            raise ConfigurationError(f"tiling.resolutions.{name}={spec!r}: needs exactly `mpp` and `tile_px`.")
        specs.append(ResolutionSpec(str(name), _number(spec["mpp"], f"tiling.resolutions.{name}.mpp"),
                                    _integer(spec["tile_px"], f"tiling.resolutions.{name}.tile_px")))
    return tuple(specs)


def _flat_resolutions(tiling: Mapping[str, Any], flat: set[str]) -> tuple[ResolutionSpec, ...]:
    """The command-line friendly form: `resolutions: [10x, 40x]`, `tile_px`, `mpp_10x`, `mpp_40x`
    (optional `tile_px_<name>` per grid). Hydra cannot address keys such as `40x` that start
    with a digit, so the config files use this form; bundles use the mapping form."""
    defaults = {r.name: r for r in DEFAULT_RESOLUTIONS}
    names = tiling.get("resolutions", [r.name for r in DEFAULT_RESOLUTIONS])
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ConfigurationError(f"tiling.resolutions={names!r}: must be a list of grid names, e.g. [10x, 40x].")
    tile_px = _integer(tiling["tile_px"], "tiling.tile_px") if "tile_px" in tiling else None
    specs = []
    for name in names:
        mpp_key, px_key = f"mpp_{name}", f"tile_px_{name}"
        if mpp_key in tiling:
            mpp = _number(tiling[mpp_key], f"tiling.{mpp_key}")
        elif name in defaults:
            mpp = defaults[name].mpp
        else:
            raise ConfigurationError(f"tiling.{mpp_key}: missing; grid {name!r} needs its µm/px.")
        if px_key in tiling:
            px = _integer(tiling[px_key], f"tiling.{px_key}")
        else:
            px = tile_px if tile_px is not None else defaults.get(name, DEFAULT_RESOLUTIONS[0]).tile_px
        specs.append(ResolutionSpec(name, mpp, px))
    used = {"tile_px"} | {f"mpp_{n}" for n in names} | {f"tile_px_{n}" for n in names}
    stray = sorted(flat - used)
    if stray:
        raise ConfigurationError(f"tiling.{stray[0]}: names no grid in tiling.resolutions={list(names)}.")
    return tuple(specs)
