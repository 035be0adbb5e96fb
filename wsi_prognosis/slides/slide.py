"""`Slide`: one opened whole-slide image with a resolved, audited MPP.

A thin wrapper around OpenSlide (which opens every format it knows). It never exposes the
label or macro images, nor metadata beyond dimensions, levels and MPP: those can carry
patient names and must not leak into outputs.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import TracebackType

import numpy as np

from wsi_prognosis.errors import SlideOpenError, SlideReadError
from wsi_prognosis.slides.fingerprint import slide_fingerprint
from wsi_prognosis.slides.mpp import MppResolution, resolve_mpp
from wsi_prognosis.slides.plan import DEFAULT_MAX_UPSAMPLE, ReadPlan, plan_read
from wsi_prognosis.slides.resample import level_window, resample_window, rgba_to_rgb_on_white

THUMBNAIL_BAND_PX = 1024          # level rows read per band when a thumbnail level is large
THUMBNAIL_WHOLE_LEVEL_PX = 16_000_000  # larger levels (no pyramid) are read in bands to bound memory


def open_openslide(path: Path):  # -> openslide.OpenSlide
    """Open `path` with OpenSlide; `SlideOpenError` (naming the file and the reason) otherwise."""
    import openslide

    if not path.exists():
        raise SlideOpenError(f"{path}: slide file not found. Fix: correct the manifest's `path`.")
    if not path.is_file():
        raise SlideOpenError(f"{path}: not a file. Fix: point the manifest's `path` at a slide file.")
    try:
        return openslide.OpenSlide(str(path))
    except openslide.OpenSlideUnsupportedFormatError as exc:
        raise SlideOpenError(
            f"{path}: not a slide format OpenSlide can read ({exc}). Fix: convert it to a pyramidal TIFF or remove it."
        ) from exc
    except (openslide.OpenSlideError, OSError) as exc:
        raise SlideOpenError(f"{path}: cannot be opened ({exc}). Fix: check the file is complete and not corrupt.") from exc


class Slide:
    """An opened slide. Use `Slide.from_path(...)` as a context manager."""

    def __init__(self, path: Path, handle, resolution: MppResolution) -> None:
        self.path = path
        self._handle = handle
        self._resolution = resolution
        self._fingerprint: str | None = None

    @classmethod
    def from_path(
        cls, path: str | Path, mpp: float | None = None, allow_objective_power: bool = False
    ) -> Slide:
        """Open `path` and resolve its MPP (metadata -> `mpp` argument -> objective power if allowed).

        Raises `SlideOpenError`, `MppMissingError` or `ResolutionError` (anisotropic pixels).
        """
        path = Path(path)
        handle = open_openslide(path)
        try:
            resolution = resolve_mpp(
                handle.properties, path, manifest_mpp=mpp, allow_objective_power=allow_objective_power
            )
        except BaseException:
            handle.close()
            raise
        return cls(path, handle, resolution)

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> Slide:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._handle.close()

    # -- geometry and resolution --------------------------------------------------------------
    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) of level 0 in pixels."""
        return tuple(self._handle.dimensions)  # type: ignore[return-value]

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple(tuple(d) for d in self._handle.level_dimensions)  # type: ignore[misc]

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return tuple(float(d) for d in self._handle.level_downsamples)

    @property
    def mpp(self) -> float:
        return self._resolution.mpp

    @property
    def mpp_source(self) -> str:
        return self._resolution.source

    @property
    def mpp_warnings(self) -> tuple[str, ...]:
        return self._resolution.warnings

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            quickhash = self._handle.properties.get("openslide.quickhash-1")
            self._fingerprint = f"quickhash1-{quickhash}" if quickhash else slide_fingerprint(self.path)
        return self._fingerprint

    def plan_read(self, target_mpp: float, max_upsample: float = DEFAULT_MAX_UPSAMPLE) -> ReadPlan:
        """The level and resampling for `target_mpp`; `ResolutionError` when it needs too much upsampling."""
        return plan_read(self.mpp, self.level_downsamples, target_mpp, max_upsample=max_upsample, path=self.path)

    # -- pixels -------------------------------------------------------------------------------
    def read_level_window(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """RGB uint8 (h, w, 3) of level pixels [x, x+w) x [y, y+h); outside the slide is white."""
        return read_openslide_window(self._handle, self.path, level, x, y, w, h)

    def read_region(
        self, x: int, y: int, size_px: int, target_mpp: float, max_upsample: float = DEFAULT_MAX_UPSAMPLE
    ) -> np.ndarray:
        """(size_px, size_px, 3) uint8 covering size_px * target_mpp µm from level-0 (x, y)."""
        plan = self.plan_read(target_mpp, max_upsample)
        return read_tile(self.read_level_window, plan, x, y, size_px)

    def _read_whole_level(self, level: int, width: int, height: int) -> np.ndarray:
        """The top-left (width, height) of a level: direct JPEG decode where it equals OpenSlide."""
        from wsi_prognosis.slides.direct import open_direct_level

        direct = open_direct_level(self.path, self._handle, level, cache_mb=0)
        if direct is None:
            return self.read_level_window(level, 0, 0, width, height)
        try:
            return direct.window(0, 0, width, height)
        except Exception as exc:
            raise SlideReadError(f"{self.path}: JPEG tile cannot be decoded ({exc}).") from exc
        finally:
            direct.close()

    def thumbnail(self, target_mpp: float) -> tuple[np.ndarray, float]:
        """The whole slide at `target_mpp` µm/px (never finer than level 0) and the mpp it has.

        The image is ceil(extent / target_mpp) pixels on each side, so its mpp is exact; the
        sliver beyond the slide's edge is white.
        """
        from PIL import Image

        target_mpp = max(target_mpp, self.mpp)
        plan = self.plan_read(target_mpp)
        width0, height0 = self.dimensions
        out_w = max(1, math.ceil(width0 * self.mpp / target_mpp - 1e-9))
        out_h = max(1, math.ceil(height0 * self.mpp / target_mpp - 1e-9))
        level_w, level_h = self.level_dimensions[plan.level]
        scale = plan.scale
        reduce = max(1, int(scale)) if level_w * level_h > THUMBNAIL_WHOLE_LEVEL_PX else 1
        need_w = min(level_w, math.ceil(out_w * scale))
        need_h = min(level_h, math.ceil(out_h * scale))
        if reduce == 1:
            level_image = self._read_whole_level(plan.level, need_w, need_h)
        else:  # a huge level (no pyramid): read bands and box-reduce them first to bound memory
            band = THUMBNAIL_BAND_PX // reduce * reduce or reduce
            parts = []
            for y in range(0, need_h, band):
                rows = self.read_level_window(plan.level, 0, y, need_w, min(band, need_h - y))
                parts.append(np.asarray(Image.fromarray(rows).reduce(reduce)))
            level_image = np.concatenate(parts, axis=0)
            scale /= reduce
        src_w, src_h = out_w * scale, out_h * scale
        pad_w = max(level_image.shape[1], math.ceil(src_w))
        pad_h = max(level_image.shape[0], math.ceil(src_h))
        if (pad_h, pad_w) != level_image.shape[:2]:
            padded = np.full((pad_h, pad_w, 3), 255, np.uint8)
            padded[: level_image.shape[0], : level_image.shape[1]] = level_image
            level_image = padded
        if abs(scale - 1.0) < 1e-9 and level_image.shape[:2] == (out_h, out_w):
            return level_image, target_mpp
        image = Image.fromarray(level_image).resize(
            (out_w, out_h), Image.Resampling.BILINEAR, box=(0.0, 0.0, src_w, src_h)
        )
        return np.asarray(image), target_mpp


def read_tile(read_window, plan: ReadPlan, x: int, y: int, size_px: int) -> np.ndarray:
    """Read one square tile through `read_window(level, x, y, w, h)` and resample it per `plan`."""
    x_level, y_level = x / plan.downsample, y / plan.downsample
    extent = plan.read_px(size_px)
    wx, wy, ww, wh = level_window(x_level, y_level, extent)
    window = read_window(plan.level, wx, wy, ww, wh)
    box = (x_level - wx, y_level - wy, x_level - wx + extent, y_level - wy + extent)
    return resample_window(window, box, size_px)


def read_openslide_window(handle, path: Path, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:  # noqa: ANN001
    """RGB uint8 (h, w, 3) of `level` pixels [x, x+w) x [y, y+h) through OpenSlide, transparency on white.

    The one place that calls `read_region`, so every reader reports a damaged file the same way.
    """
    import openslide

    downsample = handle.level_downsamples[level]
    try:
        region = handle.read_region((round(x * downsample), round(y * downsample)), level, (w, h))
    except openslide.OpenSlideError as exc:
        raise SlideReadError(
            f"{path}: pixels cannot be read ({exc}). Fix: the file is damaged; re-export or rescan it."
        ) from exc
    return rgba_to_rgb_on_white(np.asarray(region))
