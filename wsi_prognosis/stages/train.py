"""`wsi-prognosis train manifest=CSV clinical=CSV tiles=DIR [features=DIR] out=DIR` — train one ensemble member.

With `model.finetune=all|last:N` the member fine-tunes its encoder on pixels (no features= needed; one given
is ignored): `models.finetune_training`.

The member folder is `out/<member>` where the member name is built from resolution, model, seed
and any other overrides (so a `--multirun` sweep writes one folder per candidate). It holds
member.json, metrics.json, best.pt (backbone state_dict), best.ckpt/last.ckpt (Lightning) and
run_train.json. Rerunning with `resume=true` (the default) skips a finished member and continues
an interrupted one from last.ckpt.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from wsi_prognosis.cohort.labels import LabelConfig
from wsi_prognosis.errors import ConfigurationError
from wsi_prognosis.models.augment import AugmentConfig
from wsi_prognosis.models.config import EncoderChoice, ModelConfig, TrainConfig, TrainerConfig, config_record
from wsi_prognosis.models.data import DataConfig

log = logging.getLogger(__name__)

LOGGERS = ("csv", "tensorboard", "mlflow")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME_EXTRA = 80  # readable names for a few overrides; more become a prefix and a hash


def member_name(resolution: str, arch: str, seed: Any, overrides: str = "") -> str:
    """A filesystem-safe, unique member folder name: `<res>_<arch>_s<seed>[_<other overrides>]`.

    `overrides` is Hydra's `job.override_dirname` with resolution/arch/seed/paths excluded, e.g.
    "model.optim.lr=0.003,experiment=demo" -> "..._experiment-demo_model.optim.lr-0.003" ("=" becomes
    "-"; any other character outside [A-Za-z0-9._-], or a long string, adds a short hash of the
    original so names stay unique and short).
    """
    base = f"{resolution}_{arch}_s{seed}"
    items = [item for item in str(overrides or "").split(",") if item]
    if not items:
        return _UNSAFE.sub("-", base)
    extra = "_".join(sorted(items)).replace("=", "-")
    safe = _UNSAFE.sub("-", extra)
    if safe != extra or len(safe) > MAX_NAME_EXTRA:
        safe = (safe[:40] + "-" if len(safe) > 40 else safe + "-") + hashlib.sha1(extra.encode()).hexdigest()[:8]
    return _UNSAFE.sub("-", base) + "_" + safe


def model_tag(encoder: str, arch: str, pooling: str) -> str:
    """The model part of a member's name: `<encoder>-<head pooling>` (e.g. lite0-attention), or the CNN's
    timm arch when it trains from scratch (encoder=none)."""
    return str(arch) if str(encoder) == "none" else f"{encoder}-{pooling}"


OmegaConf.register_new_resolver("wsi_member", member_name, replace=True)
OmegaConf.register_new_resolver("wsi_model_tag", model_tag, replace=True)


def _section(cls: type, values: Any, key: str) -> Any:
    values = dict(values or {})
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigurationError(f"{key}.{unknown[0]}: unknown option; known: {sorted(known)}.")
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigurationError(f"{key}: {exc}") from exc


def parse_config(cfg: DictConfig) -> TrainConfig:
    """Validate the composed Hydra config into frozen dataclasses (the only place DictConfig is read)."""
    for key in ("manifest", "clinical", "tiles", "out"):
        if OmegaConf.is_missing(cfg, key):
            raise ConfigurationError(f"{key}: required. Usage: wsi-prognosis train manifest=CSV clinical=CSV tiles=DIR out=DIR.")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    data = dict(resolved.get("data") or {})
    augment = _section(AugmentConfig, data.pop("augment", {}), "data.augment")
    data_config = _section(DataConfig, {**data, "augment": augment}, "data")
    model = _section(ModelConfig, resolved.get("model"), "model")
    trainer = _section(TrainerConfig, resolved.get("trainer"), "trainer")
    labels = _section(LabelConfig, resolved.get("labels"), "labels")
    if trainer.monitor not in ("c_index", "auc_extremes"):
        raise ConfigurationError(f"trainer.monitor={trainer.monitor!r}: use c_index or auc_extremes.")
    from wsi_prognosis.models.lit import LOSSES

    if model.loss not in LOSSES:
        raise ConfigurationError(f"model.loss={model.loss!r}: use one of {LOSSES}.")
    if data_config.stain_norm not in ("none", "macenko"):
        raise ConfigurationError(f"data.stain_norm={data_config.stain_norm!r}: use none or macenko.")
    if trainer.logger not in LOGGERS:
        raise ConfigurationError(f"trainer.logger={trainer.logger!r}: use one of {LOGGERS}.")
    from wsi_prognosis.models.pooling import check_pooling

    check_pooling(model.pooling)
    from wsi_prognosis.models.heads import HeadConfig

    _section(HeadConfig, model.head, "model.head")  # validated here, built by the recipe
    encoder = _section(EncoderChoice, resolved.get("encoder"), "encoder")
    from wsi_prognosis.encoders import FROZEN, get_encoder

    spec = get_encoder(encoder.name)  # an unknown name fails before any work, listing the names
    from wsi_prognosis.encoders.blocks import parse_finetune

    finetune = parse_finetune(model.finetune)
    if finetune.enabled and spec.kind != FROZEN:
        raise ConfigurationError(f"model.finetune={model.finetune}: encoder={encoder.name} has no pretrained encoder to "
                                 "fine-tune (it trains model.arch from scratch, all of it). Fix: a pretrained encoder, "
                                 "e.g. encoder=lite0, or model.finetune=none.")
    if not model.finetune_lr_scale > 0:
        raise ConfigurationError(f"model.finetune_lr_scale={model.finetune_lr_scale}: must be > 0 (the encoder's "
                                 "learning rate is model.optim.lr times it). Fix: e.g. 0.1.")
    features = resolved.get("features")
    if data_config.bag_size < 1 or data_config.batch_size < 1:
        raise ConfigurationError("data.bag_size and data.batch_size must be >= 1.")
    return TrainConfig(
        manifest=Path(str(resolved["manifest"])), clinical=Path(str(resolved["clinical"])),
        tiles=Path(str(resolved["tiles"])), out=Path(str(resolved["out"])), member=str(resolved["member"]),
        resolution=str(resolved["resolution"]), seed=int(resolved["seed"]), resume=bool(resolved["resume"]),
        model=model, data=data_config, trainer=trainer, labels=labels, encoder=encoder,
        features=None if features is None or finetune.enabled else Path(str(features)), resolved=resolved,
    )


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train one member; returns its final metrics (also in <member>/metrics.json)."""
    config = parse_config(cfg)
    from wsi_prognosis.models.training import train_member  # deferred: torch/lightning import

    return train_member(config)


__all__ = ["TrainConfig", "member_name", "parse_config", "run", "config_record", "asdict"]
