"""The score / calibrate / merge configs compose and validate into typed objects."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module

from wsi_prognosis.errors import ConfigurationError
from wsi_prognosis.stages.calibrate import CalibrateConfig
from wsi_prognosis.stages.score import ScoreStageConfig


def composed(stage: str, *overrides: str):
    with initialize_config_module(config_module="wsi_prognosis.configs", version_base="1.3"):
        return compose(config_name=stage, overrides=list(overrides))


def test_score_config_top_level_keys_and_defaults(tmp_path):
    cfg = composed("score", "bundle=B", "manifest=M.csv", f"out={tmp_path}")
    assert {"bundle", "manifest", "out", "tiles"} <= set(cfg)
    config = ScoreStageConfig.from_cfg(cfg)
    assert config.options.tiles is None and config.options.shard.count == 1
    assert config.options.engine.bf16 and config.options.engine.channels_last
    assert ScoreStageConfig.from_cfg(composed("score", "bundle=B", "manifest=M", "out=O", "shard=2/4")).options.shard.index == 2
    both = composed("score", "bundle=B", "manifest=M", "out=O", "shard.index=1", "shard.count=3")
    assert str(ScoreStageConfig.from_cfg(both).options.shard) == "1/3"
    for bad in ("shard=4/4", "patient_aggregation=median", "engine.batch_tiles=0", "engine.colour=1"):
        with pytest.raises(ConfigurationError):
            ScoreStageConfig.from_cfg(composed("score", "bundle=B", "manifest=M", "out=O", f"+{bad}" if "colour" in bad else bad))


def test_calibrate_and_merge_configs(tmp_path):
    cfg = composed("calibrate", "bundle=B", "manifest=M.csv", "clinical=C.csv", "tiles=T", "out=N")
    config = CalibrateConfig.from_cfg(cfg)
    assert config.cohort == "tuning" and config.fit["method"] == "quantile" and config.level == "patient"
    assert config.fit["shares"] == {"good": 0.6, "uncertain": 0.15, "poor": 0.25}
    with pytest.raises(ConfigurationError, match="exactly one"):
        CalibrateConfig.from_cfg(composed("calibrate", "bundle=B", "manifest=M", "scores=S", "out=N"))
    with pytest.raises(ConfigurationError, match="immutable"):
        CalibrateConfig.from_cfg(composed("calibrate", "bundle=B", "scores=S", "out=B"))
    merge = composed("merge", f"out={tmp_path}")
    assert merge.inputs is None and merge.allow_incomplete is False
