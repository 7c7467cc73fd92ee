"""Resampling a volume onto another grid with the same directions, one axis at a time.

Used by ``--target-spacing`` after super-resolution at the next integer factor: the refined grid
(spacing ``s / f``) is resampled onto the target grid of :func:`mrisr.geometry.target_grid`. Each
axis is interpolated with the cubic convolution kernel of Keys (a = −0.5, Catmull–Rom), which passes
through the samples; where the target step is coarser than the source step by a ratio ``r > 1`` the
kernel is stretched by ``r`` (antialiasing, as PIL and ``torch.nn.functional.interpolate(...,
antialias=True)`` do). Indices beyond the edges take the edge value (replicate). Weights sum to 1,
so a constant volume stays constant.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mrisr.geometry import grid_positions

#: Keys' cubic convolution parameter (−0.5: Catmull–Rom).
KEYS_A = -0.5


def _keys(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    a = KEYS_A
    near = ((a + 2) * ax - (a + 3)) * ax * ax + 1
    far = ((ax - 5) * ax + 8) * ax * a - 4 * a
    return np.where(ax <= 1, near, np.where(ax < 2, far, 0.0))


def axis_weights(n_in: int, positions: np.ndarray, step: float) -> np.ndarray:
    """Dense ``(len(positions), n_in)`` interpolation matrix for one axis.

    Args:
        n_in: Samples along the source axis.
        positions: Fractional source indices of the output samples (voxel centres).
        step: Output step in source voxels; above 1 the kernel is stretched by it (antialiasing).
    """
    scale = max(1.0, float(step))
    support = 2.0 * scale
    pos = np.asarray(positions, dtype=np.float64)
    lo = np.floor(pos - support).astype(int) + 1
    taps = int(np.ceil(2 * support)) + 1
    idx = lo[:, None] + np.arange(taps)[None, :]
    w = _keys((idx - pos[:, None]) / scale)
    w /= w.sum(axis=1, keepdims=True)
    out = np.zeros((len(pos), n_in), dtype=np.float64)
    rows = np.repeat(np.arange(len(pos)), taps)
    np.add.at(out, (rows, np.clip(idx, 0, n_in - 1).ravel()), w.ravel())
    return out


def resample_axis(x: np.ndarray, axis: int, positions: np.ndarray, step: float) -> np.ndarray:
    """Resample ``x`` along ``axis`` at fractional ``positions`` (float32 result)."""
    w = axis_weights(x.shape[axis], positions, step).astype(np.float32)
    moved = np.moveaxis(np.asarray(x, dtype=np.float32), axis, -1)
    return np.ascontiguousarray(np.moveaxis(moved @ w.T, -1, axis))


def resample_to_grid(
    x: np.ndarray, affine_from: np.ndarray, affine_to: np.ndarray, shape_to: Sequence[int]
) -> np.ndarray:
    """Resample a 3D or 4D array (first three axes) from one grid onto an aligned one.

    Args:
        x: Array on the grid of ``affine_from``, ``(i, j, k[, t])``.
        affine_from: Its 4×4 voxel-to-world affine.
        affine_to: Affine of the output grid (same directions; :func:`mrisr.geometry.grid_positions`).
        shape_to: Output shape of the first three axes.

    Returns:
        Float32 array ``shape_to (+ x.shape[3:])``; axes already on the output grid are not touched.
    """
    out = np.asarray(x, dtype=np.float32)
    for a, pos in enumerate(grid_positions(affine_from, affine_to, shape_to)):
        if len(pos) == out.shape[a] and np.allclose(pos, np.arange(len(pos)), atol=1e-6):
            continue
        step = float(pos[1] - pos[0]) if len(pos) > 1 else 1.0
        out = resample_axis(out, a, pos, abs(step))
    return out
