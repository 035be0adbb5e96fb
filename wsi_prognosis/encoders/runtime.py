"""Running an encoder on tiles: torch on a GPU (bf16, channels_last), ONNX Runtime on a CPU.

Both runtimes execute the same module, `PreprocessedEncoder`: uint8 (N, H, W, 3) tiles in, (N, dim)
float embeddings out, with the scaling, resize to the encoder's input px and normalisation inside.
So the ONNX graph is exported from exactly what torch runs (numbers checked against torch in the
tests), and no preprocessing is written twice. Why ONNX Runtime on CPU: on 2 cores it runs
EfficientNet-Lite0 at ~2.5x torch's eager speed with channels_last (scripts/bench_embed.py). The
export (seconds) is cached per (encoder, weights, tile px, torch version) under the user's cache
folder (`WSI_PROGNOSIS_CACHE`, default ~/.cache/wsi-prognosis).
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsi_prognosis.errors import ConfigurationError, EncoderError

if TYPE_CHECKING:
    from wsi_prognosis.encoders.registry import LoadedEncoder

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnx")
ONNX_OPSET = 17
EXPORT_VERSION = 2          # bump when PreprocessedEncoder or the export layout changes: exports are remade


class PreprocessedEncoder(nn.Module):
    """uint8 (N, H, W, 3) RGB tiles -> (N, dim) embeddings: /255, bilinear resize to the encoder's input
    px (when the tiles differ), (x - mean) / std, the encoder."""

    def __init__(self, encoder: nn.Module, *, mean: tuple[float, ...], std: tuple[float, ...], input_px: int,
                 tile_px: int, channels_last: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.input_px, self.tile_px, self.channels_last = int(input_px), int(tile_px), channels_last

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        x = tiles.permute(0, 3, 1, 2).float() / 255.0
        if self.input_px != self.tile_px:
            x = F.interpolate(x, size=(self.input_px, self.input_px), mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.encoder(x).float()


def cache_dir() -> Path:
    """Where derived files (ONNX exports) are kept: $WSI_PROGNOSIS_CACHE, else ~/.cache/wsi-prognosis."""
    root = os.environ.get("WSI_PROGNOSIS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "wsi-prognosis")
    path = Path(root)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    fallback = Path(tempfile.gettempdir()) / "wsi-prognosis-cache"
    fallback.mkdir(parents=True, exist_ok=True)
    log.warning("cache folder %s is not writable; using %s (set WSI_PROGNOSIS_CACHE)", path, fallback)
    return fallback


def cpu_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def export_onnx(module: PreprocessedEncoder, key: str) -> Path:
    """The module as an ONNX file (dynamic batch, fixed tile px), exported once and cached by `key`.

    Each export has a folder of its own: a network over 2 GB (ViT-H, ViT-g) is saved with its tensors as
    separate files named after the tensors, which would collide between encoders in a shared folder. The
    folder is written under a temporary name and renamed when complete."""
    import shutil
    import warnings

    folder = cache_dir() / "onnx" / f"{key}-v{EXPORT_VERSION}-torch{torch.__version__.split('+')[0]}"
    target = folder / "model.onnx"
    if target.is_file():
        return target
    folder.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros((2, module.tile_px, module.tile_px, 3), dtype=torch.uint8)
    log.info("exporting the encoder to ONNX (once; cached in %s)", folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".part", dir=folder.parent))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its deprecation
            torch.onnx.export(module.eval(), (example,), str(tmp / "model.onnx"), input_names=["tiles"],
                              output_names=["embedding"], dynamic_axes={"tiles": {0: "n"}, "embedding": {0: "n"}},
                              opset_version=ONNX_OPSET, dynamo=False)
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished the same export first
            if not target.is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


@dataclass(frozen=True)
class EmbedderConfig:
    runtime: str = "auto"          # auto: torch on CUDA, ONNX Runtime on CPU | torch | onnx
    device: str = "auto"           # auto | cpu | cuda | cuda:N (torch runtime)
    batch_tiles: int = 64
    bf16: bool = True              # bfloat16 autocast on CUDA
    channels_last: bool = True
    threads: int = 0               # CPU threads for ONNX Runtime / torch (0: every core this process may use)

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ConfigurationError(f"runtime={self.runtime!r}: one of {list(RUNTIMES)}.")
        if self.batch_tiles < 1:
            raise ConfigurationError(f"batch_tiles={self.batch_tiles}: must be >= 1.")

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigurationError(f"device={self.device!r} but CUDA is not available here. Fix: device=cpu or auto.")
        return device


class TileEmbedder:
    """`embed(tiles uint8 (N, H, W, 3)) -> (N, dim) float32` with one loaded encoder, in batches."""

    def __init__(self, encoder: "LoadedEncoder", tile_px: int, config: EmbedderConfig = EmbedderConfig()) -> None:
        self.encoder, self.tile_px, self.config = encoder, int(tile_px), config
        self.device = config.torch_device()
        runtime = config.runtime
        if runtime == "auto":
            runtime = "torch" if self.device.type == "cuda" or not onnx_available() else "onnx"
        if runtime == "onnx" and not onnx_available():
            raise ConfigurationError("runtime=onnx but onnxruntime is not installed. Fix: pip install onnxruntime, "
                                     "or runtime=torch.")
        if runtime == "onnx" and self.device.type == "cuda":
            raise ConfigurationError("runtime=onnx runs on the CPU here; on a GPU use runtime=torch (or auto).")
        self.runtime = runtime
        spec = encoder.spec
        on_gpu = self.device.type == "cuda"
        self.module = PreprocessedEncoder(encoder.model, mean=spec.mean, std=spec.std, input_px=spec.input_px,
                                          tile_px=self.tile_px, channels_last=config.channels_last and on_gpu).eval()
        self.threads = config.threads or cpu_threads()
        self._session: Any = None
        if runtime == "onnx":
            self._session = self._onnx_session()
        else:
            if not on_gpu:
                torch.set_num_threads(self.threads)
            if config.channels_last:
                self.module.encoder.to(memory_format=torch.channels_last)
            self.module.to(self.device)
        self.bf16 = config.bf16 and on_gpu

    def _onnx_session(self) -> Any:
        import shutil

        import onnxruntime as ort

        path = export_onnx(self.module, f"{self.encoder.spec.name}-{self.encoder.key}-{self.tile_px}px")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - a truncated cache file: export again
            log.warning("%s: cached ONNX export unreadable (%s); exporting again", path, exc)
            shutil.rmtree(path.parent, ignore_errors=True)
            path = export_onnx(self.module, f"{self.encoder.spec.name}-{self.encoder.key}-{self.tile_px}px")
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    @property
    def dim(self) -> int:
        return int(self.encoder.spec.dim)

    def _check(self, tiles: np.ndarray | torch.Tensor) -> None:
        if tiles.ndim != 4 or tuple(tiles.shape[1:]) != (self.tile_px, self.tile_px, 3):
            raise EncoderError(f"encoder {self.encoder.spec.name}: tiles must be (N, {self.tile_px}, {self.tile_px}, 3) "
                               f"uint8, got {tuple(tiles.shape)}.")

    @torch.inference_mode()
    def embed_tensor(self, tiles: torch.Tensor) -> torch.Tensor:
        """One batch, uint8 (N, H, W, 3) tensor (host or device) -> (N, dim) float32 tensor (on the device
        for torch, on the host for ONNX Runtime); no synchronisation on the torch path."""
        self._check(tiles)
        if self._session is not None:
            array = tiles.cpu().numpy() if tiles.dtype == torch.uint8 else tiles.clamp(0, 255).round().byte().cpu().numpy()
            out = self._session.run(None, {"tiles": np.ascontiguousarray(array)})[0]
            return torch.from_numpy(out)
        x = tiles.to(self.device, non_blocking=True)
        if x.dtype != torch.uint8:
            x = x.clamp(0, 255).round().to(torch.uint8)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.module(x).float()

    def embed(self, tiles: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) -> float32 (N, dim), in batches of `batch_tiles`."""
        self._check(tiles)
        if len(tiles) == 0:
            return np.zeros((0, self.dim), np.float32)
        step = self.config.batch_tiles
        parts = [self.embed_tensor(torch.from_numpy(np.ascontiguousarray(tiles[i:i + step]))).cpu().numpy()
                 for i in range(0, len(tiles), step)]
        return np.concatenate(parts).astype(np.float32, copy=False)


__all__ = ["EmbedderConfig", "PreprocessedEncoder", "RUNTIMES", "TileEmbedder", "cache_dir", "export_onnx",
           "onnx_available"]
