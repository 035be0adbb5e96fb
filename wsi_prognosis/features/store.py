"""The HDF5 feature store `features/<feature set>/<slide_id>.h5`: one encoder's embedding of every tile.

Layout:
  /                attrs: format_version, slide_id, feature_set, encoder (JSON: name, weights_sha256, dim,
                   preprocessing), stain (JSON target of stain normalisation, or ""), tile_fingerprint
                   (the tile store's `content_fingerprint`), tile_store (path), package_version, complete
  /<res>/features  (N, D) float16, in the tile store's order
  /<res>/coords    (N, 2) int64 level-0 x, y (a copy of the tile store's, to check the order)
  /<res>/views     (V, N, D) float16, optional: augmented views of each tile (training slides)
  /<res>           attrs: tile_px, mpp[, views_augment (JSON)]

A store answers for exactly one (encoder, weights, preprocessing, stain target, tile store): anything
else is refused by name (`check`), never mixed in. Written atomically (temporary name, then rename).
"""

from __future__ import annotations

import hashlib
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
from wsi_prognosis.errors import FeatureStoreError, FeatureStoreMismatchError

FORMAT_VERSION = 1


@dataclass(frozen=True)
class FeatureSpec:
    """What features depend on besides the tiles: the encoder's identity and the stain target."""

    encoder: Mapping[str, Any]                  # registry.encoder_identity(...)
    stain: Mapping[str, Any] | None = None      # {"method": "macenko", "he", "max_c"} or None

    @property
    def name(self) -> str:
        """The folder of these features under the features root: the encoder's name (+ stain method)."""
        return str(self.encoder["name"]) + (f"-{self.stain['method']}" if self.stain else "")

    def record(self) -> dict[str, Any]:
        return json.loads(json.dumps({"encoder": dict(self.encoder), "stain": dict(self.stain) if self.stain else None},
                                     default=_plain))

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.record(), sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "FeatureSpec":
        return cls(encoder=dict(record["encoder"]), stain=dict(record["stain"]) if record.get("stain") else None)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


@dataclass
class ResolutionFeatures:
    """One resolution's embeddings of one slide."""

    features: np.ndarray              # (N, D)
    coords: np.ndarray                # (N, 2) int64
    tile_px: int
    mpp: float
    views: np.ndarray | None = None   # (V, N, D)
    views_augment: Mapping[str, Any] | None = None


def feature_dir(root: str | Path, spec: FeatureSpec) -> Path:
    return Path(root) / spec.name


def feature_store_path(root: str | Path, spec: FeatureSpec, slide_id: str) -> Path:
    return feature_dir(root, spec) / f"{slide_id}.h5"


def write_feature_store(path: str | Path, *, slide_id: str, spec: FeatureSpec, tile_fingerprint: str, tile_store: str,
                        grids: Mapping[str, ResolutionFeatures]) -> Path:
    """Write one slide's store atomically (a reader never sees a half-written file)."""
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        a = h5.attrs
        a["format_version"] = FORMAT_VERSION
        a["slide_id"] = slide_id
        a["feature_set"] = spec.name
        record = spec.record()
        a["encoder"] = json.dumps(record["encoder"], sort_keys=True)
        a["stain"] = json.dumps(record["stain"], sort_keys=True) if record["stain"] else ""
        a["tile_fingerprint"] = tile_fingerprint
        a["tile_store"] = str(tile_store)
        a["package_version"] = __version__
        for res, g in grids.items():
            group = h5.create_group(res)
            group.create_dataset("features", data=np.asarray(g.features, np.float16))
            group.create_dataset("coords", data=np.asarray(g.coords, np.int64).reshape(-1, 2))
            if g.views is not None and len(g.views):
                group.create_dataset("views", data=np.asarray(g.views, np.float16))
                group.attrs["views_augment"] = json.dumps(dict(g.views_augment or {}), sort_keys=True, default=_plain)
            group.attrs["tile_px"] = int(g.tile_px)
            group.attrs["mpp"] = float(g.mpp)
        a["complete"] = True
    return path


