"""Every training config composes: defaults, the demo experiment, both submitit launchers, select."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

import wsi_prognosis.stages.train as train_stage  # registers the member-name resolver
from wsi_prognosis.stages import select as select_stage

REQUIRED = ["manifest=m.csv", "clinical=c.csv", "tiles=t", "out=runs"]


def _compose(name: str, overrides: list[str]):
    with initialize_config_module("wsi_prognosis.configs", version_base="1.3"):
        full = compose(name, overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(full)  # what a run sees: `${hydra:...}` resolves, no hydra node
        cfg = full.copy()
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg, full


@pytest.mark.parametrize("extra", [[], ["experiment=scratch_cpu"], ["hydra/launcher=submitit_local"],
                                   ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu"]])
def test_train_config_composes(extra):
    cfg, full = _compose("train", REQUIRED + extra)
    config = train_stage.parse_config(cfg)
    assert set(k for k in cfg if k != "hydra") >= {"manifest", "clinical", "tiles", "out", "resolution", "seed", "resume",
                                                   "model", "data", "trainer", "labels"}
    assert config.resume is True and config.resolution == "10x"
    assert config.member.startswith("10x_") and str(config.member_dir).startswith("runs/")
    if "experiment=scratch_cpu" in extra:
        assert config.model.arch == "test_efficientnet_gn" and config.trainer.max_epochs <= 10
    else:
        assert config.model.arch == "mobilenetv2_100" and config.model.pretrained_path is None
    if extra and "submitit_slurm" in extra[0]:
        launcher = OmegaConf.to_container(full.hydra.launcher, resolve=True)
        assert launcher["partition"] == "gpu" and launcher["gpus_per_node"] == 1 and launcher["tasks_per_node"] == 1


def test_member_names_are_safe_and_distinct():
    names = {train_stage.member_name("10x", "mobilenetv2_100", seed, overrides)
             for seed in (0, 1) for overrides in ("", "model.optim.lr=0.003", "model.pretrained_path=/w/a b.pt")}
    assert len(names) == 6
    for name in names:
        assert Path(name).name == name and all(ch.isalnum() or ch in "._-" for ch in name)


def test_select_config_composes():
    cfg, _ = _compose("select", ["runs=r", "out=b"])
    config = select_stage.parse_config(cfg)
    assert config.k == 5 and config.resolutions == ("10x", "40x")
