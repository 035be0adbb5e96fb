"""Tile augmentations for training: drawn per bag in the loader, applied per batch in the module.

Flips and 90° rotations (tissue has no orientation), H&E stain jitter in scikit-image's HED
space (stain amount and background of each stain vary between labs), brightness / contrast /
saturation jitter, and a mild Gaussian blur (focus varies between scanners).

Why split: per-tile numpy/scikit-image colour work in the loader cost as much CPU as a tiny
backbone's training step. So the loader draws every random number of a bag from the bag's seeded
numpy Generator (augmentation repeats with the seed, whatever the batching), applies only the
geometric ops (exact permutations of uint8 pixels), and passes the per-tile colour and blur
parameters on as a small table; `augment_batch` applies them to the whole batch as a few batched
float32 torch ops, on whatever device the batch is (autocast off: bf16 would round the stains).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from skimage.color import hed_from_rgb, rgb_from_hed

# columns of the per-tile parameter table (N, N_PARAMS) float32 that the loader hands on
ALPHA, BETA = slice(0, 3), slice(3, 6)        # HED stains scaled by alpha, then shifted by beta
BRIGHTNESS, CONTRAST, SATURATION, BLUR_SIGMA = 6, 7, 8, 9  # factors (1 = none); sigma in px (0 = none)
N_PARAMS = 10
IDENTITY = np.array([1, 1, 1, 0, 0, 0, 1, 1, 1, 0], np.float32)

_LOG_ADJUST = math.log(1e-6)  # scikit-image's: optical density is log(rgb) / log(1e-6)
_GREY = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of each augmentation; 0 (or False) switches one off."""

    flips: bool = True
    rot90: bool = True
    hed_alpha: float = 0.2         # each stain's amount scaled by U(1 - a, 1 + a): covers a ±15 % lab shift
    hed_beta: float = 0.02         # and shifted by U(-b, b) in HED optical density
    brightness: float = 0.1        # x U(1 - b, 1 + b)
    contrast: float = 0.1          # blend with the tile mean by U(1 - c, 1 + c)
    saturation: float = 0.1        # blend with grey by U(1 - s, 1 + s)
    blur_probability: float = 0.5  # share of tiles blurred ...
    blur_sigma_px: float = 0.8     # ... with sigma U(0.1, this), in tile pixels
    blur_sigma_um: float = 0.0     # > 0: the blur's upper sigma in µm instead (embed's views convert it per grid)

    def at_mpp(self, mpp: float) -> "AugmentConfig":
        """This config for tiles at `mpp` µm/px: a blur given in µm becomes pixels of that grid."""
        from dataclasses import replace

        if self.blur_sigma_um <= 0:
            return self
        return replace(self, blur_sigma_px=self.blur_sigma_um / mpp, blur_sigma_um=0.0)


# --- loader side: numpy, one bag, one Generator ---------------------------------------------------

