"""Backbone factory, MIL pooling and augmentation: small literal checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsi_prognosis.errors import ConfigurationError
from wsi_prognosis.models import build_backbone, default_preprocessing, pool_tile_logits
from wsi_prognosis.models.augment import AugmentConfig, augment_tiles

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


def test_augment_seeded_and_geometric_only_preserves_pixels():
    tiles = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    config = AugmentConfig()
    a = augment_tiles(tiles, np.random.default_rng(1), config)
    b = augment_tiles(tiles, np.random.default_rng(1), config)
    c = augment_tiles(tiles, np.random.default_rng(2), config)
    assert a.dtype == np.uint8 and a.shape == tiles.shape
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    geometric = AugmentConfig(hed_alpha=0, hed_beta=0, brightness=0, contrast=0, saturation=0, blur_probability=0)
    moved = augment_tiles(tiles, np.random.default_rng(3), geometric)
    for before, after in zip(tiles, moved):  # flips/rotations permute pixels, never change them
        assert sorted(map(tuple, before.reshape(-1, 3))) == sorted(map(tuple, after.reshape(-1, 3)))


def test_hed_jitter_changes_colour_mildly():
    tiles = np.full((4, 8, 8, 3), (180, 120, 170), np.uint8)  # an H&E-like pink
    only_hed = AugmentConfig(flips=False, rot90=False, brightness=0, contrast=0, saturation=0, blur_probability=0)
    out = augment_tiles(tiles, np.random.default_rng(0), only_hed).astype(int)
    assert 0 < np.abs(out - tiles.astype(int)).max() < 40


def test_hed_jitter_matches_scikit_image():
    from skimage.color import hed2rgb, rgb2hed

    from wsi_prognosis.models.augment import hed_jitter

    tiles = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    rng = np.random.default_rng(1)
    alpha, beta = rng.uniform(0.9, 1.1, (4, 1, 1, 3)), rng.uniform(-0.02, 0.02, (4, 1, 1, 3))
    expected = hed2rgb(rgb2hed(tiles) * alpha + beta)
    assert np.abs(hed_jitter(tiles, alpha, beta) - expected).max() < 1 / 255
