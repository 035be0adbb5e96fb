"""The model bundle: `bundle.json` plus one weights file per member, verified on every load.

Layout::

    bundle/
      bundle.json            members, tile spec, aggregation, thresholds, configs, versions, id
      members/<name>.pt      a backbone, head, or fine-tuned encoder + head state_dict (torch.save), sha256 in bundle.json

`load_bundle` re-hashes every weights file and refuses a missing or changed one by name; weights
are read with `torch.load(weights_only=True)`, so a bundle can never run code. The bundle id is
derived from the content (members with their hashes, tile spec, aggregation, thresholds,
calibration, configs), so any change makes a new id; a calibrated bundle is never rewritten:
`derive_bundle` writes a new one next to it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from wsi_prognosis.atomic import atomic_path, write_text_atomic
from wsi_prognosis.errors import BundleError
from wsi_prognosis.models.backbone import Preprocessing, build_backbone, tiles_to_tensor
from wsi_prognosis.models.pooling import pool_tile_logits
from wsi_prognosis.provenance import package_versions

if TYPE_CHECKING:
    from wsi_prognosis.models.stain import StainFit

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "wsi-prognosis-bundle/2"      # /2: members may be feature heads (encoder, head)
# /3: a member may carry its own fine-tuned encoder (encoder.finetuned); written only by bundles that have one,
# so a reader that knows no fine-tuning refuses them by format instead of misreading the weights
FINETUNED_FORMAT = "wsi-prognosis-bundle/3"
READABLE_FORMATS = ("wsi-prognosis-bundle/1", BUNDLE_FORMAT, FINETUNED_FORMAT)
BUNDLE_FILE = "bundle.json"
_ID_EXCLUDED = ("id", "created_at", "versions")


@dataclass(frozen=True)
class Member:
    """One trained network of the ensemble, as recorded in bundle.json."""

    name: str
    resolution: str                   # "10x" | "40x"
    arch: str                         # timm architecture name (pixels), or "head-<pooling>" (features)
    weights: str                      # file relative to the bundle folder
    sha256: str
    preprocessing: dict[str, Any]     # {"mean", "std", "tile_px", "mpp"[, "input_px", "stain"]}
    pooling: dict[str, Any]           # {"method": ..., params}
    tuning_metrics: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    encoder: dict[str, Any] | None = None   # frozen encoder: {name, weights_sha256, dim, preprocessing, feature_set, stain};
                                            # fine-tuned: {name, weights_sha256 (base), dim, preprocessing,
                                            # finetuned: "all" | "last:N", finetuned_sha256 (its own encoder)}
    head: dict[str, Any] | None = None      # feature head: models.heads.HeadConfig fields + dim

    @property
    def on_features(self) -> bool:
        """A head on an encoder's features (a frozen encoder's or its own fine-tuned one's; else a CNN on pixels)."""
        return self.head is not None

    @property
    def finetuned(self) -> str | None:
        """"all" | "last:N" when the member carries its own fine-tuned encoder (weights file: encoder + head)."""
        value = (self.encoder or {}).get("finetuned")
        return None if value in (None, "none") else str(value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "resolution": self.resolution, "arch": self.arch, "weights": self.weights,
            "sha256": self.sha256, "preprocessing": self.preprocessing, "pooling": self.pooling,
            "tuning_metrics": self.tuning_metrics, "seed": self.seed, "encoder": self.encoder, "head": self.head,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Member":
        return cls(name=str(d["name"]), resolution=str(d["resolution"]), arch=str(d["arch"]),
                   weights=str(d["weights"]), sha256=str(d["sha256"]), preprocessing=dict(d["preprocessing"]),
                   pooling=dict(d["pooling"]), tuning_metrics=dict(d.get("tuning_metrics") or {}),
                   seed=d.get("seed"), encoder=d.get("encoder"), head=d.get("head"))


@dataclass(frozen=True)
class Bundle:
    """A verified, loaded bundle.json; `load_model` builds a member's network from its weights."""

    dir: Path
    id: str
    members: list[Member]
    tile_spec: dict[str, Any]
    aggregation: dict[str, Any]
    thresholds: dict[str, float] | None
    calibration: dict[str, Any] | None
    training_configs: dict[str, Any]
    versions: dict[str, str]
    parent_id: str | None = None
    created_at: str = ""

    @property
    def resolutions(self) -> list[str]:
        return sorted({m.resolution for m in self.members})

    def member(self, name: str) -> Member:
        for m in self.members:
            if m.name == name:
                return m
        raise BundleError(f"{self.dir / BUNDLE_FILE}: no member named {name!r}; members: {[m.name for m in self.members]}.")

    def weights_path(self, member: Member) -> Path:
        return self.dir / member.weights

    def load_state_dict(self, member: Member) -> dict[str, torch.Tensor]:
        """Read a member's weights, re-checking the hash on the bytes actually loaded."""
        data = _read_verified(self.weights_path(member), member.sha256)
        try:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise BundleError(
                f"{self.weights_path(member)}: not a plain tensor state_dict ({exc}). Fix: rebuild the bundle with `select`."
            ) from exc

    def load_model(self, member: Member, device: str | torch.device = "cpu") -> nn.Module:
        """The member's network with its weights, in eval mode on `device`: its feature head, a fine-tuned
        member's `FinetuneNetwork` (its own encoder and head), or its CNN backbone (channels_last)."""
        if member.finetuned:
            return _finetuned_network(self.weights_path(member), member, self.load_state_dict(member)).to(device).eval()
        if member.head is not None:
            from wsi_prognosis.models.heads import build_head

            head = build_head(int(member.head["dim"]), member.head)
            try:
                head.load_state_dict(self.load_state_dict(member))
            except RuntimeError as exc:
                raise BundleError(f"{self.weights_path(member)}: weights do not fit the {member.arch} head ({exc}).") from exc
            return head.to(device).eval()
        model = build_backbone(member.arch)
        try:
            model.load_state_dict(self.load_state_dict(member))
        except RuntimeError as exc:
            raise BundleError(f"{self.weights_path(member)}: weights do not fit {member.arch} ({exc}).") from exc
        return model.to(device=device, memory_format=torch.channels_last).eval()

    def to_dict(self) -> dict[str, Any]:
        return _bundle_record(
            members=self.members, tile_spec=self.tile_spec, aggregation=self.aggregation, thresholds=self.thresholds,
            calibration=self.calibration, training_configs=self.training_configs, parent_id=self.parent_id,
            versions=self.versions, created_at=self.created_at,
        )


def _finetuned_network(path: Path, member: Member, state: dict[str, torch.Tensor]) -> nn.Module:
    """A fine-tuned member's encoder (the registry's architecture, the member's own weights: no base weights file
    needed) and head, checked against the sha256 of its encoder recorded at training."""
    from wsi_prognosis.encoders import get_encoder
    from wsi_prognosis.models.finetune_lit import encoder_state, network_for, state_sha256
    from wsi_prognosis.models.heads import HeadConfig

    encoder = member.encoder or {}
    spec = get_encoder(str(encoder["name"]))
    head = HeadConfig(**{k: v for k, v in (member.head or {}).items() if k in HeadConfig.__dataclass_fields__})
    network = network_for(spec, spec.build(), tile_px=int(member.preprocessing["tile_px"]), head=head)
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        raise BundleError(f"{path}: weights do not fit the fine-tuned {spec.name} encoder and {member.arch} head of "
                          f"member {member.name} ({str(exc)[:300]}). Fix: rebuild the bundle with `select` from the "
                          "member's run folder.") from exc
    own = state_sha256(encoder_state(state))
    if encoder.get("finetuned_sha256") and own != encoder["finetuned_sha256"]:
        raise BundleError(f"{path}: the encoder weights of member {member.name} hash to {own[:12]}…, bundle.json "
                          f"records {str(encoder['finetuned_sha256'])[:12]}…. Fix: rebuild the bundle with `select`.")
    return network


def _read_verified(path: Path, sha256: str) -> bytes:
    if not path.is_file():
        raise BundleError(f"{path}: weights file missing from the bundle. Fix: copy the whole bundle folder or rebuild it with `select`.")
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise BundleError(
            f"{path}: sha256 {actual[:12]}… does not match bundle.json ({sha256[:12]}…): the weights file was changed "
            "or corrupted. Fix: restore the original bundle; never edit a bundle by hand."
        )
    return data


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _bundle_record(*, members: Sequence[Member], tile_spec: dict[str, Any], aggregation: dict[str, Any],
                   thresholds: dict[str, float] | None, calibration: dict[str, Any] | None,
                   training_configs: dict[str, Any], parent_id: str | None, versions: dict[str, str] | None = None,
                   created_at: str | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "format": FINETUNED_FORMAT if any(m.finetuned for m in members) else BUNDLE_FORMAT,
        "members": [m.to_dict() for m in members],
        "tile_spec": tile_spec,
        "aggregation": aggregation,
        "thresholds": thresholds,
        "calibration": calibration,
        "training_configs": training_configs,
        "parent_id": parent_id,
    }
    # round-trip through JSON so the id is computed on exactly what is written
    record = json.loads(_canonical(record))
    record["id"] = bundle_id(record)
    record["created_at"] = created_at or time.strftime("%Y-%m-%dT%H:%M:%S%z")
    record["versions"] = versions or package_versions()
    return record


def bundle_id(record: dict[str, Any]) -> str:
    """Content-derived id: sha256 over the canonical JSON of everything but id, time and versions."""
    content = {k: v for k, v in record.items() if k not in _ID_EXCLUDED}
    return hashlib.sha256(_canonical(content).encode()).hexdigest()[:16]


def _check_writable(out_dir: Path, new_id: str) -> None:
    existing = out_dir / BUNDLE_FILE
    if not existing.is_file():
        return
    try:
        old = json.loads(existing.read_text())
    except (OSError, ValueError):
        return
    if old.get("thresholds") is not None and old.get("id") != new_id:
        raise BundleError(
            f"{existing}: a calibrated bundle (id {old.get('id')}) is already there and bundles are immutable once "
            "calibrated. Fix: choose another out= folder."
        )


def write_bundle(
    out_dir: str | Path,
    members: Sequence[tuple[Member, Path]],
    *,
    tile_spec: dict[str, Any],
    aggregation: dict[str, Any],
    training_configs: dict[str, Any],
    thresholds: dict[str, float] | None = None,
    calibration: dict[str, Any] | None = None,
    parent_id: str | None = None,
) -> Bundle:
    """Copy each member's weights file into `out_dir/members/`, hash it, write bundle.json last.

    `members` pairs a `Member` (its `weights`/`sha256` are replaced) with the source weights file.
    bundle.json is written atomically after every weights file, so a half-written bundle has none.
    """
    out_dir = Path(out_dir)
    names = [m.name for m, _ in members]
    if len(set(names)) != len(names):
        raise BundleError(f"{out_dir}: duplicate member names {names}.")
    if not members:
        raise BundleError(f"{out_dir}: a bundle needs at least one member.")
    written: list[Member] = []
    for member, source in members:
        source = Path(source)
        if not source.is_file():
            raise BundleError(f"{source}: weights file of member {member.name} not found.")
        rel = f"members/{member.name}.pt"
        target = out_dir / rel
        if source.resolve() != target.resolve():
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        written.append(replace(member, weights=rel, sha256=digest))
    record = _bundle_record(members=written, tile_spec=tile_spec, aggregation=aggregation, thresholds=thresholds,
                            calibration=calibration, training_configs=training_configs, parent_id=parent_id)
    _check_writable(out_dir, record["id"])
    keep = {f"{m.name}.pt" for m in written}
    for stale in (out_dir / "members").glob("*.pt"):
        if stale.name not in keep:
            stale.unlink()
    write_text_atomic(out_dir / BUNDLE_FILE, json.dumps(record, indent=2) + "\n")
    log.info("bundle %s written to %s (%d members)", record["id"], out_dir, len(written))
    return load_bundle(out_dir)


def load_bundle(bundle_dir: str | Path) -> Bundle:
    """Read bundle.json and verify it: format, content id and every weights file's sha256.

    Raises `BundleError` naming the file for a missing bundle.json or weights file, a hash
    mismatch (tampered weights), or a bundle.json edited by hand (id no longer matches).
    """
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / BUNDLE_FILE
    if not path.is_file():
        raise BundleError(f"{path}: not found. Fix: pass bundle=DIR of a folder written by `wsi-prognosis select`.")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: unreadable ({exc}). Fix: restore the bundle or rebuild it with `select`.") from exc
    if record.get("format") not in READABLE_FORMATS:
        raise BundleError(f"{path}: format {record.get('format')!r} is not {BUNDLE_FORMAT!r}. Fix: rebuild with this version's `select`.")
    try:
        members = [Member.from_dict(m) for m in record["members"]]
    except (KeyError, TypeError) as exc:
        raise BundleError(f"{path}: malformed member entry ({exc}).") from exc
    expected = bundle_id(record)
    if record.get("id") != expected:
        raise BundleError(
            f"{path}: content does not match its id {record.get('id')} (bundle.json was edited). "
            "Fix: restore the original; make changes with `select`/`calibrate`, which write a new bundle."
        )
    for member in members:
        _read_verified(bundle_dir / member.weights, member.sha256)
    return Bundle(
        dir=bundle_dir, id=record["id"], members=members, tile_spec=record["tile_spec"],
        aggregation=record["aggregation"], thresholds=record.get("thresholds"), calibration=record.get("calibration"),
        training_configs=record.get("training_configs") or {}, versions=record.get("versions") or {},
        parent_id=record.get("parent_id"), created_at=record.get("created_at", ""),
    )


def derive_bundle(bundle: Bundle, out_dir: str | Path, *, thresholds: dict[str, float] | None,
                  calibration: dict[str, Any] | None) -> Bundle:
    """A new bundle in `out_dir`: same members and weights, new thresholds/calibration, new id.

    The original bundle is never modified; `out_dir` must be another folder.
    """
    out_dir = Path(out_dir)
    if out_dir.resolve() == bundle.dir.resolve():
        raise BundleError(
            f"{out_dir}: is the input bundle's own folder; bundles are immutable. Fix: write the derived bundle to another out= folder."
        )
    if thresholds is not None:
        thresholds = {k: float(v) for k, v in thresholds.items()}
        if {"low", "high"} - set(thresholds):
            raise BundleError(f"{out_dir}: thresholds need keys 'low' and 'high'; got {sorted(thresholds)}.")
        if thresholds["low"] > thresholds["high"]:
            raise BundleError(f"{out_dir}: threshold low={thresholds['low']} is above high={thresholds['high']}.")
    for member in bundle.members:  # verify before copying: never propagate a tampered file
        _read_verified(bundle.weights_path(member), member.sha256)
    return write_bundle(
        out_dir, [(m, bundle.weights_path(m)) for m in bundle.members], tile_spec=bundle.tile_spec,
        aggregation=bundle.aggregation, training_configs=bundle.training_configs, thresholds=thresholds,
        calibration=calibration, parent_id=bundle.id,
    )


@torch.no_grad()
def member_tile_logits(model: nn.Module, member: Member, tiles_uint8: np.ndarray, *, batch_size: int = 256,
                       stain_source: "StainFit | None" = None) -> np.ndarray:
    """Tile logits (N,) of `tiles_uint8` (N, H, W, 3) uint8, prepared with the member's preprocessing.

    A member trained with stain normalisation normalises the tiles onto its recorded target from
    `stain_source` (the slide's fit; None: fitted here on these tiles, which must be the slide's)."""
    prep = Preprocessing.from_dict(member.preprocessing)
    matrix = None
    if member.preprocessing.get("stain"):
        from wsi_prognosis.models.stain import StainFit, fit_slide_sample, od_matrix

        if stain_source is None:
            stain_source = fit_slide_sample(tiles_uint8)
        matrix = torch.from_numpy(od_matrix(stain_source, StainFit.from_dict(member.preprocessing["stain"])))
    if tiles_uint8.ndim != 4 or tiles_uint8.shape[-1] != 3:
        raise ValueError(f"tiles must be (N, H, W, 3) uint8, got {tiles_uint8.shape}")
    if tiles_uint8.shape[1] != prep.tile_px or tiles_uint8.shape[2] != prep.tile_px:
        raise BundleError(
            f"member {member.name}: tiles are {tiles_uint8.shape[1]}x{tiles_uint8.shape[2]} px but the member was "
            f"trained on {prep.tile_px} px at {prep.mpp} µm/px. Fix: tile with the bundle's tile_spec."
        )
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(tiles_uint8), batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(tiles_uint8[start:start + batch_size])).to(device)
        if matrix is not None:
            from wsi_prognosis.models.stain import apply_od_matrix

            chunk = apply_od_matrix(chunk, matrix)
        out.append(model(tiles_to_tensor(chunk, prep)).float().reshape(-1).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def member_slide_score(model: nn.Module, member: Member, tiles_uint8: np.ndarray) -> float:
    """One member's slide score in [0, 1] (higher = poorer) from all of the slide's tiles."""
    if len(tiles_uint8) == 0:
        raise BundleError(f"member {member.name}: no tiles to score (empty bag).")
    logits = torch.from_numpy(member_tile_logits(model, member, tiles_uint8))
    return float(pool_tile_logits(logits, **member.pooling))