def geometric(tiles: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Random flips and 90° rotations of each (N, H, W, 3) tile (square); a new array.

    Tiles that share a transform move together, as whole pixels (one 3-byte item each): a few
    batched copies instead of one per tile and one per byte.
    """
    n = len(tiles)
    if n == 0 or not (config.flips or config.rot90):
        return np.array(tiles, copy=True)
    flip_h = rng.random(n) < 0.5 if config.flips else np.zeros(n, bool)
    flip_v = rng.random(n) < 0.5 if config.flips else np.zeros(n, bool)
    turns = rng.integers(0, 4, n) if config.rot90 else np.zeros(n, int)
    pixels = np.ascontiguousarray(tiles).view(f"V{tiles.shape[-1]}")[..., 0]  # (N, H, W)
    out = np.empty_like(pixels)
    transform = flip_h * 8 + flip_v * 4 + turns
    for code in np.unique(transform):
        index = np.flatnonzero(transform == code)
        group = pixels[index]
        if code & 8:
            group = group[:, :, ::-1]
        if code & 4:
            group = group[:, ::-1]
        out[index] = np.rot90(group, int(code & 3), axes=(1, 2))
    return out[..., None].view(np.uint8)


def draw_params(n: int, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """(n, N_PARAMS) float32 colour and blur parameters of n tiles; IDENTITY rows where switched off."""
    params = np.tile(IDENTITY, (n, 1))
    if config.hed_alpha:
        params[:, ALPHA] = rng.uniform(1 - config.hed_alpha, 1 + config.hed_alpha, (n, 3))
    if config.hed_beta:
        params[:, BETA] = rng.uniform(-config.hed_beta, config.hed_beta, (n, 3))
    for column, strength in ((BRIGHTNESS, config.brightness), (CONTRAST, config.contrast),
                             (SATURATION, config.saturation)):
        if strength:
            params[:, column] = rng.uniform(1 - strength, 1 + strength, n)
    if config.blur_probability and config.blur_sigma_px > 0.1:
        blurred = rng.random(n) < config.blur_probability
        params[:, BLUR_SIGMA] = np.where(blurred, rng.uniform(0.1, config.blur_sigma_px, n), 0.0)
    return params


def augment_bag(tiles: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """The loader's share for one bag: (geometrically augmented uint8 tiles, their parameter table)."""
    tiles = geometric(tiles, rng, config)
    return tiles, draw_params(len(tiles), rng, config)


# --- module side: torch, whole batch, any device ---------------------------------------------------
# Memory-bound on a CPU (a few MB per pass over the batch), so the ops work in place where they can
# and on RGB in [0, `peak`]: tiles stay 0-255 from the uint8 conversion on, the scale lives in offsets.

def _matrix(values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float32, device=like.device)


def _mix(x: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """`pixel @ matrix + offset` for every pixel of (N, 3, H, W) contiguous x; matrix (3, 3) or per tile
    (N, 3, 3), offset (3,) or (N, 3); into `out` (not x) when given."""
    n, c, h, w = x.shape
    flat = x.view(n, c, h * w)
    target = out.view(n, c, h * w) if out is not None else None
    product = torch.baddbmm(offset.expand(n, c).unsqueeze(-1), matrix.transpose(-1, -2).expand(n, c, c), flat,
                            out=target)
    return product.view(n, c, h, w)


def _stains_(rgb: torch.Tensor, peak: float) -> torch.Tensor:
    """rgb2hed of rgb / peak; overwrites rgb (with its log)."""
    od = rgb.clamp_min_(1e-6 * peak).log_()  # - log(peak) and / log(1e-6) are folded into the mix
    matrix = hed_from_rgb / _LOG_ADJUST
    return _mix(od, _matrix(matrix, rgb), _matrix(-math.log(peak) * matrix.sum(axis=0), rgb)).clamp_min_(0)


def _rgb_(stains: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, peak: float,
          out: torch.Tensor | None = None) -> torch.Tensor:
    """peak * hed2rgb(stains * alpha + beta), alpha and beta (N, 3); the scale and shift fold into a
    matrix and offset per tile."""
    matrix = _matrix(rgb_from_hed * _LOG_ADJUST, stains)
    offset = beta @ matrix + math.log(peak)
    return _mix(stains, alpha.unsqueeze(-1) * matrix, offset, out=out).exp_().clamp_(0, peak)


def rgb_to_hed(rgb: torch.Tensor) -> torch.Tensor:
    """scikit-image's `rgb2hed`, batched: (N, 3, H, W) float RGB in [0, 1] -> HED stains (N, 3, H, W)."""
    return _stains_(rgb.clone(), 1.0)


def hed_to_rgb(stains: torch.Tensor) -> torch.Tensor:
    """scikit-image's `hed2rgb`, batched: (N, 3, H, W) HED stains -> RGB in [0, 1]."""
    ones = torch.ones(len(stains), 3, device=stains.device)
    return _rgb_(stains, ones, torch.zeros_like(ones), 1.0)


def hed_jitter_(rgb: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """`peak * hed2rgb(rgb2hed(rgb / peak) * alpha + beta)`, alpha and beta (N, 3) per tile and stain;
    overwrites rgb (the result lands there)."""
    return _rgb_(_stains_(rgb, peak), alpha, beta, peak, out=rgb)


def colour_jitter(rgb: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor, saturation: torch.Tensor,
                  peak: float = 1.0) -> torch.Tensor:
    """Brightness x b, contrast (x - mean) * c + mean, saturation (x - grey) * s + grey, clipped to [0, peak].

    The three are one affine map per tile (grey weights sum to 1, so saturation keeps the mean):
    x -> b c S x + b (1 - c) mean, S = s I + (1 - s) 1 greyᵀ; one batched matmul instead of nine passes.
    """
    n = len(rgb)
    grey = _matrix(np.array(_GREY), rgb)
    eye = torch.eye(3, device=rgb.device)
    s = saturation.view(n, 1, 1)
    sat = s * eye + (1 - s) * grey.view(1, 1, 3).expand(n, 3, 3)  # (N, 3, 3), row c: output channel c
    scale = (brightness * contrast).view(n, 1, 1)
    shift = brightness * (1 - contrast) * rgb.mean(dim=(1, 2, 3))
    return _mix(rgb, (scale * sat).transpose(1, 2), shift.view(n, 1).expand(n, 3)).clamp_(0, peak)


def blur_matrices(sigma: torch.Tensor, size: int) -> torch.Tensor:
    """(N, size, size) row-normalised Gaussian matrices, edges mirrored as scipy's mode="reflect";
    sigma 0 gives the identity. `matrix @ column` blurs a column; no truncation, so no radius to pick."""
    i = torch.arange(size, device=sigma.device, dtype=torch.float32)
    rows, cols = i.view(-1, 1), i.view(1, -1)
    # source col reached from row by offset t directly, or mirrored at the first or the last pixel
    offsets = torch.stack([cols - rows, -cols - 1 - rows, 2 * size - 1 - rows - cols])  # (3, size, size)
    sig = sigma.clamp_min(1e-3).view(-1, 1, 1, 1)
    # exponents clamped above float32's denormals (slow to compute), far below any weight that counts
    weights = torch.exp((-0.5 * (offsets / sig) ** 2).clamp_min_(-80.0)).sum(dim=1)
    return weights / weights.sum(dim=-1, keepdim=True)


def gaussian_blur(rgb: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Each (3, H, W) tile blurred with its own sigma (px), separably: G_h @ x @ G_wᵀ."""
    _, _, h, w = rgb.shape
    rows = blur_matrices(sigma, h)
    cols = rows if w == h else blur_matrices(sigma, w)
    return torch.matmul(torch.matmul(rows[:, None], rgb), cols[:, None].transpose(-1, -2))


def _picks_tiles(x: torch.Tensor) -> bool:
    """Compute only the tiles an op changes? On the CPU yes; on a GPU computing all is cheaper than
    waiting for the device to say which."""
    return x.device.type == "cpu"


def _where_active(x: torch.Tensor, active: torch.Tensor, op: Callable[..., torch.Tensor],
                  *args: torch.Tensor) -> torch.Tensor:
    """op(x, *args) on the tiles where `active` (args: per-tile parameters), the others unchanged bit for
    bit. op may overwrite its input, and so may this (the result may be x)."""
    if not _picks_tiles(x):
        return torch.where(active.view(-1, 1, 1, 1), op(x.clone(), *args), x)
    if bool(active.all()):
        return op(x, *args)
    index = active.nonzero().squeeze(1)
    if len(index):
        x[index] = op(x[index], *(a[index] for a in args))
    return x


def augment_batch(tiles: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Apply `draw_params` tables to a batch: (N, H, W, 3) uint8 + (N, N_PARAMS) -> (N, H, W, 3) float32
    RGB in [0, 255] (what `tiles_to_tensor` takes), computed in float32 even under autocast."""
    with torch.autocast(device_type=tiles.device.type, enabled=False):
        x = tiles.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format, copy=True)
        p = params.to(device=x.device, dtype=torch.float32)
        identity = _matrix(IDENTITY, x)
        hed = (p[:, :6] != identity[:6]).any(dim=1)
        colour = (p[:, 6:9] != identity[6:9]).any(dim=1)
        x = _where_active(x, hed, partial(hed_jitter_, peak=255.0), p[:, ALPHA], p[:, BETA])
        x = _where_active(x, colour, partial(colour_jitter, peak=255.0), p[:, BRIGHTNESS], p[:, CONTRAST],
                          p[:, SATURATION])
        x = _where_active(x, p[:, BLUR_SIGMA] > 0, gaussian_blur, p[:, BLUR_SIGMA])
        return x.permute(0, 2, 3, 1)
