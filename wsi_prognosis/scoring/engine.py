"""Batch inference: worker processes read and decode tiles, the main process runs every member.

One DataLoader streams fixed-size chunks of (slide, resolution) tile coordinates through
`reader.read(coords)` (a `wsi_prognosis.slides.TileReader`: picklable, opened lazily in each
worker) into pinned memory, `prefetch_batches` per worker ahead, so reading the next batch
overlaps running the current one. Each chunk is read once and fed to all members of its
resolution (channels_last; bf16 autocast on CUDA, float32 on CPU). Logits stay on the device until
a slide is complete, so the host never waits for the GPU between batches. A failed read becomes
an error for that slide, never for the batch.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from wsi_prognosis.errors import ConfigurationError, WsiPrognosisError
from wsi_prognosis.models.stain import StainFit, apply_od_matrix, od_matrix

log = logging.getLogger(__name__)


class TileSource(Protocol):
    def read(self, coords: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class EngineConfig:
    """How to run inference (never changes results beyond float tolerance)."""

    device: str = "auto"          # "auto" -> cuda when available, else cpu; or "cpu", "cuda", "cuda:1"
    batch_tiles: int = 256        # tiles per forward pass
    workers: int = 2              # reader processes (0 = read in the main process)
    prefetch_batches: int = 2     # batches each worker prepares ahead
    bf16: bool = True             # autocast to bfloat16 (CUDA only; CPU stays float32)
    channels_last: bool = True    # NHWC memory format (faster for convolutions on GPU and CPU)

    def __post_init__(self) -> None:
        if self.batch_tiles < 1:
            raise ConfigurationError(f"batch_tiles={self.batch_tiles} must be >= 1.")
        if self.workers < 0 or self.prefetch_batches < 1:
            raise ConfigurationError(f"workers={self.workers} must be >= 0 and prefetch_batches >= 1.")

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigurationError(f"device={self.device!r} but CUDA is not available here. Fix: device=cpu or device=auto.")
        return device


@dataclass(frozen=True)
class Preprocessing:
    """How training prepared a tile: RGB in [0, 1], then (x - mean) / std, at tile_px."""

    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    tile_px: int | None = None
    stain: StainFit | None = None     # the member's stain-normalisation target (models.stain), if trained with one

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> Preprocessing:
        mean = tuple(float(v) for v in spec.get("mean", cls.mean))
        std = tuple(float(v) for v in spec.get("std", cls.std))
        tile_px = spec.get("tile_px")
        stain = StainFit.from_dict(spec["stain"]) if spec.get("stain") else None
        return cls(mean=mean, std=std, tile_px=None if tile_px is None else int(tile_px), stain=stain)  # type: ignore[arg-type]


@dataclass
class LoadedMember:
    """A member that scores pixels: its CNN gives one logit per tile."""

    name: str
    resolution: str
    model: nn.Module
    preprocessing: Preprocessing


@dataclass
class TileEncoder:
    """A frozen encoder feeding feature heads: its output per tile is the (D,) embedding. `name` is the
    feature set's key (`features.FeatureSpec.key`), shared by every head trained on those features."""

    name: str
    resolution: str
    embed: Callable[[torch.Tensor], torch.Tensor]      # uint8 (B, H, W, 3) -> (B, D), TileEmbedder.embed_tensor
    stain_target: StainFit | None = None               # normalise onto this before embedding (the set's target)


