"""Intensity normalisation, degradation models and resampling of slices.

Functions here work on NumPy arrays or on torch tensors of slices shaped ``(N, 1, H, W)`` and import
no MONAI, so that inference starts fast; their MONAI array/dictionary transform wrappers, used by the
training data pipeline, are in :mod:`mrisr.monai_transforms`. All resampling follows the voxel-centre
convention of :mod:`mrisr.geometry` (``align_corners=False``): a coarse voxel covers ``f`` fine voxels
exactly and its centre lies at fine index ``f * i + (f - 1) / 2``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

Degradation = Literal["bicubic", "box", "kspace"]
DEGRADATIONS: tuple[str, ...] = ("bicubic", "box", "kspace")


@dataclass(frozen=True)
class Normalization:
    """A recorded linear intensity normalisation ``y = (x - offset) / scale``.

    Attributes:
        offset: Value mapped to 0 (0 for non-negative data, else a low percentile), physical units.
        scale: Value range mapped to 1 (a high percentile of the foreground minus ``offset``).
        lower_percentile: Percentile used for ``offset`` when the data hold negatives.
        upper_percentile: Foreground percentile used for ``scale``.
        data_min: Minimum of the input, physical units (used to clamp outputs).
        data_max: Maximum of the input, physical units.
    """

    offset: float
    scale: float
    lower_percentile: float
    upper_percentile: float
    data_min: float
    data_max: float

    @property
    def constant(self) -> bool:
        """True when the data hold a single value (nothing to normalise or enhance)."""
        return self.data_max <= self.data_min

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Normalise to float32."""
        return ((np.asarray(x, dtype=np.float32) - np.float32(self.offset)) / np.float32(self.scale)).astype(
            np.float32, copy=False
        )

    def invert(self, y: np.ndarray) -> np.ndarray:
        """Back to physical units (float32)."""
        return (np.asarray(y, dtype=np.float32) * np.float32(self.scale) + np.float32(self.offset)).astype(
            np.float32, copy=False
        )

    def invert_(self, y: np.ndarray) -> np.ndarray:
        """Back to physical units in place (``y`` must be a float32 array); returns ``y``."""
        y *= np.float32(self.scale)
        y += np.float32(self.offset)
        return y

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for sidecars."""
        return {"method": "percentile", **asdict(self)}


def fit_normalization(x: np.ndarray, *, upper_percentile: float = 99.5, lower_percentile: float = 0.5) -> Normalization:
    """Fit a robust normalisation to a volume.

    Non-negative data keep 0 at 0 and are divided by the ``upper_percentile`` of the foreground
    (voxels above 5% of the 99.9th percentile — the head, not the air around it). Data with negative
    values are first shifted by their ``lower_percentile``. The same rule is used in training and at
    inference, so the network sees the same intensity range.

    Raises:
        ValueError: If ``x`` holds NaN or Inf.
    """
    a = np.asarray(x, dtype=np.float32)
    if not np.isfinite(a).all():
        raise ValueError("volume holds NaN or Inf voxels")
    lo_all, hi_all = float(a.min()), float(a.max())
    sample = a.ravel()
    if sample.size > 4_000_000:  # percentiles of a large volume from a fixed, deterministic subsample
        sample = sample[:: sample.size // 2_000_000]
    offset = 0.0 if lo_all >= 0 else float(np.percentile(sample, lower_percentile))
    shifted = sample - offset
    top = float(np.percentile(shifted, 99.9))
    fg = shifted[shifted > 0.05 * top] if top > 0 else shifted
    scale = float(np.percentile(fg, upper_percentile)) if fg.size else 0.0
    if not scale > 0:
        scale = max(hi_all - offset, 1.0)
    return Normalization(offset, scale, lower_percentile, upper_percentile, lo_all, hi_all)


def _pair(factors: Sequence[int]) -> tuple[int, int]:
    fh, fw = int(factors[0]), int(factors[1])
    if fh < 1 or fw < 1:
        raise ValueError(f"factors must be positive, got {factors}")
    return fh, fw


def downsample(x: torch.Tensor, factors: Sequence[int], mode: str = "bicubic") -> torch.Tensor:
    """Degrade slices ``(N, C, H, W)`` by integer ``factors`` ``(fh, fw)`` (``H``, ``W`` divisible).

    Modes: ``bicubic`` (antialiased bicubic, the seed's degradation), ``box`` (block average: thicker
    voxels), ``kspace`` (central crop of the centred 2D spectrum: how a scanner acquires a lower
    resolution; shifted by ``(f - 1) / 2`` fine voxels so the coarse samples sit at voxel centres).
    """
    fh, fw = _pair(factors)
    h, w = x.shape[-2:]
    if h % fh or w % fw:
        raise ValueError(f"slice size {(h, w)} is not divisible by {(fh, fw)}")
    if fh == 1 and fw == 1:
        return x
    if mode == "box":
        return F.avg_pool2d(x, (fh, fw))
    if mode == "bicubic":
        return F.interpolate(x, size=(h // fh, w // fw), mode="bicubic", antialias=True, align_corners=False)
    if mode == "kspace":
        return _kspace_crop(x, fh, fw)
    raise ValueError(f"unknown degradation {mode!r}; choose from {', '.join(DEGRADATIONS)}")


def _kspace_crop(x: torch.Tensor, fh: int, fw: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    oh, ow = h // fh, w // fw
    xd = x.double()
    spec = torch.fft.fft2(xd)
    # Sample the band-limited signal at the coarse voxel centres (fine index f*i + (f-1)/2).
    ky = torch.fft.fftfreq(h, dtype=torch.float64, device=x.device)
    kx = torch.fft.fftfreq(w, dtype=torch.float64, device=x.device)
    shift = torch.exp(2j * math.pi * (ky[:, None] * (fh - 1) / 2 + kx[None, :] * (fw - 1) / 2))
    spec = spec * shift
    iy = kspace_indices(h, oh)
    ix = kspace_indices(w, ow)
    crop = spec[..., iy, :][..., :, ix]
    out = torch.fft.ifft2(crop).real / (fh * fw)
    return out.to(x.dtype)


def kspace_indices(n: int, m: int) -> torch.Tensor:
    """Indices (in ``fft`` order) of the ``m`` lowest frequencies of an ``n``-point spectrum.

    The result is in the ``fft`` order of an ``m``-point spectrum, so ``ifft`` of the cropped spectrum
    is the band-limited signal on the coarse grid.
    """
    pos = list(range(0, (m + 1) // 2))
    neg = list(range(n - m // 2, n))
    return torch.tensor(pos + neg, dtype=torch.long)


def upsample(x: torch.Tensor, size: Sequence[int], mode: str = "bicubic") -> torch.Tensor:
    """Upsample slices ``(N, C, h, w)`` to ``size`` ``(H, W)`` (voxel-centre convention)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "bicubic":
        return F.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False)
    if mode in ("linear", "bilinear"):
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    raise ValueError(f"unknown upsampling {mode!r}")


