"""The degradation model: how a fine grid becomes a coarse one, and the bicubic way back.

One home for what a degradation name means, for training, adaptation, ``--simulate`` and the
consistency check:

``bicubic``
    Antialiased bicubic downsampling (the seed's degradation).
``box``
    Block averaging: thicker voxels.
``kspace``
    Central crop of the centred 2D spectrum: how a scanner acquires a lower resolution.
``mixed`` (training and adaptation only)
    ``bicubic`` or ``box``, drawn per patch (:func:`draw_mode`) or alternated per step
    (:func:`modes_of`); where one model must stand for it (validation, ``--simulate``, the
    consistency check) it counts as ``bicubic`` (:func:`evaluation_mode`).

Functions work on NumPy arrays or on torch tensors of slices shaped ``(N, 1, H, W)`` and import no
MONAI, so that inference starts fast. All resampling follows the voxel-centre convention of
:mod:`mrisr.geometry` (``align_corners=False``): a coarse voxel covers ``f`` fine voxels exactly and
its centre lies at fine index ``f * i + (f - 1) / 2``. Degrading first crops each axis to a multiple
of its factor (:func:`crop_array_to_multiple`), keeping the origin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from mrisr.errors import UnsupportedDataError
from mrisr.frames import frames_of, stack_like
from mrisr.io import Volume

Degradation = Literal["bicubic", "box", "kspace"]
#: The degradation models (of ``--simulate``, ``--degradation`` and the consistency check).
DEGRADATIONS: tuple[str, ...] = ("bicubic", "box", "kspace")
#: Training and adaptation draw from both of these.
MIXED = "mixed"
MIXED_MODES: tuple[str, ...] = ("bicubic", "box")
#: What a training run or a checkpoint may name.
TRAIN_DEGRADATIONS: tuple[str, ...] = (*DEGRADATIONS, MIXED)


def modes_of(name: str) -> tuple[str, ...]:
    """The degradation models ``name`` stands for: both of :data:`MIXED_MODES` for ``mixed``, else itself."""
    return MIXED_MODES if name == MIXED else (name,)


def draw_mode(name: str, rng: np.random.Generator) -> str:
    """The model of one training patch: for ``mixed`` one of :data:`MIXED_MODES`, each half of the
    time (one draw from ``rng``, none for any other name)."""
    if name != MIXED:
        return name
    return MIXED_MODES[0] if rng.random() < 0.5 else MIXED_MODES[1]


def evaluation_mode(name: str) -> str:
    """The one model that stands for ``name`` where a single one is needed (validation, ``--simulate``,
    the consistency check): ``bicubic`` for ``mixed``, else ``name``."""
    return MIXED_MODES[0] if name == MIXED else name


def crop_array_to_multiple(a: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """The first ``len(factors)`` axes of ``a`` cut at their end to a multiple of their factor (a view;
    the origin, and so the affine, stay)."""
    return a[tuple(slice(0, n - n % int(f)) for n, f in zip(a.shape, factors, strict=False))]


def crop_to_multiple(vol: Volume, factors: tuple[int, int, int]) -> Volume:
    """:func:`crop_array_to_multiple` of a volume's spatial axes (the affine stays).

    Raises:
        UnsupportedDataError: An axis is shorter than its factor.
    """
    if any(n < f for n, f in zip(vol.shape3, factors, strict=True)):
        raise UnsupportedDataError(vol.path, f"shape {vol.shape3} is smaller than the scale {factors}")
    return vol.with_data(np.asarray(crop_array_to_multiple(vol.data, factors)), vol.affine)


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
    a = crop_array_to_multiple(np.asarray(x, dtype=np.float32), f)
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


def degrade_frames(a: np.ndarray, factors: tuple[int, int, int], mode: str, *, chunk: int = 16) -> np.ndarray:
    """Degrade each frame by ``factors``, in blocks of slices along an axis that is not degraded."""
    free = next((ax for ax in (2, 0, 1) if factors[ax] == 1), None)
    out_frames = []
    for frame in frames_of(a):
        if free is None:
            out_frames.append(degrade_volume(np.asarray(frame, dtype=np.float32), factors, mode))
            continue
        blocks = []
        for start in range(0, frame.shape[free], chunk):
            idx = [slice(None)] * 3
            idx[free] = slice(start, start + chunk)
            blocks.append(degrade_volume(np.asarray(frame[tuple(idx)], dtype=np.float32), factors, mode))
        out_frames.append(np.concatenate(blocks, axis=free))
    return stack_like(out_frames, a)


def bicubic_frames(a: np.ndarray, shape: tuple[int, ...], lo: float, hi: float) -> np.ndarray:
    """Bicubic upsampling of each frame to ``shape[:3]``, clamped to ``[lo, hi]`` (the baseline)."""
    ups = [np.clip(upsample_volume(f, shape[:3]), lo, hi) for f in frames_of(a)]
    return stack_like(ups, a)
