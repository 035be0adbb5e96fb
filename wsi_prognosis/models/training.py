"""Train one ensemble member end to end: labels -> bags -> Lightning fit -> member folder.

A *recipe* prepares what is trained: `prepare_pixels` (encoder=none, a CNN from scratch on pixels),
`feature_training.prepare_features` (a head on a frozen encoder's cached features) or
`finetune_training.prepare_finetune` (model.finetune=all|last:N: the encoder and a head on pixels).
Called by `stages/train.py` with a validated `TrainConfig`. Writes, in the member folder:
member.json (name, resolution, arch, pooling, preprocessing, tile_spec, seed, config),
metrics.json (per-epoch and best tuning metrics), best.pt (the best epoch's backbone
state_dict), last.ckpt / best.ckpt (Lightning, for resume) and run_train.json (provenance).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch

from wsi_prognosis.atomic import atomic_path, write_text_atomic
from wsi_prognosis.cohort import read_clinical, read_manifest
from wsi_prognosis.cohort.labels import outcome_labels, training_labels
from wsi_prognosis.errors import TrainingError
from wsi_prognosis.models.backbone import default_preprocessing
from wsi_prognosis.models.config import config_record
from wsi_prognosis.models.data import BagDataModule, usable_slides, with_stain_normalisation
from wsi_prognosis.models.lit import METRIC_KEYS, MilModule
from wsi_prognosis.provenance import write_run_record
from wsi_prognosis.tiling import open_tile_store

if TYPE_CHECKING:
    from wsi_prognosis.models.config import TrainConfig

log = logging.getLogger(__name__)

MEMBER_FILE, METRICS_FILE, BEST_WEIGHTS = "member.json", "metrics.json", "best.pt"
TUNING_SCORES = "tuning_scores.csv"


def tuning_table(manifest: pd.DataFrame, clinical: pd.DataFrame, config: "TrainConfig") -> pd.DataFrame:
    """Tuning-cohort slides with their patient's time, event and label (good/poor/excluded)."""
    cohort = config.data.tune_cohort
    slides = manifest[manifest["cohort"] == cohort]
    if slides.empty:
        raise TrainingError(
            f"{config.manifest}: no slides with cohort={cohort!r}; each epoch scores the tuning cohort to pick the best "
            "checkpoint. Fix: add tuning slides, or set data.tune_cohort to the cohort to tune on."
        )
    patients = clinical.copy()
    patients["label"] = outcome_labels(patients, config.labels)
    table = slides.merge(patients[["patient_id", "time", "event", "label"]], on="patient_id", how="inner")
    if len(table) < len(slides):
        log.warning("%s: %d tuning slide(s) have no clinical row and are not scored", config.clinical, len(slides) - len(table))
    if table.empty:
        raise TrainingError(f"{config.clinical}: none of the tuning patients has a clinical row. Fix: add them.")
    return table.reset_index(drop=True)


def tile_spec_from_store(tiles_file: str) -> dict[str, Any]:
    """The tile specification recorded in a tile store (what `score` must tile with)."""
    with open_tile_store(tiles_file) as store:
        tiling = dict(store.tiling)
        if "resolutions" not in tiling:
            tiling["resolutions"] = {r: {"mpp": store.grid(r).mpp, "tile_px": store.grid(r).tile_px} for r in store.resolutions}
    return {k: tiling[k] for k in ("resolutions", "min_tissue_fraction", "tissue") if k in tiling}


def check_grids(grids: list[tuple[int, float]], resolution: str) -> tuple[int, float]:
    """The one (tile_px, mpp) every slide's grid at `resolution` has; TrainingError otherwise."""
    specs = {(int(px), round(float(mpp), 6)) for px, mpp in grids}
    if len(specs) != 1:
        raise TrainingError(
            f"tile stores disagree on the {resolution} grid (tile_px, mpp): {sorted(specs)}. "
            "Fix: tile every slide with the same tiling configuration."
        )
    tile_px, mpp = specs.pop()
    return tile_px, mpp


