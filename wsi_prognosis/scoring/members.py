"""A bundle's members made ready to score: CNNs on pixels, frozen encoders, and the heads on their features.

A fine-tuned member (model.finetune) brings its own encoder: it gets a `TileEncoder` of its own, keyed by
its own weights, shared with no other member and never fed from a feature store.

Members trained on the same features (same encoder, weights, preprocessing and stain target) share one
encoder: a tile is embedded once and every head of that feature set pools the same embeddings. An
encoder is loaded from the registry and must be the one the members were trained with (its weights'
sha256 and preprocessing, recorded in the bundle): anything else is refused by name, never scored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from wsi_prognosis.errors import BundleError
from wsi_prognosis.features.store import FeatureSpec
from wsi_prognosis.scoring.engine import EngineConfig, EnsembleRunner, LoadedMember, Preprocessing, TileEncoder

IDENTITY_KEYS = ("name", "weights_sha256", "dim", "preprocessing")


def member_feature_spec(member: Any) -> FeatureSpec:
    """The feature set a head member was trained on (what a feature store must match). A fine-tuned member's
    features are its own: their identity is its own encoder's sha256 and its name, so its key is shared with
    no other member and no feature store is ever made for it."""
    encoder = member.encoder or {}
    if getattr(member, "finetuned", None):
        identity = {**{k: encoder.get(k) for k in IDENTITY_KEYS}, "weights_sha256": encoder.get("finetuned_sha256"),
                    "finetuned": member.finetuned, "member": member.name}
        return FeatureSpec(encoder=identity, stain=member.preprocessing.get("stain"))
    return FeatureSpec(encoder={k: encoder.get(k) for k in IDENTITY_KEYS}, stain=encoder.get("stain"))


@dataclass
class MemberOutput:
    score: float              # slide score in [0, 1]
    tile_logits: np.ndarray   # (N,)


@dataclass
class LoadedEnsemble:
    pixel: list[LoadedMember] = field(default_factory=list)
    encoders: list[TileEncoder] = field(default_factory=list)
    heads: dict[str, nn.Module] = field(default_factory=dict)           # member name -> head
    feature_specs: dict[str, FeatureSpec] = field(default_factory=dict)  # member name -> its feature set
    names_by_res: dict[str, list[str]] = field(default_factory=dict)     # every member, bundle order
    pooling: dict[str, dict[str, Any]] = field(default_factory=dict)

    def runner(self, config: EngineConfig) -> EnsembleRunner:
        return EnsembleRunner(self.pixel, config, self.encoders)

    @torch.inference_mode()
    def score(self, resolution: str, outputs: Mapping[str, np.ndarray]) -> dict[str, MemberOutput]:
        """Each member of `resolution` from the slide's outputs (pixel members' logits, encoders' features)."""
        from wsi_prognosis.models import pool_tile_logits

        scored: dict[str, MemberOutput] = {}
        for name in self.names_by_res.get(resolution, []):
            if name in self.heads:
                features = torch.from_numpy(np.asarray(outputs[self.feature_specs[name].key], np.float32))
                slide, tiles, _ = self.heads[name](features)
                scored[name] = MemberOutput(float(torch.sigmoid(slide)), tiles.numpy().astype(np.float32))
            else:
                logits = np.asarray(outputs[name])[:, 0].astype(np.float32)
                pooling = dict(self.pooling[name])
                method = pooling.pop("method", "mean")
                scored[name] = MemberOutput(float(pool_tile_logits(torch.from_numpy(logits), method, **pooling)), logits)
        return scored


