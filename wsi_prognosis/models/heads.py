"""Multiple-instance heads on cached tile features: the member network when the encoder is frozen.

Every head scores each tile with the same small network (standardise -> linear -> GELU -> dropout
-> linear: a tile logit t_i) and pools the tile logits with weights w_i into the slide logit
sum_i w_i t_i; only the weights differ:

- `mean`: w_i = 1/N — with the linear classifier this is a model of the slide's mean embedding;
- `attention`: gated attention (Ilse et al. 2018, ABMIL) learns which tiles matter; because the
  classifier is linear, attention-pooling the tile embeddings equals attention-pooling the tile
  logits, so every tile keeps its own logit for heatmaps and the slide logit is their weighted mean;
- `topk`: the mean of the k = ceil(k_fraction * N) highest tile logits.

Features are standardised with the training tiles' mean and SD (buffers, saved with the weights), so
the same weight decay means the same for every encoder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from wsi_prognosis.errors import ConfigurationError

HEAD_POOLINGS = ("mean", "attention", "topk")


@dataclass(frozen=True)
class HeadConfig:
    pooling: str = "attention"      # mean | attention | topk
    hidden: int = 32                # tile embedding width after the first layer
    attention_hidden: int = 32      # gated attention's width
    dropout: float = 0.5            # on the hidden tile embedding (training only)
    input_dropout: float = 0.3      # on the standardised input features (training only)
    k_fraction: float = 0.1         # topk: share of a bag's tiles averaged

    def __post_init__(self) -> None:
        if self.pooling not in HEAD_POOLINGS:
            raise ConfigurationError(f"model.head.pooling={self.pooling!r}: one of {list(HEAD_POOLINGS)}.")
        if self.hidden < 1 or self.attention_hidden < 1 or not 0 <= self.dropout < 1 or not 0 <= self.input_dropout < 1:
            raise ConfigurationError("model.head: hidden and attention_hidden >= 1, dropouts in [0, 1).")
        if not 0 < self.k_fraction <= 1:
            raise ConfigurationError(f"model.head.k_fraction={self.k_fraction}: in (0, 1].")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FeatureHead(nn.Module):
    """(B, N, D) features + (B, N) bool mask -> (slide logits (B,), tile logits (B, N), weights (B, N))."""

    def __init__(self, dim: int, config: HeadConfig = HeadConfig()) -> None:
        super().__init__()
        self.dim, self.config = int(dim), config
        self.register_buffer("feature_mean", torch.zeros(dim))
        self.register_buffer("feature_std", torch.ones(dim))
        self.input_dropout = nn.Dropout(config.input_dropout)
        self.tile = nn.Sequential(nn.Linear(dim, config.hidden), nn.GELU(), nn.Dropout(config.dropout))
        self.classifier = nn.Linear(config.hidden, 1)
        if config.pooling == "attention":
            self.attention_v = nn.Linear(config.hidden, config.attention_hidden)
            self.attention_u = nn.Linear(config.hidden, config.attention_hidden)
            self.attention_w = nn.Linear(config.attention_hidden, 1)

    def set_standardisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std.clamp_min(1e-4))

    def weights(self, hidden: torch.Tensor, tile_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, N) pooling weights summing to 1 over each bag's real tiles."""
        if self.config.pooling == "attention":
            score = self.attention_w(torch.tanh(self.attention_v(hidden)) * torch.sigmoid(self.attention_u(hidden)))
            return torch.softmax(score.squeeze(-1).masked_fill(~mask, float("-inf")), dim=-1)
        if self.config.pooling == "topk":
            n = mask.sum(-1, keepdim=True).float()
            k = torch.ceil(self.config.k_fraction * n).clamp_min(1)
            ranked = tile_logits.detach().masked_fill(~mask, float("-inf"))
            rank = ranked.argsort(dim=-1, descending=True).argsort(dim=-1)
            chosen = (rank < k) & mask
            return chosen.float() / chosen.sum(-1, keepdim=True).clamp_min(1)
        return mask.float() / mask.sum(-1, keepdim=True).clamp_min(1)

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if features.ndim == 2:  # one bag
            slide, tiles, weights = self.forward(features[None], None if mask is None else mask[None])
            return slide[0], tiles[0], weights[0]
        if mask is None:
            mask = torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)
        x = self.input_dropout((features.float() - self.feature_mean) / self.feature_std)
        hidden = self.tile(x)
        tile_logits = self.classifier(hidden).squeeze(-1)
        weights = self.weights(hidden, tile_logits, mask)
        slide_logits = (weights * tile_logits.masked_fill(~mask, 0.0)).sum(-1)
        return slide_logits, tile_logits, weights


def build_head(dim: int, record: dict[str, Any]) -> FeatureHead:
    """A head from its bundle / member record ({"pooling", "hidden", ...})."""
    known = set(HeadConfig.__dataclass_fields__)
    return FeatureHead(dim, HeadConfig(**{k: v for k, v in record.items() if k in known}))


def feature_statistics(features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and SD per dimension over every tile of the training slides (one slide's tiles count once each)."""
    stacked = torch.cat([f.float().reshape(-1, f.shape[-1]) for f in features])
    return stacked.mean(0), stacked.std(0, unbiased=False) if len(stacked) > 1 else torch.ones(stacked.shape[-1])


def n_parameters(head: nn.Module) -> int:
    return int(sum(p.numel() for p in head.parameters()))


__all__ = ["FeatureHead", "HEAD_POOLINGS", "HeadConfig", "build_head", "feature_statistics", "n_parameters"]
