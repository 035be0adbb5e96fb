"""Experiment tracking: the CSV log always, TensorBoard or MLflow beside it (`trainer.logger`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import pytorch_lightning as pl

from wsi_prognosis.errors import TrainingError
from wsi_prognosis.models.training import experiment_loggers


def test_tensorboard_logger_writes_events_beside_the_csv_log(tmp_path: Path):
    member = tmp_path / "runs" / "10x_m0"
    loggers = experiment_loggers("tensorboard", member, "10x_m0")
    assert [type(x) for x in loggers] == [pl.loggers.CSVLogger, pl.loggers.TensorBoardLogger]
    for logger in loggers:
        logger.log_metrics({"tune_c_index": 0.61}, step=0)
        logger.finalize("success")
    events = list((tmp_path / "runs" / "tensorboard" / "10x_m0").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file written"
    assert (member / "logs" / "metrics.csv").is_file()


def test_csv_alone_by_default(tmp_path: Path):
    assert [type(x) for x in experiment_loggers("csv", tmp_path / "m", "m")] == [pl.loggers.CSVLogger]


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is not None, reason="mlflow is installed here")
def test_mlflow_without_its_package_names_the_fix(tmp_path: Path):
    with pytest.raises(TrainingError, match=r"wsi-prognosis\[tracking\]"):
        experiment_loggers("mlflow", tmp_path / "m", "m")


def test_unknown_logger_is_refused(tmp_path: Path, capsys):
    from wsi_prognosis.cli import main

    assert main(["train", "manifest=m.csv", "clinical=c.csv", "tiles=t", f"out={tmp_path}", "trainer.logger=wandb"]) == 2
    assert "trainer.logger='wandb'" in capsys.readouterr().err