def _encoder(spec: FeatureSpec, resolution: str, tile_px: int, engine: EngineConfig, weights: str | None,
             member: str) -> TileEncoder:
    from wsi_prognosis.encoders import EmbedderConfig, TileEmbedder, load_encoder
    from wsi_prognosis.models.stain import StainFit

    loaded = load_encoder(str(spec.encoder["name"]), weights=weights)
    for key in IDENTITY_KEYS:
        if loaded.identity.get(key) != spec.encoder.get(key):
            raise BundleError(
                f"member {member} was trained on {spec.encoder['name']} features with {key}={spec.encoder.get(key)!s:.40}, "
                f"but the encoder here has {loaded.identity.get(key)!s:.40}. Fix: install the encoder's weights the "
                f"bundle was trained with (`wsi-prognosis encoders name={spec.encoder['name']}`), or pass them with "
                f"encoder_weights.{spec.encoder['name']}=PATH.")
    embedder = TileEmbedder(loaded, tile_px, EmbedderConfig(device=engine.device, batch_tiles=engine.batch_tiles,
                                                            bf16=engine.bf16, channels_last=engine.channels_last))
    target = None
    if spec.stain:
        target = StainFit.from_dict(spec.stain["targets"][resolution])
    return TileEncoder(name=spec.key, resolution=resolution, embed=embedder.embed_tensor, stain_target=target)


def _finetuned_encoder(member: Any, network: Any, spec: FeatureSpec, engine: EngineConfig) -> TileEncoder:
    """A fine-tuned member's own encoder as a `TileEncoder` (its own output key): the network it was trained
    with, run like any encoder (ONNX Runtime on CPU, exported once and cached under its own weights' sha256)."""
    from wsi_prognosis.encoders import EmbedderConfig, TileEmbedder, get_encoder
    from wsi_prognosis.encoders.registry import LoadedEncoder
    from wsi_prognosis.models.stain import StainFit

    registry = get_encoder(str(spec.encoder["name"]))
    recorded = (member.encoder or {}).get("preprocessing")
    if recorded != registry.preprocessing():
        raise BundleError(
            f"member {member.name} fine-tuned {registry.name} with preprocessing {recorded}, but the registry's "
            f"{registry.name} now prepares tiles with {registry.preprocessing()}. Fix: score with the wsi-prognosis "
            "version the bundle was trained with (bundle.json versions), or retrain the member.")
    model = network.encoder.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    loaded = LoadedEncoder(spec=registry, model=model, weights_path=None, weights_sha256=spec.encoder["weights_sha256"],
                           identity=dict(spec.encoder))
    embedder = TileEmbedder(loaded, int(member.preprocessing["tile_px"]),
                            EmbedderConfig(device=engine.device, batch_tiles=engine.batch_tiles, bf16=engine.bf16,
                                           channels_last=engine.channels_last))
    target = StainFit.from_dict(spec.stain) if spec.stain else None
    return TileEncoder(name=spec.key, resolution=member.resolution, embed=embedder.embed_tensor, stain_target=target)


def load_ensemble(bundle: Any, engine: EngineConfig, encoder_weights: Mapping[str, str] | None = None,
                  *, with_encoders: bool = True) -> LoadedEnsemble:
    """Every member's network (weights re-verified by the bundle), and one encoder per feature set and
    resolution (`with_encoders=False` when every slide's features come from feature stores)."""
    ensemble = LoadedEnsemble()
    seen: set[tuple[str, str]] = set()
    for m in bundle.members:
        ensemble.names_by_res.setdefault(m.resolution, []).append(m.name)
        ensemble.pooling[m.name] = dict(m.pooling)
        if not m.on_features:
            ensemble.pixel.append(LoadedMember(m.name, m.resolution, bundle.load_model(m, device="cpu"),
                                               Preprocessing.from_dict(m.preprocessing)))
            continue
        spec = member_feature_spec(m)
        ensemble.feature_specs[m.name] = spec
        if m.finetuned:  # its own encoder, never shared; always embedded (no feature store holds its features)
            network = bundle.load_model(m, device="cpu")
            ensemble.heads[m.name] = network.head
            if with_encoders:
                ensemble.encoders.append(_finetuned_encoder(m, network, spec, engine))
            continue
        ensemble.heads[m.name] = bundle.load_model(m, device="cpu")
        if with_encoders and (m.resolution, spec.key) not in seen:
            seen.add((m.resolution, spec.key))
            weights = (encoder_weights or {}).get(str(spec.encoder["name"]))
            ensemble.encoders.append(_encoder(spec, m.resolution, int(m.preprocessing["tile_px"]), engine, weights, m.name))
    return ensemble


__all__ = ["LoadedEnsemble", "MemberOutput", "load_ensemble", "member_feature_spec"]
