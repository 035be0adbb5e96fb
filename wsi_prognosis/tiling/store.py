"""The HDF5 tile store `tiles/<slide_id>.h5` — the only module that touches h5py.

Layout (DESIGN.md):
  /                attrs: format_version, slide_id, source_path, fingerprint, dimensions (w, h),
                   mpp, mpp_source, tissue_params (JSON), tiling (JSON), qc (JSON),
                   refused (JSON: resolution -> reason), annotation, package_version, complete
  /<res>/coords           (N, 2) int64  level-0 x, y top-left
  /<res>/tissue_fraction  (N,) float32
  /<res>/parent           (N,) int64    finer resolutions only: index into the base grid
  /<res>               attrs: mpp, tile_px, tile_um, level, downsample[, parent_resolution]
  /mask                (H, W) uint8 0/1 tissue mask, attrs: mpp
Writes are deterministic (no timestamps), so the same input gives byte-identical files, and
atomic (temporary name in the same folder, renamed at the end).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from wsi_prognosis import __version__
from wsi_prognosis.atomic import atomic_path
from wsi_prognosis.errors import FingerprintMismatchError, TileStoreError
from wsi_prognosis.tiling.grid import GridResult, GridSpec

FORMAT_VERSION = 1


def tile_store_path(tiles_dir: str | Path, slide_id: str) -> Path:
    return Path(tiles_dir) / f"{slide_id}.h5"


@dataclass(frozen=True)
class SlideRecord:
    """Slide-level attributes written to a store (no other slide metadata ever is)."""

    slide_id: str
    source_path: str
    fingerprint: str
    dimensions: tuple[int, int]
    mpp: float
    mpp_source: str
    tissue_params: Mapping[str, Any]
    tiling: Mapping[str, Any]
    qc: Mapping[str, Any]
    refused: Mapping[str, str]
    annotation: str = ""


def _dataset(group: h5py.Group, name: str, data: np.ndarray, compress: bool = False) -> None:
    options: dict[str, Any] = {"track_times": False}
    if compress and data.size > 0:
        options.update(compression="gzip", compression_opts=4, shuffle=True)
    group.create_dataset(name, data=data, **options)


def _group(parent: h5py.Group | h5py.File, name: str) -> h5py.Group:
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    gid = h5py.h5g.create(parent.id, name.encode(), gcpl=gcpl)
    return h5py.Group(gid)


class TileStoreWriter:
    """Write one slide's store atomically: `write(final_path, record, grids, specs, mask, mask_mpp)`."""

    @staticmethod
    def write(
        final_path: str | Path,
        record: SlideRecord,
        specs: Mapping[str, GridSpec],
        grids: Mapping[str, GridResult],
        mask: np.ndarray,
        mask_mpp: float,
        base_resolution: str | None,
    ) -> Path:
        final_path = Path(final_path)
        with atomic_path(final_path) as tmp:
            with h5py.File(tmp, "w", libver=("earliest", "v110"), track_order=False) as h5:
                attrs = h5.attrs
                attrs["format_version"] = FORMAT_VERSION
                for key in ("slide_id", "source_path", "fingerprint", "mpp_source", "annotation"):
                    attrs[key] = str(getattr(record, key))
                attrs["package_version"] = __version__
                attrs["dimensions"] = np.asarray(record.dimensions, dtype=np.int64)
                attrs["mpp"] = float(record.mpp)
                attrs["tissue_params"] = json.dumps(record.tissue_params, sort_keys=True)
                attrs["tiling"] = json.dumps(record.tiling, sort_keys=True)
                attrs["qc"] = json.dumps(record.qc, sort_keys=True)
                attrs["refused"] = json.dumps(record.refused, sort_keys=True)
                for name, spec in specs.items():
                    result = grids[name]
                    group = _group(h5, name)
                    _dataset(group, "coords", np.asarray(result.coords, dtype=np.int64).reshape(-1, 2))
                    _dataset(group, "tissue_fraction", np.asarray(result.tissue_fraction, dtype=np.float32))
                    if result.parent is not None:
                        _dataset(group, "parent", np.asarray(result.parent, dtype=np.int64))
                        group.attrs["parent_resolution"] = str(base_resolution)
                    group.attrs["mpp"] = float(spec.mpp)
                    group.attrs["tile_px"] = int(spec.tile_px)
                    group.attrs["tile_um"] = float(spec.tile_um)
                    group.attrs["level"] = int(spec.level)
                    group.attrs["downsample"] = float(spec.downsample)
                _dataset(h5, "mask", np.asarray(mask, dtype=np.uint8), compress=True)
                h5["mask"].attrs["mpp"] = float(mask_mpp)
                attrs["complete"] = True
        return final_path


