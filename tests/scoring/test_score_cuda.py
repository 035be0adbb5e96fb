"""The GPU path of the engine (pinned memory, non-blocking copies, channels_last, bf16 autocast).

Skipped without CUDA; `scripts/gpu_checks.sh` runs it on a GPU machine. The issue asks for a
CPU path "with the same results up to float tolerance": float32 on CUDA must match the CPU to
1e-4, bf16 to the precision bf16 keeps (8 bits of mantissa: a few 1e-2 on O(1) logits) and
must rank the tiles the same way.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_score_engine import jobs, run  # the CPU engine tests' members, reader and jobs
from wsi_prognosis.scoring.engine import EngineConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _logits(config: EngineConfig) -> dict[tuple[str, str], np.ndarray]:
    return {(key, res): result.logits[res] for key, result in run(config, jobs()).items() for res in result.logits}


def test_float32_on_cuda_matches_the_cpu() -> None:
    cpu = _logits(EngineConfig(device="cpu", batch_tiles=4, workers=0))
    gpu = _logits(EngineConfig(device="cuda", batch_tiles=4, workers=2, bf16=False))
    assert cpu.keys() == gpu.keys()
    for key in cpu:
        np.testing.assert_allclose(gpu[key], cpu[key], rtol=1e-4, atol=1e-4, err_msg=str(key))


def test_bf16_on_cuda_keeps_values_and_ranking() -> None:
    cpu = _logits(EngineConfig(device="cpu", batch_tiles=8, workers=0))
    gpu = _logits(EngineConfig(device="cuda", batch_tiles=8, workers=2, bf16=True, channels_last=True))
    for key in cpu:
        np.testing.assert_allclose(gpu[key], cpu[key], rtol=3e-2, atol=3e-2, err_msg=str(key))
        for gpu_row, cpu_row in zip(gpu[key], cpu[key]):
            if len(cpu_row) > 2 and np.ptp(cpu_row) > 0.05:
                assert np.corrcoef(np.argsort(np.argsort(gpu_row)), np.argsort(np.argsort(cpu_row)))[0, 1] > 0.9
