"""Backbone factory and MIL pooling: small literal checks (augmentation: test_training_augment.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsi_prognosis.errors import ConfigurationError
from wsi_prognosis.models import build_backbone, default_preprocessing, pool_tile_logits

TINY = "test_efficientnet"


def test_pooling_literal_values():
    logits = torch.tensor([0.0, 0.0, 2.0, -2.0])  # probabilities 0.5, 0.5, 0.881, 0.119
    assert pool_tile_logits(logits, "mean").item() == pytest.approx(0.5, abs=1e-6)
    assert pool_tile_logits(logits, "topk", k=1).item() == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())
    assert pool_tile_logits(logits, "topk", k_fraction=0.5).item() == pytest.approx((0.5 + 0.8808) / 2, abs=1e-3)
    # noisy-and is 0 when no tile is positive, 1 when all are, monotone in between
    assert pool_tile_logits(torch.full((8,), -30.0), "noisy_and").item() == pytest.approx(0.0, abs=1e-6)
    assert pool_tile_logits(torch.full((8,), 30.0), "noisy_and").item() == pytest.approx(1.0, abs=1e-6)
    values = [pool_tile_logits(torch.full((8,), v), "noisy_and").item() for v in (-2.0, 0.0, 2.0)]
    assert values == sorted(values)


def test_pooling_batched_and_errors():
    logits = torch.randn(3, 5)
    assert pool_tile_logits(logits, "mean").shape == (3,)
    with pytest.raises(ConfigurationError, match="pooling.method"):
        pool_tile_logits(logits, "max")
    with pytest.raises(ValueError, match="empty bag"):
        pool_tile_logits(torch.zeros(0), "mean")


def test_backbone_one_logit_and_preprocessing():
    model = build_backbone(TINY)
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 1)
    prep = default_preprocessing(TINY, tile_px=64, mpp=1.0).to_dict()
    assert set(prep) == {"mean", "std", "tile_px", "mpp"} and prep["tile_px"] == 64


def test_backbone_never_downloads(monkeypatch, tmp_path):
    import timm.models._builder as builder

    def refuse(*args, **kwargs):
        raise AssertionError("a pretrained download was attempted")

    monkeypatch.setattr(builder, "load_pretrained", refuse)
    source = build_backbone(TINY)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    loaded = build_backbone(TINY, pretrained_path=str(tmp_path / "w.pth"))
    for name, tensor in source.state_dict().items():
        if not name.startswith("classifier."):
            assert torch.equal(tensor, loaded.state_dict()[name]), name
    with pytest.raises(ConfigurationError, match="not found"):
        build_backbone(TINY, pretrained_path=str(tmp_path / "missing.pth"))
    with pytest.raises(ConfigurationError, match="not a timm architecture"):
        build_backbone("no_such_net")