class FeatureStore:
    """Read access to one feature store; use `open_feature_store`."""

    def __init__(self, path: Path, h5: h5py.File) -> None:
        self.path, self._h5 = path, h5
        a = h5.attrs
        try:
            if not bool(a["complete"]):
                raise KeyError("complete")
            self.format_version = int(a["format_version"])
            self.slide_id = str(a["slide_id"])
            self.spec = FeatureSpec(encoder=json.loads(a["encoder"]), stain=json.loads(a["stain"]) if a["stain"] else None)
            self.tile_fingerprint = str(a["tile_fingerprint"])
            self.tile_store = str(a["tile_store"])
        except (KeyError, ValueError, TypeError) as exc:
            raise FeatureStoreError(f"{path}: incomplete or not a feature store (missing/bad attribute {exc}). "
                                    "Fix: delete it and rerun `wsi-prognosis embed`.") from exc
        if self.format_version > FORMAT_VERSION:
            raise FeatureStoreError(f"{path}: format {self.format_version} is newer than this package reads. "
                                    "Fix: upgrade wsi-prognosis or re-embed.")

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._h5.close()

    @property
    def resolutions(self) -> list[str]:
        return sorted(k for k in self._h5.keys() if isinstance(self._h5[k], h5py.Group))

    def _group(self, res: str) -> h5py.Group:
        if res not in self._h5:
            raise FeatureStoreError(f"{self.path}: no {res!r} features; stored: {self.resolutions}. Fix: rerun "
                                    f"`wsi-prognosis embed` with that resolution in the tile store.")
        return self._h5[res]

    def features(self, res: str) -> np.ndarray:
        """(N, D) float32."""
        return np.asarray(self._group(res)["features"][...], dtype=np.float32)

    def coords(self, res: str) -> np.ndarray:
        return np.asarray(self._group(res)["coords"][...], dtype=np.int64).reshape(-1, 2)

    def views(self, res: str) -> np.ndarray | None:
        """(V, N, D) float32 augmented views, or None."""
        group = self._group(res)
        return np.asarray(group["views"][...], dtype=np.float32) if "views" in group else None

    def n_views(self, res: str) -> int:
        group = self._group(res)
        return int(group["views"].shape[0]) if "views" in group else 0

    def check(self, spec: FeatureSpec, tile_fingerprint: str | None = None) -> None:
        """`FeatureStoreMismatchError` naming what differs from `spec` (and the tile store), with the fix."""
        mine, wanted = self.spec.record(), spec.record()
        fix = ("Fix: rerun `wsi-prognosis embed` with the wanted encoder (remake=true replaces the old store), or "
               "point features= at the matching feature folder.")
        if mine["encoder"].get("name") != wanted["encoder"].get("name"):
            raise FeatureStoreMismatchError(f"{self.path}: made with encoder {mine['encoder'].get('name')!r}, not "
                                            f"{wanted['encoder'].get('name')!r}. {fix}")
        if mine["encoder"].get("weights_sha256") != wanted["encoder"].get("weights_sha256"):
            raise FeatureStoreMismatchError(
                f"{self.path}: made with other {wanted['encoder']['name']} weights (sha256 "
                f"{str(mine['encoder'].get('weights_sha256'))[:12]}…, wanted {str(wanted['encoder'].get('weights_sha256'))[:12]}…). {fix}")
        if mine != wanted:
            what = "stain normalisation" if mine["stain"] != wanted["stain"] else "encoder preprocessing"
            raise FeatureStoreMismatchError(f"{self.path}: made with another {what} ({self.spec.key} != {spec.key}). {fix}")
        if tile_fingerprint is not None and tile_fingerprint != self.tile_fingerprint:
            raise FeatureStoreMismatchError(
                f"{self.path}: made from another version of the tile store (tile fingerprint {self.tile_fingerprint[:12]}… "
                f"!= {tile_fingerprint[:12]}…: the slide was re-tiled). Fix: rerun `wsi-prognosis embed ... remake=true`.")


def open_feature_store(path: str | Path) -> FeatureStore:
    """Open a complete feature store read-only; `FeatureStoreError` naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FeatureStoreError(f"{path}: feature store not found. Fix: run `wsi-prognosis embed tiles=DIR out=DIR` "
                                "first (or give features= the folder it wrote).")
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise FeatureStoreError(f"{path}: not a readable HDF5 file ({exc}). Fix: delete it and rerun `embed`.") from exc
    try:
        return FeatureStore(path, h5)
    except BaseException:
        h5.close()
        raise


__all__ = ["FeatureSpec", "FeatureStore", "ResolutionFeatures", "feature_dir", "feature_store_path",
           "open_feature_store", "write_feature_store"]