def _is_gpu(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def _strategy(name: str, accelerator: str) -> Any:
    """`ddp` started by hand (not by SLURM/torchrun) spawns its processes instead of re-running the
    command line: the `wsi-prognosis` entry point rewrites argv, so Lightning's re-launch cannot."""
    if name != "ddp":
        return name
    from lightning_fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
    from pytorch_lightning.strategies import DDPStrategy

    if SLURMEnvironment.detect() or TorchElasticEnvironment.detect() or "LOCAL_RANK" in os.environ:
        return DDPStrategy(process_group_backend=None if _is_gpu(accelerator) else "gloo")
    return DDPStrategy(start_method="spawn", process_group_backend=None if _is_gpu(accelerator) else "gloo")


class MetricsWriter(pl.Callback):
    """Rewrite metrics.json after every tuning epoch (rank 0), so progress is visible mid-run."""

    def __init__(self, path: Path, monitor: str, extra: dict[str, Any]) -> None:
        self.path, self.monitor, self.extra = path, monitor, extra

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            write_metrics(self.path, pl_module.history, self.monitor, finished=False, extra=self.extra)
            scores = getattr(pl_module, "last_tune_scores", None)
            if scores is not None and pl_module.history and best_epoch(pl_module.history, self.monitor) is pl_module.history[-1]:
                # the tuning scores of the best epoch so far, for checks against a permutation null
                write_text_atomic(self.path.parent / TUNING_SCORES, scores.assign(epoch=pl_module.history[-1]["epoch"])
                                  .to_csv(index=False))


def best_epoch(history: list[dict[str, Any]], monitor: str) -> dict[str, Any] | None:
    """The epoch with the highest monitored metric (first on ties; NaN never wins over a number)."""
    best = None
    for row in history:
        value = row.get(monitor, float("nan"))
        if best is None:
            best = row
            continue
        current = best.get(monitor, float("nan"))
        if not math.isnan(value) and (math.isnan(current) or value > current):
            best = row
    return best


def write_metrics(path: Path, history: list[dict[str, Any]], monitor: str, *, finished: bool,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    best = best_epoch(history, monitor)
    record = _clean({"monitor": monitor, "finished": finished, "epochs": history, "best": best, **(extra or {})})
    write_text_atomic(path, json.dumps(record, indent=2, default=_json_nan) + "\n")
    return record


def _json_nan(value: Any) -> Any:
    return str(value)


def _clean(value: Any) -> Any:
    """NaN -> None recursively (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _finished(member_dir: Path) -> dict[str, Any] | None:
    try:
        metrics = json.loads((member_dir / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return None
    if metrics.get("finished") and (member_dir / BEST_WEIGHTS).is_file() and (member_dir / MEMBER_FILE).is_file():
        return metrics
    return None


def train_member(config: "TrainConfig") -> dict[str, Any]:
    """Train (or resume, or skip when finished) one member; returns metrics.json's content."""
    member_dir = config.member_dir
    member_dir.mkdir(parents=True, exist_ok=True)
    last_ckpt = member_dir / "last.ckpt"
    if config.resume:
        done = _finished(member_dir)
        if done is not None:
            log.info("%s: already trained (metrics.json finished); skipping. Use resume=false to retrain.", member_dir)
            return done
    elif last_ckpt.exists():
        log.warning("%s: resume=false, starting over (existing checkpoints are replaced)", member_dir)
        for name in ("last.ckpt", "best.ckpt", BEST_WEIGHTS, METRICS_FILE, TUNING_SCORES):
            (member_dir / name).unlink(missing_ok=True)

    manifest = read_manifest(config.manifest)
    clinical = read_clinical(config.clinical)
    uses_cox = "cox" in config.model.loss
    train_table, counts = training_labels(manifest, clinical, config.labels, cohort=config.data.train_cohort,
                                          source=str(config.clinical), keep_excluded=uses_cox)
    print(f"training labels ({config.data.train_cohort} patients): good={counts['good']} poor={counts['poor']} "
          f"excluded={counts['excluded']}" + (" (kept: the Cox loss uses every patient)" if uses_cox else ""), flush=True)
    tune_table = tuning_table(manifest, clinical, config)
    from wsi_prognosis.encoders import SCRATCH, get_encoder

    from wsi_prognosis.encoders.blocks import parse_finetune

    scratch = get_encoder(config.encoder.name).kind == SCRATCH
    if scratch:
        prepared = prepare_pixels(config, train_table, tune_table)
    elif parse_finetune(config.model.finetune).enabled:
        from wsi_prognosis.models.finetune_training import prepare_finetune

        prepared = prepare_finetune(config, train_table, tune_table)
    else:
        from wsi_prognosis.models.feature_training import prepare_features

        prepared = prepare_features(config, train_table, tune_table)
    log.info("%s: %d training slides (%d tiles at %s), %d tuning slides", config.member, len(prepared.train_bags),
             prepared.n_tiles, config.resolution, len(prepared.tune_bags))
    member_record = {
        "name": config.member, "resolution": config.resolution, **prepared.record, "seed": config.seed,
        "label_counts": counts, "left_out": prepared.left_out, "config": config_record(config),
    }
    write_text_atomic(member_dir / MEMBER_FILE, json.dumps(member_record, indent=2) + "\n")

    pl.seed_everything(config.seed, workers=True)
    datamodule, module = prepared.build()
    t = config.trainer
    gpu = _is_gpu(t.accelerator)
    threads = t.cpu_threads if t.cpu_threads is not None else prepared.cpu_threads
    if threads and not gpu:
        torch.set_num_threads(int(threads))
    precision = t.precision if t.precision != "auto" else ("bf16-mixed" if gpu else "32-true")
    deterministic = (not gpu) if t.deterministic == "auto" else t.deterministic
    monitor_key = METRIC_KEYS[t.monitor]
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=member_dir, filename="best", monitor=monitor_key, mode="max", save_top_k=1, save_last=True,
        every_n_epochs=1, enable_version_counter=False, auto_insert_metric_name=False,
    )
    resumed_from = None
    ckpt_path = None
    if config.resume and last_ckpt.is_file():
        ckpt_path = str(last_ckpt)
        try:
            resumed_from = int(torch.load(last_ckpt, map_location="cpu", weights_only=False)["epoch"])
        except Exception as exc:
            raise TrainingError(f"{last_ckpt}: cannot be read to resume ({exc}). Fix: rerun with resume=false.") from exc
        log.info("%s: resuming from %s (epoch %d done)", config.member, last_ckpt, resumed_from + 1)
        print(f"resuming from {last_ckpt} after epoch {resumed_from}", flush=True)
    extra = {"member": config.member, "resolution": config.resolution, "resumed_from_epoch": resumed_from}
    callbacks: list[pl.Callback] = [checkpoint, MetricsWriter(member_dir / METRICS_FILE, t.monitor, extra)]
    if t.early_stopping_patience and t.early_stopping_patience > 0:
        callbacks.append(pl.callbacks.EarlyStopping(monitor=monitor_key, mode="max", patience=t.early_stopping_patience,
                                                    check_finite=False))
    # small cohorts have fewer steps per epoch than the logging interval; the metrics are written per epoch
    # (MetricsWriter) anyway, so Lightning's warning about it would only repeat once per member
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging")
    trainer = pl.Trainer(
        default_root_dir=str(member_dir), max_epochs=t.max_epochs, accelerator=t.accelerator, devices=t.devices,
        num_nodes=t.num_nodes, strategy=_strategy(t.strategy, t.accelerator), precision=precision,
        deterministic=deterministic, callbacks=callbacks, log_every_n_steps=t.log_every_n_steps,
        limit_train_batches=t.limit_train_batches, num_sanity_val_steps=t.num_sanity_val_steps,
        enable_progress_bar=t.enable_progress_bar,
        logger=experiment_loggers(t.logger, member_dir, config.member),
        enable_model_summary=False,
    )
    started = time.time()
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    if not trainer.is_global_zero:
        return {}
    return finish_member(member_dir, config, t.monitor, prefix=prepared.prefix, on_weights=prepared.on_weights,
                         extra={**extra, "train_seconds": round(time.time() - started, 1), "n_train_tiles": prepared.n_tiles})


@dataclass
class Prepared:
    """What a recipe (pixels from scratch, or heads on cached features) hands the common training loop."""

    train_bags: list[Any]
    tune_bags: list[Any]
    left_out: dict[str, list[str]]
    n_tiles: int
    record: dict[str, Any]                  # member.json fields: arch, pooling, preprocessing, tile_spec, ...
    build: Callable[[], tuple[pl.LightningDataModule, pl.LightningModule]]
    prefix: str                             # of the network's keys in the Lightning state dict
    # best.pt's state -> member.json fields to add (a fine-tuned member records its own encoder's sha256)
    on_weights: Callable[[dict[str, torch.Tensor]], dict[str, Any]] | None = None
    cpu_threads: int | None = None          # torch threads on a CPU unless trainer.cpu_threads says (None: all)


def pixel_bags(config: "TrainConfig", train_table: pd.DataFrame, tune_table: pd.DataFrame
               ) -> tuple[list[Any], list[Any], dict[str, list[str]], int, float]:
    """The training and tuning slides with tiles at the member's resolution (the others left out, by
    name), checked to be enough and on one grid: (train bags, tune bags, left out, tile px, µm/px)."""
    res = config.resolution
    options = dict(min_tissue_fraction=config.data.min_tissue_fraction, verify_fingerprints=config.data.verify_fingerprints)
    train_bags, train_empty = usable_slides(train_table, config.tiles, res, **options)
    tune_bags, tune_empty = usable_slides(tune_table, config.tiles, res, **options)
    left_out = {"training": train_empty, "tuning": tune_empty}
    check_usable(train_bags, tune_bags, left_out, res, config)
    tile_px, mpp = check_grids([(b.grid.tile_px, b.grid.mpp) for b in train_bags + tune_bags], res)
    return train_bags, tune_bags, left_out, tile_px, mpp


def prepare_pixels(config: "TrainConfig", train_table: pd.DataFrame, tune_table: pd.DataFrame) -> Prepared:
    """encoder=none: a timm CNN trained from scratch on bags of tile pixels (DoMore's own way)."""
    train_bags, tune_bags, left_out, tile_px, mpp = pixel_bags(config, train_table, tune_table)
    preprocessing = default_preprocessing(config.model.arch, tile_px=tile_px, mpp=mpp).to_dict()
    train_bags, tune_bags, stain_unfitted = stain_normalised(config, train_bags, tune_bags, preprocessing)

    def build() -> tuple[pl.LightningDataModule, pl.LightningModule]:
        return (BagDataModule(train_bags, tune_bags, config.data),
                MilModule(arch=config.model.arch, preprocessing=preprocessing, pooling=config.model.pooling,
                          optim=config.model.optim, pretrained_path=config.model.pretrained_path,
                          loss=config.model.loss, cox_weight=config.model.cox_weight))

    record = {"arch": config.model.arch, "encoder": None, "pooling": config.model.pooling, "preprocessing": preprocessing,
              "tile_spec": tile_spec_from_store(train_bags[0].tiles_file), "stain_unfitted": stain_unfitted}
    return Prepared(train_bags, tune_bags, left_out, int(sum(b.n_tiles for b in train_bags)), record, build, "backbone.")


def stain_normalised(config: "TrainConfig", train_bags: list[Any], tune_bags: list[Any],
                     preprocessing: dict[str, Any]) -> tuple[list[Any], list[Any], list[str]]:
    """With data.stain_norm=macenko, pixel bags with their slide's stain matrix onto the training slides' median
    target (recorded in `preprocessing["stain"]`, applied again at score time); the slides whose stain could
    not be estimated are returned (left as they are)."""
    if config.data.stain_norm != "macenko":
        return train_bags, tune_bags, []
    train_bags, target, unfitted = with_stain_normalisation(train_bags)
    tune_bags, _, tune_unfitted = with_stain_normalisation(tune_bags, target)
    unfitted += tune_unfitted
    preprocessing["stain"] = {"method": "macenko", **target.to_dict()}
    if unfitted:
        log.warning("%s: stain not estimable on %d slide(s) (too little stained tissue), left as they are: %s",
                    config.member, len(unfitted), unfitted[:5])
    return train_bags, tune_bags, unfitted


def check_usable(train_bags: list[Any], tune_bags: list[Any], left_out: dict[str, list[str]], res: str,
                 config: "TrainConfig") -> None:
    """Slides without tiles at `res` were left out; stop only when a cohort has nothing left to learn from."""
    for cohort, ids in left_out.items():
        if ids:
            print(f"{config.member}: {len(ids)} {cohort} slide(s) without {res} tiles left out: {', '.join(ids[:10])}"
                  + (" ..." if len(ids) > 10 else ""), flush=True)
    if "bce" in config.model.loss:  # the good/poor labels are needed
        missing = [name for name, y in (("good", 0.0), ("poor", 1.0)) if not any(b.y == y for b in train_bags)]
        if missing:
            raise TrainingError(
                f"{config.manifest}: no usable {' or '.join(missing)}-prognosis training slide at {res} (left out for "
                f"having no tiles: {left_out['training'][:5]}). Fix: check those slides and their tissue masks.")
    elif not any(b.event for b in train_bags):
        raise TrainingError(f"{config.manifest}: no usable training slide of a patient with an event at {res}. "
                            "Fix: check the slides and the clinical table.")
    if not tune_bags:
        raise TrainingError(f"{config.manifest}: no usable tuning slide at {res} (all left out for having no tiles). "
                            "Fix: check the tuning slides.")


def experiment_loggers(kind: str, member_dir: Path, member: str) -> list[Any]:
    """The CSV log (always: metrics.json and the tests read it) plus TensorBoard or MLflow when asked."""
    loggers: list[Any] = [pl.loggers.CSVLogger(str(member_dir), name="logs", version="")]
    try:
        if kind == "tensorboard":
            loggers.append(pl.loggers.TensorBoardLogger(str(member_dir.parent / "tensorboard"), name=member, version=""))
        elif kind == "mlflow":
            loggers.append(pl.loggers.MLFlowLogger(experiment_name="wsi-prognosis", run_name=member,
                                                   tracking_uri=f"file:{member_dir.parent / 'mlruns'}"))
    except ImportError as exc:
        raise TrainingError(f"trainer.logger={kind}: its package is not installed ({exc}). Fix: "
                            "pip install 'wsi-prognosis[tracking]', or trainer.logger=csv.") from exc
    return loggers


def finish_member(member_dir: Path, config: "TrainConfig", monitor: str, extra: dict[str, Any],
                  prefix: str = "backbone.",
                  on_weights: Callable[[dict[str, torch.Tensor]], dict[str, Any]] | None = None) -> dict[str, Any]:
    """best.ckpt -> best.pt (the network's state_dict only: `prefix` backbone., head. or network.), member.json
    completed by `on_weights` (before metrics.json says finished), final metrics.json, run_train.json."""
    best_ckpt = member_dir / "best.ckpt"
    source = best_ckpt if best_ckpt.is_file() else member_dir / "last.ckpt"
    if not source.is_file():
        raise TrainingError(f"{member_dir}: training ended without a checkpoint. Fix: check the log and rerun.")
    checkpoint = torch.load(source, map_location="cpu", weights_only=False)
    history = list(checkpoint.get("wsi_history", []))
    if (member_dir / "last.ckpt").is_file():
        history = list(torch.load(member_dir / "last.ckpt", map_location="cpu", weights_only=False).get("wsi_history", history))
    try:  # MetricsWriter rewrites metrics.json after every tuning epoch (rank 0): the most complete history
        written = json.loads((member_dir / METRICS_FILE).read_text()).get("epochs") or []
    except (OSError, ValueError):
        written = []
    if len(written) > len(history):
        history = [{k: (float("nan") if v is None else v) for k, v in row.items()} for row in written]
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    with atomic_path(member_dir / BEST_WEIGHTS) as tmp:
        torch.save(state, tmp)
    if on_weights is not None:
        member = json.loads((member_dir / MEMBER_FILE).read_text())
        for key, value in on_weights(state).items():
            member[key] = {**member[key], **value} if isinstance(value, dict) and isinstance(member.get(key), dict) else value
        write_text_atomic(member_dir / MEMBER_FILE, json.dumps(member, indent=2) + "\n")
    best_epoch_index = int(checkpoint["epoch"])
    best = next((row for row in history if row["epoch"] == best_epoch_index), None)
    record = write_metrics(member_dir / METRICS_FILE, history, monitor, finished=False,
                           extra={**extra, "best_checkpoint_epoch": best_epoch_index})
    record["best"] = _clean(best) if best is not None else record["best"]
    record["finished"] = True
    write_text_atomic(member_dir / METRICS_FILE, json.dumps(record, indent=2, default=_json_nan) + "\n")
    write_run_record(member_dir, "train", config_record(config),
                     inputs={"manifest": config.manifest, "clinical": config.clinical}, seed=config.seed,
                     extra={"member": config.member, "best": record["best"]})
    log.info("%s: best epoch %s %s=%s", config.member, best_epoch_index, monitor, (record["best"] or {}).get(monitor))
    return record


__all__ = ["train_member", "finish_member", "tuning_table", "best_epoch", "np"]