class EnsembleRunner:
    """All members of a bundle on one device. Per resolution, each *output* is a pixel member's tile
    logits (B, 1) or a frozen encoder's embeddings (B, D) (heads pool those when a slide is complete);
    `outputs_on_device(res, tiles)` runs them on one batch, `logits(res, tiles)` the pixel members only."""

    def __init__(self, members: Sequence[LoadedMember], config: EngineConfig,
                 encoders: Sequence[TileEncoder] = ()) -> None:
        self.device = config.torch_device()
        self.cuda = self.device.type == "cuda"
        self.bf16 = config.bf16 and self.cuda
        self.channels_last = config.channels_last
        self.by_resolution: dict[str, list[LoadedMember]] = {}
        self.encoders: dict[str, list[TileEncoder]] = {}
        for encoder in encoders:
            self.encoders.setdefault(encoder.resolution, []).append(encoder)
        self._norm: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for m in members:
            m.model.eval().to(self.device)
            m.model.to(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
            self.by_resolution.setdefault(m.resolution, []).append(m)
            mean = torch.tensor(m.preprocessing.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
            std = torch.tensor(m.preprocessing.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
            self._norm[m.name] = (mean, std)

    def member_names(self, resolution: str) -> list[str]:
        """The pixel members of `resolution`, in bundle order."""
        return [m.name for m in self.by_resolution.get(resolution, [])]

    def output_names(self, resolution: str) -> list[str]:
        """Pixel members, then encoders: the order of `outputs_on_device`."""
        return self.member_names(resolution) + [e.name for e in self.encoders.get(resolution, [])]

    @property
    def resolutions(self) -> list[str]:
        return sorted(set(self.by_resolution) | set(self.encoders))

    def logits(self, resolution: str, tiles: torch.Tensor, stain: StainFit | None = None) -> np.ndarray:
        """tiles : (B, H, W, 3) uint8. Returns (M, B) float32 logits on the host."""
        return self.logits_on_device(resolution, tiles, stain).cpu().numpy()

    def uses_stain(self, resolution: str) -> bool:
        return (any(m.preprocessing.stain is not None for m in self.by_resolution.get(resolution, []))
                or any(e.stain_target is not None for e in self.encoders.get(resolution, [])))

    @torch.inference_mode()
    def outputs_on_device(self, resolution: str, tiles: torch.Tensor, stain: StainFit | None = None) -> list[torch.Tensor]:
        """One batch through every output of `resolution` (`output_names` order): (B, 1) tile logits of each
        pixel member, (B, D) embeddings of each encoder (stain-normalised onto its target first)."""
        outputs = [row[:, None] for row in self.logits_on_device(resolution, tiles, stain)] if self.by_resolution.get(resolution) else []
        for encoder in self.encoders.get(resolution, []):
            x = tiles
            if encoder.stain_target is not None:
                matrix = torch.from_numpy(od_matrix(stain, encoder.stain_target))
                x = apply_od_matrix(tiles.to(self.device), matrix).round_().to(torch.uint8)
            outputs.append(encoder.embed(x))
        return outputs

    @torch.inference_mode()
    def logits_on_device(self, resolution: str, tiles: torch.Tensor, stain: StainFit | None = None) -> torch.Tensor:
        """tiles : (B, H, W, 3) uint8 (CPU, ideally pinned, or on device) -> (M, B) float32 on device.

        `stain` is the slide's stain estimate: members trained with stain normalisation map the tiles
        onto their target first (one 3x3 product in optical density; identity without an estimate).
        Stays on the device (no synchronisation), so the next batch is queued while this one runs.
        """
        raw = tiles.to(self.device, non_blocking=True)
        x = raw.permute(0, 3, 1, 2).float().div_(255.0)
        normalised: dict[bytes, torch.Tensor] = {}
        outputs = []
        for m in self.by_resolution.get(resolution, []):
            px = m.preprocessing.tile_px
            if px is not None and (x.shape[-1] != px or x.shape[-2] != px):
                raise ValueError(f"member {m.name} takes {px}-px tiles, got {tuple(x.shape[-2:])}")
            mean, std = self._norm[m.name]
            xs = x
            if m.preprocessing.stain is not None:  # members sharing a target share the normalised batch
                key = m.preprocessing.stain.he.tobytes() + m.preprocessing.stain.max_c.tobytes()
                if key not in normalised:
                    matrix = torch.from_numpy(od_matrix(stain, m.preprocessing.stain))
                    normalised[key] = apply_od_matrix(raw, matrix).permute(0, 3, 1, 2).div_(255.0)
                xs = normalised[key]
            xm = (xs - mean) / std
            if self.channels_last:
                xm = xm.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                out = m.model(xm)
            outputs.append(out.float().reshape(out.shape[0], -1)[:, 0])
        return torch.stack(outputs)


@dataclass
class TileJob:
    """The tiles of one slide at one resolution."""

    slide_key: str
    resolution: str
    reader: TileSource
    coords: np.ndarray
    stain: StainFit | None = None     # the slide's stain estimate at this resolution (members with stain_norm)


class _ChunkDataset(Dataset):
    """Item i = one chunk of one job's coordinates, read to (B, H, W, 3) uint8 (or an error string)."""

    def __init__(self, jobs: Sequence[TileJob], batch_tiles: int) -> None:
        self.jobs = list(jobs)
        self.chunks: list[tuple[int, int, int]] = []
        for j, job in enumerate(self.jobs):
            for start in range(0, len(job.coords), batch_tiles):
                self.chunks.append((j, start, min(start + batch_tiles, len(job.coords))))

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, str]:
        j, start, stop = self.chunks[i]
        job = self.jobs[j]
        try:
            tiles = np.ascontiguousarray(job.reader.read(job.coords[start:stop]))
            return i, torch.from_numpy(tiles), ""
        except WsiPrognosisError as exc:
            return i, torch.empty(0, dtype=torch.uint8), str(exc)
        except Exception as exc:  # openslide / decoder errors: recorded for this slide, the batch goes on
            return i, torch.empty(0, dtype=torch.uint8), f"reading tiles failed: {type(exc).__name__}: {exc}"


@dataclass
class SlideLogits:
    """What the engine hands back per slide: per resolution, each output's (N, K) array (`outputs`:
    pixel members' tile logits with K = 1, encoders' embeddings with K = D), or the first error.
    `logits[res]` is the pixel members' (M, N) tile logits."""

    slide_key: str
    outputs: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    error: str = ""
    n_tiles: int = 0
    pixel_members: dict[str, list[str]] = field(default_factory=dict)

    @property
    def logits(self) -> dict[str, np.ndarray]:
        return {res: np.stack([outs[name][:, 0] for name in self.pixel_members.get(res, [])])
                if self.pixel_members.get(res) else np.zeros((0, len(next(iter(outs.values()), []))), np.float32)
                for res, outs in self.outputs.items()}


@dataclass
class EngineStats:
    tiles: int = 0
    seconds: float = 0.0

    @property
    def tiles_per_s(self) -> float:
        return self.tiles / self.seconds if self.seconds > 0 else 0.0


def _check_shared_memory(jobs: Sequence[TileJob], config: EngineConfig) -> None:
    """Warn when the batches in flight may not fit /dev/shm (worker processes hand tiles over there;
    containers often mount a small one, and running out kills a worker)."""
    if config.workers == 0 or not jobs:
        return
    tile_px = max(int(getattr(getattr(job.reader, "grid", None), "tile_px", 0)) for job in jobs)
    need = config.workers * config.prefetch_batches * config.batch_tiles * tile_px * tile_px * 3
    try:
        free = shutil.disk_usage("/dev/shm").free
    except OSError:
        return
    if need > 0.8 * free:
        log.warning(
            "batches in flight need about %.1f GB of shared memory but /dev/shm has %.1f GB free. Fix: lower "
            "engine.workers, engine.prefetch_batches or engine.batch_tiles (or run the container with a larger --shm-size).",
            need / 1e9, free / 1e9,
        )


def _stop_readers(batches: object) -> None:
    """Stop the loader's reader processes now, not when the iterator is garbage-collected.

    After a reader process dies, torch's SIGCHLD handler raises "DataLoader worker exited
    unexpectedly" in the main thread, at any later bytecode, for as long as the dead worker's pid
    stays registered; the pid is unregistered when the iterator shuts its workers down. An error
    raised inside the iterator (e.g. a connection reset while a dying worker hands over a batch)
    keeps it alive through the traceback, in the caller's `except` block, so without this the
    error struck inside the caller's recovery code (seen in CI, in a `log.error` call). Torch
    offers no public call for this; the attribute is looked up, so another loader is left alone.
    """
    shutdown = getattr(batches, "_shutdown_workers", None)  # torch's multi-process iterator only
    if shutdown is not None:
        shutdown()


def _concatenate(names: Sequence[str], chunks: Sequence[Sequence[torch.Tensor]]) -> dict[str, np.ndarray]:
    """Per output name, the (N, K) array of a slide's batches (batches x outputs -> outputs)."""
    if not chunks:
        return {name: np.zeros((0, 1), np.float32) for name in names}
    return {name: torch.cat([batch[j] for batch in chunks]).float().cpu().numpy() for j, name in enumerate(names)}


def run_jobs(
    jobs: Sequence[TileJob],
    runner: EnsembleRunner,
    config: EngineConfig,
    progress: Callable[[int], None] | None = None,
    stats: EngineStats | None = None,
) -> Iterator[SlideLogits]:
    """Run all jobs; yield each slide's logits as soon as its last chunk is done (job order kept).

    Jobs of one slide must be consecutive. `progress(n_tiles)` is called after every batch.
    """
    dataset = _ChunkDataset(jobs, config.batch_tiles)
    remaining: dict[str, int] = {}
    for j, _, _ in dataset.chunks:
        key = dataset.jobs[j].slide_key
        remaining[key] = remaining.get(key, 0) + 1
    results: dict[str, SlideLogits] = {}
    parts: dict[tuple[str, str], list[list[torch.Tensor]]] = {}
    jobs_of: dict[str, list[TileJob]] = {}
    for job in jobs:
        jobs_of.setdefault(job.slide_key, []).append(job)
    # slides whose jobs have no chunks (no tiles) finish at once, in order
    order = list(dict.fromkeys(job.slide_key for job in jobs))
    # more reader processes than cores only adds contention (results do not depend on the count)
    workers = min(config.workers, os.cpu_count() or 1)
    loader = DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        pin_memory=runner.cuda,
        prefetch_factor=config.prefetch_batches if workers > 0 else None,
        persistent_workers=False,
    )
    _check_shared_memory(jobs, config)
    started = time.perf_counter()
    next_out = 0

    def ready() -> Iterator[SlideLogits]:
        nonlocal next_out
        while next_out < len(order) and remaining.get(order[next_out], 0) == 0:
            key = order[next_out]
            result = results.pop(key, SlideLogits(key))
            for job in jobs_of[key]:
                chunks = parts.pop((key, job.resolution), [])
                if not result.error:
                    result.pixel_members[job.resolution] = runner.member_names(job.resolution)
                    result.outputs[job.resolution] = _concatenate(runner.output_names(job.resolution), chunks)
            next_out += 1
            yield result

    yield from ready()
    batches = iter(loader)
    try:
        for i, tiles, error in batches:
            j, start, stop = dataset.chunks[int(i)]
            job = dataset.jobs[j]
            result = results.setdefault(job.slide_key, SlideLogits(job.slide_key))
            if error and not result.error:
                result.error = error
            if not result.error:
                parts.setdefault((job.slide_key, job.resolution), []).append(
                    runner.outputs_on_device(job.resolution, tiles, job.stain))
                result.n_tiles += stop - start
                if stats is not None:
                    stats.tiles += stop - start
            if progress is not None:
                progress(stop - start)
            remaining[job.slide_key] -= 1
            yield from ready()
    finally:
        _stop_readers(batches)
    if runner.cuda:
        torch.cuda.synchronize(runner.device)
    if stats is not None:
        stats.seconds += time.perf_counter() - started