class TileStore:
    """Read access to one tiles/<slide_id>.h5 (see module docstring). Use `open_tile_store`."""

    def __init__(self, path: Path, h5: h5py.File) -> None:
        self.path = path
        self._h5 = h5
        attrs = h5.attrs
        try:
            if not bool(attrs["complete"]):
                raise KeyError("complete")
            self.format_version = int(attrs["format_version"])
            self.slide_id = str(attrs["slide_id"])
            self.source_path = str(attrs["source_path"])
            self.fingerprint = str(attrs["fingerprint"])
            self.mpp = float(attrs["mpp"])
            self.mpp_source = str(attrs["mpp_source"])
            self.dimensions = tuple(int(v) for v in attrs["dimensions"])
            self.tissue_params = json.loads(attrs["tissue_params"])
            self.tiling = json.loads(attrs["tiling"])
            self.qc = json.loads(attrs["qc"])
            self.refused: dict[str, str] = json.loads(attrs["refused"])
            self.annotation = str(attrs["annotation"])
            self.package_version = str(attrs["package_version"])
        except (KeyError, ValueError, TypeError) as exc:
            raise TileStoreError(
                f"{path}: incomplete or not a tile store (missing/bad attribute {exc}). Fix: delete it and rerun `tile`."
            ) from exc
        if self.format_version > FORMAT_VERSION:
            raise TileStoreError(
                f"{path}: format version {self.format_version} is newer than this package reads ({FORMAT_VERSION}). "
                "Fix: upgrade wsi-prognosis or re-tile."
            )

    def __enter__(self) -> TileStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._h5.close()

    @property
    def resolutions(self) -> list[str]:
        """Stored resolutions, coarsest first (refused ones are absent; see `refused`)."""
        names = [name for name in self._h5.keys() if isinstance(self._h5[name], h5py.Group)]
        return sorted(names, key=lambda n: -float(self._h5[n].attrs["tile_um"]))

    def _group(self, res: str) -> h5py.Group:
        if res not in self._h5 or not isinstance(self._h5[res], h5py.Group):
            reason = f" ({self.refused[res]})" if res in self.refused else ""
            raise TileStoreError(
                f"{self.path}: no {res!r} grid{reason}; stored: {self.resolutions}. Fix: re-tile with that resolution."
            )
        return self._h5[res]

    def grid(self, res: str) -> GridSpec:
        a = self._group(res).attrs
        return GridSpec(name=res, mpp=float(a["mpp"]), tile_px=int(a["tile_px"]),
                        level=int(a["level"]), downsample=float(a["downsample"]))

    def coords(self, res: str) -> np.ndarray:
        return np.asarray(self._group(res)["coords"][...], dtype=np.int64).reshape(-1, 2)

    def tissue_fraction(self, res: str) -> np.ndarray:
        return np.asarray(self._group(res)["tissue_fraction"][...], dtype=np.float32)

    def parent(self, res: str) -> np.ndarray:
        group = self._group(res)
        if "parent" not in group:
            raise TileStoreError(f"{self.path}: {res!r} is the base grid and has no parent index.")
        return np.asarray(group["parent"][...], dtype=np.int64)

    def parent_resolution(self, res: str) -> str | None:
        value = self._group(res).attrs.get("parent_resolution")
        return None if value is None else str(value)

    def n_tiles(self, res: str) -> int:
        return int(self._group(res)["coords"].shape[0])

    def content_fingerprint(self) -> str:
        """What features computed from this store depend on: the slide's fingerprint and every grid (its
        spec and tile coordinates). Re-tiling with other settings changes it; rewriting the same tiles does
        not. Cheap: the coordinates are small."""
        import hashlib

        digest = hashlib.sha256(self.fingerprint.encode())
        for res in sorted(self.resolutions):
            grid = self.grid(res)
            digest.update(f"{res}:{grid.mpp:.6g}:{grid.tile_px}".encode())
            digest.update(np.ascontiguousarray(self.coords(res)).tobytes())
        return digest.hexdigest()[:32]

    def tissue_mask(self) -> tuple[np.ndarray, float]:
        dataset = self._h5["mask"]
        return np.asarray(dataset[...]).astype(bool), float(dataset.attrs["mpp"])

    def verify_slide(self, slide_path: str | Path) -> None:
        """`FingerprintMismatchError` if the slide at `slide_path` is not the one tiled here."""
        from wsi_prognosis.slides.fingerprint import slide_fingerprint

        current = slide_fingerprint(slide_path)
        if current != self.fingerprint:
            raise FingerprintMismatchError(
                f"{self.path}: the slide {slide_path} changed since it was tiled (fingerprint {current} != "
                f"{self.fingerprint}). Fix: rerun `tile` for it."
            )


def open_tile_store(path: str | Path) -> TileStore:
    """Open a complete tile store read-only; `TileStoreError` naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise TileStoreError(f"{path}: tile store not found. Fix: run `wsi-prognosis tile` first (or pass tiles=DIR).")
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise TileStoreError(f"{path}: not a readable HDF5 file ({exc}). Fix: delete it and rerun `tile`.") from exc
    try:
        return TileStore(path, h5)
    except BaseException:
        h5.close()
        raise
