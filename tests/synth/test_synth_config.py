"""Configuration: presets, overrides, and clear errors for bad values."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from wsi_prognosis.errors import ConfigurationError
from wsi_prognosis.stages.synth import config_from_cfg
from wsi_prognosis.synth import SynthConfig


@pytest.mark.parametrize("name", ["tiny", "demo", "benchmark"])
def test_presets_validate(name: str) -> None:
    config = SynthConfig.from_preset(name, seed=3)
    assert config.preset == name and config.seed == 3
    assert config.base_mpp == 0.25


def test_benchmark_preset_is_benchmark_sized() -> None:
    config = SynthConfig.from_preset("benchmark")
    assert config.width_px * config.height_px >= 80_000 * 60_000 * 0.9
    assert config.tissue_fraction == pytest.approx(0.38)


def test_overrides_reach_outcome_params() -> None:
    config = SynthConfig.from_preset("tiny", followup_max_years=8.0, strength_10x=0.0)
    assert config.outcome.followup_max_years == 8.0
    assert config.strength_10x == 0.0
    assert config.fingerprint() != SynthConfig.from_preset("tiny").fingerprint()
    # workers do not change pixels, so they do not change the fingerprint
    assert SynthConfig.from_preset("tiny", workers=1).fingerprint() == SynthConfig.from_preset("tiny").fingerprint()


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (dict(n_training=0, n_tuning=0, n_validation=0), "zero patients"),
        (dict(followup_min_years=-1.0), "negative"),
        (dict(followup_max_years=-2.0), "negative"),
        (dict(n_training=-3), "negative"),
        (dict(strength_40x=-1.0), "strength_40x"),
        (dict(validation_base_mpp=0.1), "validation_base_mpp"),
        (dict(validation_format="dicom"), "validation_format"),
        (dict(tile_px=100), "tile_px"),
        (dict(no_such_option=1), "unknown option"),
    ],
)
def test_bad_config_is_a_clear_error(overrides: dict, needle: str) -> None:
    with pytest.raises(ConfigurationError, match=needle) as info:
        SynthConfig.from_preset("tiny", **overrides)
    assert "Fix" in str(info.value) or "fix" in str(info.value)


def test_unknown_preset() -> None:
    with pytest.raises(ConfigurationError, match="unknown preset 'huge'.*tiny"):
        SynthConfig.from_preset("huge")


def test_stage_config_composes_and_validates() -> None:
    with initialize_config_module(config_module="wsi_prognosis.configs", version_base="1.3"):
        cfg = compose(config_name="synth", overrides=["out=/tmp/x", "preset=tiny", "seed=5", "strength_10x=0"])
    config = config_from_cfg(cfg)
    assert (config.preset, config.seed, config.strength_10x) == ("tiny", 5, 0.0)
    assert config.n_training == SynthConfig.from_preset("tiny").n_training
    bad = OmegaConf.merge(cfg, {"preset": "nope"})
    with pytest.raises(ConfigurationError, match="unknown preset"):
        config_from_cfg(bad)
    with pytest.raises(ConfigurationError, match="negative"):
        config_from_cfg(OmegaConf.merge(cfg, {"followup_min_years": -1}))


def test_plain_constructor_names_its_preset_and_replaces() -> None:
    """`SynthConfig()` is the demo preset by name (the field is not shadowed by the constructor method)."""
    plain = SynthConfig()
    assert plain.preset == "demo"
    assert plain.replace(seed=3) == SynthConfig.from_preset("demo", seed=3)
