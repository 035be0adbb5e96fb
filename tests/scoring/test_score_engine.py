"""The inference engine against plain modules and a synthetic reader: batching, workers, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from wsi_prognosis.errors import SlideReadError
from wsi_prognosis.scoring.engine import EngineConfig, EnsembleRunner, LoadedMember, Preprocessing, TileJob, run_jobs


class PatternReader:
    """Deterministic pixels from coordinates (picklable, like TileReader); optionally fails."""

    def __init__(self, tile_px: int, fail_from: int | None = None) -> None:
        self.tile_px = tile_px
        self.fail_from = fail_from

    def read(self, coords: np.ndarray) -> np.ndarray:
        if self.fail_from is not None and int(coords[:, 0].max()) >= self.fail_from:
            raise SlideReadError("fake.svs: Bogus marker length")
        out = np.empty((len(coords), self.tile_px, self.tile_px, 3), np.uint8)
        for i, (x, y) in enumerate(coords):
            rng = np.random.default_rng(int(x) * 7919 + int(y))
            out[i] = rng.integers(0, 256, (self.tile_px, self.tile_px, 3), dtype=np.uint8)
        return out


def tiny_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1))


def members() -> list[LoadedMember]:
    prep10 = Preprocessing(tile_px=16)
    prep40 = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), tile_px=8)
    return [
        LoadedMember("a10", "10x", tiny_net(0), prep10), LoadedMember("b10", "10x", tiny_net(1), prep10),
        LoadedMember("a40", "40x", tiny_net(2), prep40),
    ]


def jobs(n_slides: int = 3, fail_slide: int | None = None) -> list[TileJob]:
    out = []
    for s in range(n_slides):
        c10 = np.stack([np.arange(5 + s) * 100 + s * 10_000, np.zeros(5 + s, int)], axis=1).astype(np.int64)
        c40 = np.stack([np.arange(13 + 2 * s) * 25 + s * 10_000, np.ones(13 + 2 * s, int)], axis=1).astype(np.int64)
        fail = s * 10_000 + 200 if s == fail_slide else None
        out.append(TileJob(f"s{s}", "10x", PatternReader(16, fail), c10))
        out.append(TileJob(f"s{s}", "40x", PatternReader(8), c40))
    return out


def reference_logits(job: TileJob, member: LoadedMember) -> np.ndarray:
    tiles = torch.from_numpy(job.reader.read(job.coords)).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(member.preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(member.preprocessing.std).view(1, 3, 1, 1)
    with torch.no_grad():
        return member.model((tiles - mean) / std).reshape(-1).numpy()


def run(config: EngineConfig, the_jobs: list[TileJob]) -> dict:
    runner = EnsembleRunner(members(), config)
    return {r.slide_key: r for r in run_jobs(the_jobs, runner, config)}


def test_logits_match_a_plain_forward_pass():
    the_jobs = jobs()
    got = run(EngineConfig(device="cpu", batch_tiles=4, workers=0), the_jobs)
    ms = members()
    for job in the_jobs:
        res_members = [m for m in ms if m.resolution == job.resolution]
        logits = got[job.slide_key].logits[job.resolution]
        assert logits.shape == (len(res_members), len(job.coords))
        for row, member in zip(logits, res_members):
            np.testing.assert_allclose(row, reference_logits(job, member), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch_tiles, workers", [(1, 0), (7, 2), (64, 1)])
def test_results_do_not_depend_on_batch_size_or_workers(batch_tiles, workers):
    base = run(EngineConfig(device="cpu", batch_tiles=5, workers=0), jobs())
    other = run(EngineConfig(device="cpu", batch_tiles=batch_tiles, workers=workers, prefetch_batches=2), jobs())
    assert list(other) == list(base)  # slides come back in job order
    for key in base:
        for res in ("10x", "40x"):
            np.testing.assert_allclose(other[key].logits[res], base[key].logits[res], rtol=1e-5, atol=1e-5)


def test_a_failing_read_fails_only_its_slide():
    got = run(EngineConfig(device="cpu", batch_tiles=2, workers=2), jobs(fail_slide=1))
    assert "Bogus marker" in got["s1"].error and got["s1"].logits == {}
    assert not got["s0"].error and not got["s2"].error
    assert got["s2"].logits["40x"].shape == (1, 17)



def test_a_failed_run_leaves_no_reader_process_behind():
    """When a run fails mid-way, its reader processes are stopped before the error reaches the caller:
    a live worker still registered with torch's SIGCHLD handler makes "DataLoader worker exited
    unexpectedly" strike inside the caller's recovery code when it dies. Here the failure comes
    from the consumer, and the test kills any reader process still alive, as a crash would.
    """
    import multiprocessing
    import os
    import signal
    import time

    config = EngineConfig(device="cpu", batch_tiles=1, workers=1, prefetch_batches=2)

    def fail(_: int) -> None:
        raise OSError("the consumer failed")

    with pytest.raises(OSError, match="consumer failed") as failure:
        list(run_jobs(jobs(n_slides=2), EnsembleRunner(members(), config), config, progress=fail))
    assert failure.value.__traceback__ is not None      # the failed run's frames are still referenced
    readers = multiprocessing.active_children()
    for child in readers:
        os.kill(child.pid, signal.SIGKILL)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:                   # bytecode for a pending SIGCHLD handler to strike in
        time.sleep(0.01)
    assert readers == [], "reader processes outlived the failed run"
    again = run(config, jobs(n_slides=1))
    assert not again["s0"].error and again["s0"].logits["40x"].shape == (1, 13)
