"""Augmentation: each op does what it says (and nothing when off), the batched torch HED conversion is
scikit-image's, draws repeat with the seed, and only training bags are augmented."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage import data as skdata
from skimage.color import hed2rgb, rgb2hed

from wsi_prognosis.models import augment as A
from wsi_prognosis.models.augment import AugmentConfig
from wsi_prognosis.models.backbone import default_preprocessing, tiles_to_tensor

OFF = AugmentConfig(flips=False, rot90=False, hed_alpha=0, hed_beta=0, brightness=0, contrast=0, saturation=0,
                    blur_probability=0)


def real_tiles(n: int = 8, px: int = 32) -> np.ndarray:
    """(n, px, px, 3) uint8 crops of scikit-image's immunohistochemistry slide (real stained tissue)."""
    image = skdata.immunohistochemistry()
    step = (image.shape[0] - px) // n
    return np.stack([image[i * step:i * step + px, i * step:i * step + px] for i in range(n)])


def nchw(tiles: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(tiles).permute(0, 3, 1, 2).float().div(255).contiguous()


def as_numpy(x: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) -> (N, H, W, 3) float64."""
    return x.permute(0, 2, 3, 1).double().numpy()


def batch(tiles: np.ndarray, config: AugmentConfig, seed: int = 0) -> tuple[np.ndarray, torch.Tensor]:
    """Loader's share then module's share, as training does; (augmented float RGB 0-255, params)."""
    moved, params = A.augment_bag(tiles, np.random.default_rng(seed), config)
    out = A.augment_batch(torch.from_numpy(moved), torch.from_numpy(params))
    return out.numpy(), torch.from_numpy(params)


@pytest.fixture(params=["picked tiles", "all tiles (GPU path)"])
def path(request, monkeypatch) -> str:
    """Run a test on both ways of skipping tiles an op leaves alone (the CPU's and the GPU's)."""
    if request.param != "picked tiles":
        monkeypatch.setattr(A, "_picks_tiles", lambda x: False)
    return request.param


# --- HED: scikit-image's conversion, batched ----------------------------------------------------------

def test_batched_hed_conversion_matches_scikit_image():
    tiles = real_tiles()
    rgb = nchw(tiles)
    stains = A.rgb_to_hed(rgb)
    expected = rgb2hed(tiles)
    assert np.abs(as_numpy(stains) - expected).max() < 1e-5
    assert expected[..., 0].max() > 0.05 and expected[..., 2].max() > 0.05  # real haematoxylin and DAB here
    back = A.hed_to_rgb(torch.from_numpy(expected).permute(0, 3, 1, 2).float())
    assert np.abs(as_numpy(back) - hed2rgb(expected)).max() < 1e-5
    rng = np.random.default_rng(1)
    alpha, beta = rng.uniform(0.9, 1.1, (len(tiles), 3)), rng.uniform(-0.02, 0.02, (len(tiles), 3))
    jittered = A.hed_jitter_(rgb, torch.tensor(alpha).float(), torch.tensor(beta).float())
    reference = hed2rgb(rgb2hed(tiles) * alpha[:, None, None] + beta[:, None, None])
    assert np.abs(as_numpy(jittered) - reference).max() < 1e-5


def test_hed_jitter_within_bounds_and_zero_strength_is_identity(path):
    tiles = real_tiles()
    config = replace(OFF, hed_alpha=0.05, hed_beta=0.01)
    out, params = batch(tiles, config)
    alpha, beta = params[:, A.ALPHA].numpy(), params[:, A.BETA].numpy()
    assert (np.abs(alpha - 1) <= 0.05).all() and (np.abs(beta) <= 0.01).all()
    assert np.abs(alpha - 1).max() > 0.01 and np.abs(beta).max() > 0.002  # drawn, not fixed
    # per tile, the stains of the output are the input's scaled and shifted by that tile's draw
    reference = hed2rgb(rgb2hed(tiles) * alpha[:, None, None] + beta[:, None, None]) * 255
    assert np.abs(out - reference).max() < 1e-3
    round_trip = hed2rgb(rgb2hed(tiles)) * 255  # unjittered (scikit-image's round trip clips negative stains)
    assert 1 < np.abs(out - round_trip).mean() < 20
    untouched, _ = batch(tiles, OFF)
    assert np.array_equal(untouched, tiles.astype(np.float32))


# --- colour jitter -------------------------------------------------------------------------------------

def sequential_colour(x: np.ndarray, b: np.ndarray, c: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Brightness, contrast, saturation one after the other, as written in the docs, (N, H, W, 3) in [0, 1]."""
    x = x * b[:, None, None, None]
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    x = (x - mean) * c[:, None, None, None] + mean
    grey = (x @ np.array([0.299, 0.587, 0.114]))[..., None]
    return np.clip((x - grey) * s[:, None, None, None] + grey, 0, 1)


def test_colour_jitter_is_brightness_contrast_saturation_in_turn(path):
    tiles = real_tiles()
    config = replace(OFF, brightness=0.1, contrast=0.1, saturation=0.1)
    out, params = batch(tiles, config)
    b, c, s = (params[:, k].double().numpy() for k in (A.BRIGHTNESS, A.CONTRAST, A.SATURATION))
    for factors in (b, c, s):
        assert (np.abs(factors - 1) <= 0.1).all() and np.abs(factors - 1).max() > 0.02
    expected = sequential_colour(tiles / 255.0, b, c, s) * 255
    assert np.abs(out - expected).max() < 1e-3
    assert np.abs(out - tiles).max() > 1


def test_each_colour_factor_alone():
    x = torch.full((2, 3, 4, 4), 0.4)
    x[:, 0, :2] = 0.6  # some colour and some contrast, nothing near 0 or 1
    one, up = torch.ones(2), torch.tensor([1.1, 0.9])
    mean = x.mean(dim=(1, 2, 3))
    brighter = A.colour_jitter(x, up, one, one)
    assert torch.allclose(brighter, x * up.view(2, 1, 1, 1), atol=1e-6)
    contrasted = A.colour_jitter(x, one, up, one)
    assert torch.allclose(contrasted.mean(dim=(1, 2, 3)), mean, atol=1e-6)
    assert torch.allclose(contrasted.std(dim=(1, 2, 3)), x.std(dim=(1, 2, 3)) * up, atol=1e-6)
    grey = lambda t: (t * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)  # noqa: E731
    saturated = A.colour_jitter(x, one, one, up)
    assert torch.allclose(grey(saturated), grey(x), atol=1e-6)
    assert torch.allclose(saturated - grey(saturated), (x - grey(x)) * up.view(2, 1, 1, 1), atol=1e-6)


# --- blur ----------------------------------------------------------------------------------------------

def high_frequency_energy(x: np.ndarray) -> float:
    return float((np.diff(x, axis=1) ** 2).sum() + (np.diff(x, axis=2) ** 2).sum())


def test_blur_is_scipys_gaussian_and_only_on_drawn_tiles(path):
    tiles = real_tiles(16)
    config = replace(OFF, blur_probability=0.5, blur_sigma_px=0.8)
    out, params = batch(tiles, config, seed=3)
    sigma = params[:, A.BLUR_SIGMA].numpy()
    blurred = sigma > 0
    assert 0 < blurred.sum() < len(tiles) and ((sigma[blurred] >= 0.1) & (sigma[blurred] <= 0.8)).all()
    assert (sigma >= 0.3).any()
    assert np.array_equal(out[~blurred], tiles[~blurred].astype(np.float32))  # the others: untouched
    for i in np.flatnonzero(blurred):
        expected = gaussian_filter(tiles[i].astype(np.float64), sigma=(sigma[i], sigma[i], 0), mode="reflect")
        assert np.abs(out[i] - expected).max() < 1e-3
        if sigma[i] >= 0.3:  # below, the neighbours' weights are < 0.4 %: hardly a blur, as in scipy
            assert high_frequency_energy(out[i]) < high_frequency_energy(tiles[i].astype(np.float64))
        assert out[i].mean() == pytest.approx(tiles[i].mean(), abs=1e-2)  # blur moves no intensity away
    checkerboard = torch.from_numpy(np.indices((16, 16)).sum(0) % 2).float().expand(1, 3, 16, 16)
    sharp = high_frequency_energy(as_numpy(checkerboard))
    assert high_frequency_energy(as_numpy(A.gaussian_blur(checkerboard, torch.tensor([0.8])))) < 0.2 * sharp


# --- flips and rotations ----------------------------------------------------------------------------------

def dihedral(tile: np.ndarray) -> list[np.ndarray]:
    return [np.rot90(t, k) for t in (tile, tile[:, ::-1]) for k in range(4)]


def which(tile: np.ndarray, moved: np.ndarray, options: list[np.ndarray]) -> int:
    matches = [k for k, option in enumerate(options) if np.array_equal(option, moved)]
    assert matches, "not a flip or rotation of the tile"
    return matches[0]


def test_flips_flip_and_rotations_rotate():
    tiles = np.random.default_rng(0).integers(0, 256, (32, 8, 8, 3), dtype=np.uint8)  # no symmetric tiles
    flipped = A.geometric(tiles, np.random.default_rng(1), replace(OFF, flips=True))
    kinds = {which(t, m, [t, t[:, ::-1], t[::-1], t[::-1, ::-1]]) for t, m in zip(tiles, flipped)}
    assert kinds == {0, 1, 2, 3}  # 32 tiles: each of none, left-right, up-down, both happens
    turned = A.geometric(tiles, np.random.default_rng(1), replace(OFF, rot90=True))
    assert {which(t, m, [np.rot90(t, k) for k in range(4)]) for t, m in zip(tiles, turned)} == {0, 1, 2, 3}
    both = A.geometric(tiles, np.random.default_rng(2), AugmentConfig())
    assert len({which(t, m, dihedral(t)) for t, m in zip(tiles, both)}) >= 6
    assert np.array_equal(A.geometric(tiles, np.random.default_rng(1), OFF), tiles)


# --- seeding, devices, precision ------------------------------------------------------------------------

def test_same_seed_same_augmented_batch():
    tiles = real_tiles()
    a, pa = batch(tiles, AugmentConfig(), seed=7)
    b, pb = batch(tiles, AugmentConfig(), seed=7)
    c, _ = batch(tiles, AugmentConfig(), seed=8)
    assert torch.equal(pa, pb) and np.array_equal(a, b) and not np.array_equal(a, c)


def test_float32_maths_under_bf16_autocast_and_channels_last():
    tiles = real_tiles()
    moved, params = A.augment_bag(tiles, np.random.default_rng(0), AugmentConfig(blur_probability=0.5))
    plain = A.augment_batch(torch.from_numpy(moved), torch.from_numpy(params))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = A.augment_batch(torch.from_numpy(moved), torch.from_numpy(params))
    assert under.dtype == torch.float32 and torch.equal(plain, under)
    prep = default_preprocessing("test_efficientnet", tile_px=32, mpp=0.25)
    assert tiles_to_tensor(plain, prep).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_under_autocast():
    tiles = real_tiles()
    moved, params = A.augment_bag(tiles, np.random.default_rng(0), AugmentConfig(blur_probability=0.5))
    cpu = A.augment_batch(torch.from_numpy(moved), torch.from_numpy(params))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        gpu = A.augment_batch(torch.from_numpy(moved).cuda(), torch.from_numpy(params).cuda())
    assert gpu.dtype == torch.float32 and torch.allclose(gpu.cpu(), cpu, atol=1e-2)


# --- only training is augmented --------------------------------------------------------------------------

def test_training_bags_carry_seeded_augmentation_tuning_bags_none(cohort_10x, monkeypatch):
    from wsi_prognosis.cohort import read_manifest
    from wsi_prognosis.models import lit
    from wsi_prognosis.models.data import DataConfig, EvalBags, TilePixels, TrainBags, eval_tile_index, prepare_slides

    manifest = read_manifest(cohort_10x["manifest"]).head(3).assign(y=1.0)
    bags = prepare_slides(manifest, cohort_10x["tiles"], "10x")
    config = DataConfig(bag_size=8, num_workers=0, eval_max_tiles=16)
    train = TrainBags(bags, config)
    torch.manual_seed(0)
    tiles, _, _, params, stain, _, _ = train[0]
    assert torch.equal(stain, torch.eye(3))  # no stain normalisation configured: identity
    torch.manual_seed(0)
    again = train[0]
    assert torch.equal(tiles, again[0]) and torch.equal(params, again[3])  # the same seed, the same bag
    assert params.shape == (8, A.N_PARAMS) and not torch.equal(params, torch.from_numpy(A.IDENTITY).expand(8, -1))

    eval_tiles, index, _ = EvalBags(bags, config)[0]
    raw = TilePixels(bags, 0).read(0, eval_tile_index(bags[0].n_tiles, 16))
    assert index == 0 and np.array_equal(eval_tiles.numpy(), raw)  # tuning tiles as read, no augmentation

    def refuse(*args, **kwargs):
        raise AssertionError("augmented")

    module = lit.MilModule("test_efficientnet_gn", default_preprocessing("test_efficientnet_gn", tile_px=64, mpp=1.0)
                           .to_dict(), {"method": "mean"}, {})
    monkeypatch.setattr(lit, "augment_batch", refuse)
    with torch.no_grad():
        module.validation_step((eval_tiles[None], torch.tensor([0]), torch.eye(3)[None]), 0)  # scoring a tuning slide: no augmentation
    module.log = lambda *a, **k: None
    rest = (torch.eye(3)[None], torch.ones(1), torch.ones(1))  # stain matrix, time, event
    module.training_step((tiles[None], torch.ones(1), torch.zeros(1), None, *rest), 0)  # no parameters, none applied
    with pytest.raises(AssertionError, match="augmented"):
        module.training_step((tiles[None], torch.ones(1), torch.zeros(1), params[None], *rest), 0)
