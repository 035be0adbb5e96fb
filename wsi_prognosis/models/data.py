"""Bags of tiles per slide for multiple-instance training, one resolution per member.

Tile coordinates come from `tiles/<slide_id>.h5` (`wsi_prognosis.tiling.open_tile_store`),
pixels from the slide through `wsi_prognosis.slides.TileReader`, which opens the slide lazily,
once per worker process. Each worker keeps the decoded tiles of a slide in memory while they
fit `cache_mb`, so after the first epoch a small cohort is read from RAM.

All checks happen in `prepare_slides`, before any training: a missing tiles file, a slide
changed since tiling (fingerprint) or a resolution not tiled each stop the run with an error
naming the file and the fix. A slide with no tiles at the resolution (a blank crop, tissue below
the threshold) is an error there too, or, through `usable_slides` (what training uses), left out
and named: one blank slide of hundreds must not stop a training sweep.

With `stain_norm=macenko` every bag carries its slide's stain matrix (`models.stain`), fitted once
on a fixed sample of the slide's tiles; items hand it on and the module applies it per batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from wsi_prognosis.errors import TrainingError
from wsi_prognosis.models.augment import AugmentConfig, augment_bag
from wsi_prognosis.models.stain import FIT_TILES, evenly_spaced
from wsi_prognosis.slides import TileReader
from wsi_prognosis.tiling import GridSpec, open_tile_store, tile_store_path

if TYPE_CHECKING:
    from wsi_prognosis.models.stain import StainFit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataConfig:
    """How bags are drawn and loaded (the `data/` config group)."""

    bag_size: int = 32              # tiles drawn per slide per training step
    batch_size: int = 4             # slides (bags) per step
    bags_per_slide: int = 1         # bags per slide per epoch (>1 for small cohorts: fewer, longer epochs)
    eval_max_tiles: int = 256       # tiles scored per tuning slide per epoch (evenly spaced, fixed)
    min_tissue_fraction: float = 0.0  # extra filter on top of the tiling threshold
    num_workers: int = 2
    cache_mb: float = 1024.0        # decoded tiles kept in RAM per worker process
    verify_fingerprints: bool = True
    train_cohort: str = "training"
    tune_cohort: str = "tuning"
    stain_norm: str = "none"        # none | macenko: per-slide stain normalisation (models.stain)
    use_views: bool = True          # heads on features: draw tiles from their augmented views too (embed views=N)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class SlideBag:
    """One slide at one resolution: where its pixels are and which tiles it has."""

    slide_id: str
    patient_id: str
    slide_path: str
    tiles_file: str
    grid: GridSpec
    slide_mpp: float
    coords: np.ndarray            # (N, 2) int64 level-0 x, y
    y: float = float("nan")       # 1 = poor, 0 = good (training only)
    time: float = float("nan")
    event: int = 0
    label: str = ""
    stain: np.ndarray | None = None  # (3, 3) optical-density matrix of stain normalisation, or None

    @property
    def n_tiles(self) -> int:
        return int(len(self.coords))


def prepare_slides(table: pd.DataFrame, tiles_dir: str | Path, resolution: str, *,
                   min_tissue_fraction: float = 0.0, verify_fingerprints: bool = True) -> list[SlideBag]:
    """A `SlideBag` per row of `table` (manifest rows, plus y/time/event/label when present).

    Raises `TileStoreError` (missing or unreadable tiles file, resolution not tiled),
    `FingerprintMismatchError` (slide changed since tiling) and `TrainingError` (empty bag).
    """
    return _prepare(table, tiles_dir, resolution, min_tissue_fraction, verify_fingerprints, skip_empty=False)[0]


def usable_slides(table: pd.DataFrame, tiles_dir: str | Path, resolution: str, *,
                  min_tissue_fraction: float = 0.0, verify_fingerprints: bool = True) -> tuple[list[SlideBag], list[str]]:
    """As `prepare_slides`, but a slide without tiles at `resolution` is left out: (bags, left-out slide ids)."""
    return _prepare(table, tiles_dir, resolution, min_tissue_fraction, verify_fingerprints, skip_empty=True)


def _prepare(table: pd.DataFrame, tiles_dir: str | Path, resolution: str, min_tissue_fraction: float,
             verify_fingerprints: bool, *, skip_empty: bool) -> tuple[list[SlideBag], list[str]]:
    bags: list[SlideBag] = []
    empty: list[str] = []
    for row in table.itertuples(index=False):
        path = tile_store_path(tiles_dir, row.slide_id)
        with open_tile_store(path) as store:
            if verify_fingerprints:
                store.verify_slide(row.path)
            grid = store.grid(resolution)
            coords = store.coords(resolution)
            if min_tissue_fraction > 0:
                coords = coords[store.tissue_fraction(resolution) >= min_tissue_fraction]
            slide_mpp = store.mpp
        if len(coords) == 0 and skip_empty:
            log.warning("%s: slide %s has no %s tiles (blank, or no tissue above the threshold): left out",
                        path, row.slide_id, resolution)
            empty.append(str(row.slide_id))
            continue
        if len(coords) == 0:
            raise TrainingError(
                f"{path}: slide {row.slide_id} has no {resolution} tiles (empty bag) — no tissue passed the "
                f"threshold (data.min_tissue_fraction={min_tissue_fraction}). Fix: check the slide and its tissue "
                "mask, lower the tissue threshold and re-tile, or remove the slide from the manifest."
            )
        bags.append(SlideBag(
            slide_id=str(row.slide_id), patient_id=str(row.patient_id), slide_path=str(row.path),
            tiles_file=str(path), grid=grid, slide_mpp=float(slide_mpp), coords=coords,
            y=float(getattr(row, "y", float("nan"))), time=float(getattr(row, "time", float("nan"))),
            event=int(getattr(row, "event", 0)), label=str(getattr(row, "label", "")),
        ))
    return bags, empty


def with_stain_normalisation(bags: list[SlideBag], target: "StainFit | None" = None,
                             cache_mb: float = 0.0) -> tuple[list[SlideBag], "StainFit", list[str]]:
    """Fit each slide's stain (fixed sample of its tiles) and give every bag its matrix onto `target`
    (None: the median of these slides' fits, i.e. the training slides'). Returns (bags, target,
    slides whose stain could not be estimated: identity)."""
    from dataclasses import replace

    from wsi_prognosis.models.stain import fit_stain, median_target, od_matrix

    pixels = TilePixels(bags, cache_mb)
    fits = [fit_stain(pixels.read(i, eval_tile_index(b.n_tiles, FIT_TILES))) for i, b in enumerate(bags)]
    target = target if target is not None else median_target(fits)
    unfitted = [b.slide_id for b, f in zip(bags, fits) if f is None]
    return ([replace(b, stain=od_matrix(f, target).astype(np.float32)) for b, f in zip(bags, fits)],
            target, unfitted)


class TilePixels:
    """Tile pixels of many slides: one lazy TileReader per slide, decoded tiles cached within `cache_mb`.

    Picklable (readers reopen in each process); each process keeps its own cache.
    """

    def __init__(self, bags: list[SlideBag], cache_mb: float) -> None:
        self.bags = bags
        self.cache_bytes = int(cache_mb * 2**20)
        self._readers: dict[int, TileReader] = {}
        self._cache: dict[int, np.ndarray] = {}
        self._used = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_readers={}, _cache={}, _used=0)
        return state

    def _reader(self, i: int) -> TileReader:
        reader = self._readers.get(i)
        if reader is None:
            bag = self.bags[i]
            reader = self._readers[i] = TileReader(bag.slide_path, bag.grid, bag.slide_mpp)
        return reader

    def read(self, i: int, index: np.ndarray) -> np.ndarray:
        """(len(index), tile_px, tile_px, 3) uint8 tiles `index` of slide `i`."""
        cached = self._cache.get(i)
        if cached is None:
            bag = self.bags[i]
            px = bag.grid.tile_px
            size = bag.n_tiles * px * px * 3
            if self._used + size <= self.cache_bytes:
                cached = self._cache[i] = self._reader(i).read(bag.coords)
                self._used += size
                self._readers.pop(i).close()
            else:
                return self._reader(i).read(bag.coords[index])
        return cached[index]


def _stain_tensor(bag: SlideBag) -> torch.Tensor:
    return torch.from_numpy(bag.stain if bag.stain is not None else np.eye(3, dtype=np.float32))


def _item_rng() -> np.random.Generator:
    """A numpy generator drawn from torch's RNG: seeded by `seed_everything` in the main process and
    by Lightning's worker init in workers, so bags and augmentations repeat with the seed."""
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))


