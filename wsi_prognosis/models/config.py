"""The validated configuration of one training run (what `stages/train.py` builds from Hydra).

Kept in the models package so the training library needs nothing from the stage that calls it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsi_prognosis.cohort.labels import LabelConfig
from wsi_prognosis.models.data import DataConfig


@dataclass(frozen=True)
class EncoderChoice:
    """`encoder=NAME` (the registry, `wsi_prognosis.encoders`) and an optional local weights file."""

    name: str = "lite0"
    weights: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "mobilenetv2_100"    # encoder=none: the timm CNN trained from scratch on pixels
    pretrained_path: str | None = None
    loss: str = "bce"                # bce | cox | bce+cox (models.lit)
    cox_weight: float = 1.0
    pooling: dict[str, Any] = field(default_factory=lambda: {"method": "mean"})   # encoder=none: tile-logit pooling
    optim: dict[str, Any] = field(default_factory=dict)
    head: dict[str, Any] = field(default_factory=dict)   # frozen encoders: the feature head (models.heads.HeadConfig)
    finetune: str = "none"           # none | all | last:N (encoders.blocks): train the encoder on pixels with the head
    finetune_lr_scale: float = 0.1   # fine-tuning: the encoder's learning rate = optim.lr * this
    grad_checkpointing: bool = True  # fine-tuning: recompute ViT block activations in the backward pass


@dataclass(frozen=True)
class TrainerConfig:
    max_epochs: int = 30
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "auto"          # auto: bf16-mixed on GPU, 32-true on CPU
    deterministic: Any = "auto"      # auto: true on CPU
    monitor: str = "c_index"         # c_index | auc_extremes (on the tuning cohort)
    early_stopping_patience: int = 10
    log_every_n_steps: int = 10
    limit_train_batches: Any = None
    num_sanity_val_steps: int = 0
    enable_progress_bar: bool = True
    logger: str = "csv"              # csv | tensorboard | mlflow (next to the CSV log; extras: tracking)
    cpu_threads: int | None = None   # torch threads on a CPU; None: 1 for heads on features (small matrices: more
                                     # threads only wait on each other), every core for CNNs on pixels


@dataclass(frozen=True)
class TrainConfig:
    manifest: Path
    clinical: Path
    tiles: Path
    out: Path
    member: str
    resolution: str
    seed: int
    resume: bool
    model: ModelConfig
    data: DataConfig
    trainer: TrainerConfig
    labels: LabelConfig
    encoder: EncoderChoice = field(default_factory=EncoderChoice)
    features: Path | None = None     # the features root of `embed` (frozen encoders)
    resolved: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def member_dir(self) -> Path:
        return self.out / self.member



def config_record(config: TrainConfig) -> dict[str, Any]:
    """The resolved config as plain JSON-ready data (for member.json and the bundle)."""
    record = dict(config.resolved)
    record.pop("hydra", None)
    return json.loads(json.dumps(record, default=str))


__all__ = ["EncoderChoice", "ModelConfig", "TrainerConfig", "TrainConfig", "config_record"]
