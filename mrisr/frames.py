"""Helpers for 3D and 4D arrays handled frame by frame (degrade, interpolate, crop, stack)."""

from __future__ import annotations

import numpy as np

from mrisr.errors import UnsupportedDataError
from mrisr.io import Volume
from mrisr.transforms import degrade_volume, upsample_volume


def first_frame(a: np.ndarray | None) -> np.ndarray | None:
    """The first 3D frame of a 4D array (a 3D array as it is; ``None`` stays ``None``)."""
    return None if a is None else (a if a.ndim == 3 else a[..., 0])


def crop_to_multiple(vol: Volume, factors: tuple[int, int, int]) -> Volume:
    """Crop the end of each axis to a multiple of its factor (the origin, and so the affine, stay)."""
    sl = tuple(slice(0, n - n % f) for n, f in zip(vol.shape3, factors, strict=True))
    if any(s.stop < 1 for s in sl):
        raise UnsupportedDataError(vol.path, f"shape {vol.shape3} is smaller than the scale {factors}")
    return vol.with_data(np.asarray(vol.data[sl]), vol.affine)


def frames_of(a: np.ndarray) -> list[np.ndarray]:
    """The 3D frames of a 3D (one frame) or 4D array (views, no copies)."""
    return [a] if a.ndim == 3 else [a[..., t] for t in range(a.shape[3])]


def stack_like(frames: list[np.ndarray], like: np.ndarray) -> np.ndarray:
    """Inverse of :func:`frames_of`: one frame for a 3D ``like``, frames stacked on axis 3 for 4D."""
    return frames[0] if like.ndim == 3 else np.stack(frames, axis=-1)


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