class TrainBags(Dataset):
    """Item k: a random bag of `bag_size` tiles of slide k % n, flipped and rotated, with the colour and
    blur parameters the module applies batched (`augment.augment_batch`); (tiles uint8, y, slide index,
    params (bag_size, N_PARAMS) float32, stain matrix (3, 3), time, event)."""

    def __init__(self, bags: list[SlideBag], config: DataConfig) -> None:
        self.bags = bags
        self.config = config
        self.pixels = TilePixels(bags, config.cache_mb)

    def __len__(self) -> int:
        return len(self.bags) * self.config.bags_per_slide

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
        i = k % len(self.bags)
        bag = self.bags[i]
        rng = _item_rng()
        size = self.config.bag_size
        index = rng.choice(bag.n_tiles, size=size, replace=bag.n_tiles < size)
        tiles = self.pixels.read(i, np.sort(index))
        tiles, params = augment_bag(tiles, rng, self.config.augment)  # identity params when switched off
        return (torch.from_numpy(np.ascontiguousarray(tiles)), torch.tensor(bag.y, dtype=torch.float32), i,
                torch.from_numpy(params), _stain_tensor(bag), torch.tensor(bag.time, dtype=torch.float32),
                torch.tensor(bag.event, dtype=torch.float32))


def eval_tile_index(n_tiles: int, max_tiles: int) -> np.ndarray:
    """The fixed tiles a slide is scored on: all, or `max_tiles` evenly spaced."""
    return evenly_spaced(n_tiles, max_tiles)