def degrade_and_upsample(x: torch.Tensor, factors: Sequence[int], mode: str = "bicubic") -> torch.Tensor:
    """Network input for fine-grid slices ``(N, C, H, W)``: degrade by ``factors``, bicubic back to ``(H, W)``."""
    return upsample(downsample(x, factors, mode), x.shape[-2:])


def degrade_volume(x: np.ndarray, factors: Sequence[int], mode: str = "bicubic") -> np.ndarray:
    """Degrade a 3D array by per-axis integer ``factors`` (axes cropped to multiples first).

    The in-plane factors (axes 0, 1) are applied per slice of axis 2; a factor along axis 2 is then
    applied per slice of axis 0. Returns float32.
    """
    f = [int(v) for v in factors]
    a = np.asarray(x, dtype=np.float32)
    a = a[: a.shape[0] - a.shape[0] % f[0], : a.shape[1] - a.shape[1] % f[1], : a.shape[2] - a.shape[2] % f[2]]
    t = torch.from_numpy(np.ascontiguousarray(a))
    if f[0] > 1 or f[1] > 1:
        t = downsample(t.permute(2, 0, 1)[:, None], (f[0], f[1]), mode)[:, 0].permute(1, 2, 0)
    if f[2] > 1:
        t = downsample(t[:, None], (1, f[2]), mode)[:, 0]
    return t.contiguous().numpy()


def upsample_volume(x: np.ndarray, shape: Sequence[int], mode: str = "bicubic") -> np.ndarray:
    """Bicubic upsampling of a 3D array to ``shape`` (same per-axis order as :func:`degrade_volume`)."""
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if t.shape[0] != shape[0] or t.shape[1] != shape[1]:
        t = upsample(t.permute(2, 0, 1)[:, None], (shape[0], shape[1]), mode)[:, 0].permute(1, 2, 0)
    if t.shape[2] != shape[2]:
        t = upsample(t[:, None], (shape[1], shape[2]), mode)[:, 0]
    return t.contiguous().numpy()
