"""The LightningModule of a member trained on cached features: a `FeatureHead` and the outcome loss.

Training batches are padded bags (features, mask) of `bag_size` tiles; each tuning slide is scored
on all of its tiles, as scoring will. Everything else (loss, tuning metrics, optimiser, checkpointed
history) is `lit.TunedModule`'s, shared with members trained on pixels.
"""

from __future__ import annotations

from typing import Any

import torch

from wsi_prognosis.models.heads import FeatureHead, HeadConfig
from wsi_prognosis.models.lit import TunedModule


class HeadModule(TunedModule):
    def __init__(self, dim: int, head: dict[str, Any], optim: dict[str, Any], loss: str = "bce",
                 cox_weight: float = 1.0) -> None:
        super().__init__(optim, loss, cox_weight)
        self.save_hyperparameters()
        self.head = FeatureHead(dim, HeadConfig(**head))

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, D) features -> (B,) slide logits."""
        return self.head(features, mask)[0]

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        features, mask, y, _, time, event = batch
        return self.outcome_loss(self(features, mask), y, time, event)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        features, index = batch
        self._val.append((int(index[0]), float(torch.sigmoid(self(features[0][None])[0]))))