class EvalBags(Dataset):
    """Item i: the fixed evaluation tiles of slide i, not augmented; (tiles uint8, slide index, stain matrix)."""

    def __init__(self, bags: list[SlideBag], config: DataConfig) -> None:
        self.bags = bags
        self.config = config
        self.pixels = TilePixels(bags, config.cache_mb)

    def __len__(self) -> int:
        return len(self.bags)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        index = eval_tile_index(self.bags[i].n_tiles, self.config.eval_max_tiles)
        return torch.from_numpy(np.ascontiguousarray(self.pixels.read(i, index))), i, _stain_tensor(self.bags[i])


class BagDataModule(pl.LightningDataModule):
    """Training bags (labelled slides of the training cohort) and tuning slides, one resolution."""

    def __init__(self, train_bags: list[SlideBag], tune_bags: list[SlideBag], config: DataConfig) -> None:
        super().__init__()
        if not train_bags:
            raise TrainingError("no labelled training slides. Fix: check the manifest cohorts and clinical labels.")
        self.train_bags = train_bags
        self.tune_bags = tune_bags
        self.config = config

    @property
    def tune_outcomes(self) -> pd.DataFrame:
        return pd.DataFrame({
            "slide_id": [b.slide_id for b in self.tune_bags], "patient_id": [b.patient_id for b in self.tune_bags],
            "time": [b.time for b in self.tune_bags], "event": [b.event for b in self.tune_bags],
            "label": [b.label for b in self.tune_bags],
        })

    def _loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        workers = self.config.num_workers
        return DataLoader(dataset, num_workers=workers, persistent_workers=workers > 0,
                          pin_memory=torch.cuda.is_available(), **kwargs)

    def train_dataloader(self) -> DataLoader:
        return self._loader(TrainBags(self.train_bags, self.config), batch_size=self.config.batch_size,
                            shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(EvalBags(self.tune_bags, self.config), batch_size=1, shuffle=False)
