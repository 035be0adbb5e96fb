"""Stain normalisation (deterministic, undoes a stain change, survives the bundle) and the Cox loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wsi_prognosis.ensemble import Member, load_bundle, member_slide_score, write_bundle
from wsi_prognosis.models import build_backbone, default_preprocessing
from wsi_prognosis.models.lit import MilModule, cox_partial_likelihood
from wsi_prognosis.models.stain import StainFit, apply_od_matrix, fit_stain, median_target, od_matrix
from wsi_prognosis.synth.realtex import rescale_stains

DATA = Path(__file__).resolve().parents[1] / "data" / "tiles"


def real_tiles() -> np.ndarray:
    """Four 64-px tiles from a real colorectal H&E tile (TCGA-AD, see tests/data/ATTRIBUTION.md)."""
    rgb = np.asarray(Image.open(DATA / "TCGA-AD-6964-01Z-00-DX1_tile_22016_11776.jpg").convert("RGB"))
    return np.stack([rgb[y:y + 64, x:x + 64] for y in (100, 300) for x in (100, 300)])


def restained(tiles: np.ndarray, h: float, e: float) -> np.ndarray:
    return np.stack([np.clip(rescale_stains(t.astype(np.float32), h, e) + 0.5, 0, 255).astype(np.uint8) for t in tiles])


def test_fit_is_deterministic_and_undoes_a_stain_change():
    tiles = real_tiles()
    first, again = fit_stain(tiles), fit_stain(tiles.copy())
    assert first is not None and np.array_equal(first.he, again.he) and np.array_equal(first.max_c, again.max_c)
    shifted = restained(tiles, 1.35, 0.7)          # another lab: more haematoxylin, less eosin
    fit_shifted = fit_stain(shifted)
    assert fit_shifted is not None and fit_shifted.max_c[0] > first.max_c[0]
    normalised = apply_od_matrix(torch.from_numpy(shifted), torch.from_numpy(od_matrix(fit_shifted, first))).numpy()
    before = np.abs(shifted.astype(float) - tiles).mean()
    after = np.abs(normalised - tiles).mean()
    assert after < 0.65 * before, (before, after)   # identity would leave it at `before`
    # the same slide normalised twice gives the same pixels (a pure function of pixels and target)
    assert np.array_equal(normalised, apply_od_matrix(torch.from_numpy(shifted),
                                                      torch.from_numpy(od_matrix(fit_shifted, first))).numpy())


def test_blank_tiles_are_not_fitted_and_map_to_identity():
    blank = np.full((4, 64, 64, 3), 242, np.uint8)
    assert fit_stain(blank) is None
    assert np.array_equal(od_matrix(None, StainFit(np.eye(3)[:, :2], np.ones(2))), np.eye(3))
    with pytest.raises(Exception, match="no training slide gave a stain estimate"):
        median_target([None, None])


def test_bundle_with_stain_normalisation_scores_identically_after_a_round_trip(tmp_path: Path):
    tiles = real_tiles()
    target = fit_stain(tiles)
    prep = {**default_preprocessing("test_efficientnet", tile_px=64, mpp=0.25).to_dict(),
            "stain": {"method": "macenko", **target.to_dict()}}
    member = Member(name="40x_m0", resolution="40x", arch="test_efficientnet", weights="", sha256="",
                    preprocessing=prep, pooling={"method": "mean"}, tuning_metrics={}, seed=0)
    torch.manual_seed(0)
    model = build_backbone("test_efficientnet").eval()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    spec = {"resolutions": {"40x": {"mpp": 0.25, "tile_px": 64}}, "min_tissue_fraction": 0.5, "tissue": {}}
    write_bundle(tmp_path / "bundle", [(member, tmp_path / "w.pt")], tile_spec=spec,
                 aggregation={"members": "mean", "patient": "mean"}, training_configs={"40x_m0": {}})
    bundle = load_bundle(tmp_path / "bundle")
    loaded = bundle.members[0]
    assert loaded.preprocessing["stain"] == prep["stain"]          # recorded in the bundle
    shifted = restained(tiles, 1.3, 0.8)
    in_memory = member_slide_score(model, member, shifted)
    assert member_slide_score(bundle.load_model(loaded), loaded, shifted) == in_memory
    # normalisation is applied: without the stain record the same weights score the shifted tiles differently
    plain = Member(**{**member.__dict__, "preprocessing": {k: v for k, v in prep.items() if k != "stain"}})
    assert member_slide_score(model, plain, shifted) != in_memory


def test_training_module_applies_the_slide_matrix_only_when_trained_with_normalisation():
    tiles = torch.from_numpy(real_tiles())[None]        # one bag of 4 tiles
    prep = default_preprocessing("test_efficientnet_gn", tile_px=64, mpp=0.25).to_dict()
    swap = torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]])[None]   # a matrix that visibly changes the tiles
    torch.manual_seed(0)
    plain = MilModule("test_efficientnet_gn", prep, {"method": "mean"}, {}).eval()
    torch.manual_seed(0)
    normed = MilModule("test_efficientnet_gn", {**prep, "stain": {"he": [[1, 0], [0, 1], [0, 0]], "max_c": [1, 1]}},
                       {"method": "mean"}, {}).eval()
    with torch.no_grad():
        assert torch.equal(plain(tiles, None, swap), plain(tiles))
        assert not torch.equal(normed(tiles, None, swap), normed(tiles))


def test_cox_partial_likelihood_matches_the_closed_form_and_prefers_the_right_order():
    time = torch.tensor([1.0, 2.0, 3.0])
    event = torch.tensor([1.0, 1.0, 0.0])
    risk = torch.tensor([0.5, 0.0, -0.5])
    # events at t=1 (risk set all three) and t=2 (risk set patients 2 and 3), Breslow, per event
    expected = -((0.5 - np.log(np.exp(0.5) + 1 + np.exp(-0.5))) + (0.0 - np.log(1 + np.exp(-0.5)))) / 2
    assert cox_partial_likelihood(risk, time, event).item() == pytest.approx(expected, rel=1e-6)
    assert cox_partial_likelihood(risk, time, event) < cox_partial_likelihood(-risk, time, event)
    assert cox_partial_likelihood(risk, time, torch.zeros(3)).item() == 0.0


def test_cox_loss_trains_on_unlabelled_patients():
    """y = NaN (no good/poor label): BCE ignores the slide, Cox still gets a gradient from it."""
    prep = default_preprocessing("test_efficientnet_gn", tile_px=64, mpp=0.25).to_dict()
    tiles = torch.from_numpy(real_tiles()).reshape(2, 2, 64, 64, 3)
    batch = (tiles, torch.tensor([float("nan"), float("nan")]), torch.zeros(2), None, torch.eye(3).expand(2, 3, 3),
             torch.tensor([1.0, 5.0]), torch.tensor([1.0, 0.0]))
    for loss, has_grad in (("bce", False), ("cox", True)):
        module = MilModule("test_efficientnet_gn", prep, {"method": "mean"}, {}, loss=loss)
        module.log = lambda *a, **k: None
        value = module.training_step(batch, 0)
        value.backward()
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert (len(grads) > 0 and any(g.abs().sum() > 0 for g in grads)) == has_grad, loss
