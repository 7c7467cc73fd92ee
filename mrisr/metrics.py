"""Image-quality metrics of a super-resolved volume against a reference: PSNR, SSIM, 3D SSIM.

All metrics are computed in float64 on arrays in voxel order ``(i, j, k)`` (or ``(i, j, k, t)``), in
the reference's own physical units — the arrays are compared as they are given, with no
normalisation. The exact definitions are written down in ``docs/metrics.md``; in short:

* PSNR: ``10 · log10(R² / MSE)`` with ``R`` the data range (default ``ref.max() - ref.min()`` over the
  whole reference) and ``MSE`` the mean squared error over all voxels (or over the mask).
* SSIM (Wang et al. 2004) with a Gaussian window of 11 taps, σ = 1.5 voxels, ``K1 = 0.01``,
  ``K2 = 0.03``, ``C1 = (K1·R)²``, ``C2 = (K2·R)²``, weighted population (co)variances. The window is
  separable; the image is extended past its edges by half-sample symmetric reflection so the SSIM
  map has the image's shape. 2D SSIM is the mean over slices along one axis of each slice's mean
  SSIM; 3D SSIM uses the 11×11×11 window (in voxels, whatever the spacing) and the mean of the map.

MONAI's ``SSIMMetric`` is not used: it convolves without padding (a map smaller than the image, which
cannot be averaged over a mask of the image's shape), works in float32 and defaults to a data range
of 1.
"""

from __future__ import annotations

import functools
import logging
import math

import numpy as np
import torch

from mrisr.sidecar import METRIC_KEYS

logger = logging.getLogger(__name__)

WINDOW_SIZE = 11
WINDOW_SIGMA = 1.5
K1 = 0.01
K2 = 0.03
FOREGROUND_FRACTION = 0.10
FOREGROUND_PERCENTILE = 99.0


def _pair(x: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(ref, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: x {a.shape} vs ref {b.shape}")
    if a.size == 0:
        raise ValueError("empty arrays")
    return a, b


def _range(ref: np.ndarray, data_range: float | None) -> float:
    r = float(ref.max() - ref.min()) if data_range is None else float(data_range)
    if not math.isfinite(r) or r <= 0:
        raise ValueError(f"data range must be finite and > 0, got {r} (constant reference?)")
    return r


def _mask(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if mask is None:
        return None
    m = np.asarray(mask, dtype=bool)
    if m.shape != shape:
        raise ValueError(f"mask shape {m.shape} differs from the image shape {shape}")
    if not m.any():
        raise ValueError("mask selects no voxel")
    return m


def psnr(x: np.ndarray, ref: np.ndarray, *, data_range: float | None = None, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio of ``x`` against ``ref`` in dB.

    Args:
        x: Test array, any shape, physical units.
        ref: Reference array of the same shape and units.
        data_range: Peak value ``R``; default ``ref.max() - ref.min()`` over the whole reference (also
            when a mask is given, so masked and unmasked values share one scale).
        mask: Optional boolean array of the same shape; the MSE is then the mean over ``True`` voxels.

    Returns:
        ``10 · log10(R² / MSE)`` in dB; ``inf`` when ``x`` equals ``ref`` on the evaluated voxels.

    Raises:
        ValueError: On a shape mismatch, an empty mask or a data range that is not positive.
    """
    a, b = _pair(x, ref)
    r = _range(b, data_range)
    m = _mask(mask, b.shape)
    diff2 = (a - b) ** 2
    mse = float(diff2[m].mean() if m is not None else diff2.mean())
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(r * r / mse)


def gaussian_window(size: int = WINDOW_SIZE, sigma: float = WINDOW_SIGMA) -> np.ndarray:
    """1D Gaussian window, float64, shape ``(size,)``, centred, summing to 1."""
    t = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    w = np.exp(-(t**2) / (2.0 * sigma * sigma))
    return w / w.sum()


def _symmetric_index(n: int, pad: int) -> np.ndarray:
    """Indices of a half-sample symmetric extension (``... 1 0 | 0 1 ... n-1 | n-1 n-2 ...``)."""
    idx = np.arange(-pad, n + pad)
    period = 2 * n
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - 1 - idx, idx)


@functools.lru_cache(maxsize=16)
def _filter_matrix(n: int) -> torch.Tensor:
    """``(n, n)`` float64 matrix ``F`` with ``x @ F`` the windowed mean of a length-``n`` signal ``x``.

    The half-sample symmetric extension is folded into the matrix, so no padded copy is needed.
    """
    w = gaussian_window()
    pad = (w.size - 1) // 2
    idx = _symmetric_index(n, pad)
    cols = np.arange(n)
    m = np.zeros((n, n), dtype=np.float64)
    for k in range(w.size):
        np.add.at(m, (idx[cols + k], cols), w[k])
    return torch.from_numpy(m)


def _filter(t: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    """Separable Gaussian filtering of ``t`` along ``axes`` (symmetric extension, same shape)."""
    for ax in axes:
        f = _filter_matrix(int(t.shape[ax]))
        # A matrix product along the last axis is far faster than conv1d over many short rows.
        t = torch.matmul(t.movedim(ax, -1).contiguous(), f).movedim(-1, ax).contiguous()
    return t


def _ssim_maps(xs: list[np.ndarray], ref: np.ndarray, *, data_range: float, axes: tuple[int, ...]) -> list[np.ndarray]:
    """SSIM maps of several test arrays against one reference (its statistics computed once)."""
    tb = torch.from_numpy(np.ascontiguousarray(ref, dtype=np.float64))
    mu_b = _filter(tb, axes)
    var_b = _filter(tb * tb, axes) - mu_b * mu_b
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    out = []
    for x in xs:
        ta = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
        mu_a = _filter(ta, axes)
        var_a = _filter(ta * ta, axes) - mu_a * mu_a
        cov = _filter(ta * tb, axes) - mu_a * mu_b
        num = (2.0 * mu_a * mu_b + c1) * (2.0 * cov + c2)
        den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
        out.append((num / den).numpy())
    return out


def ssim_map(x: np.ndarray, ref: np.ndarray, *, data_range: float, axes: tuple[int, ...]) -> np.ndarray:
    """The SSIM map of ``x`` against ``ref`` with a separable Gaussian window over ``axes``.

    Args:
        x: Test array, physical units.
        ref: Reference array of the same shape.
        data_range: ``R`` in ``C1 = (K1·R)²``, ``C2 = (K2·R)²``.
        axes: The axes the window spans: two axes for 2D SSIM (each slice on its own), three for 3D.

    Returns:
        float64 array of ``x``'s shape: the local SSIM of every voxel.
    """
    a, b = _pair(x, ref)
    return _ssim_maps([a], b, data_range=data_range, axes=axes)[0]


def _slice_mean(smap: np.ndarray, mask: np.ndarray | None, axis: int) -> float:
    """Mean over slices along ``axis`` of each slice's (masked) mean of a 2D SSIM map."""
    in_plane = tuple(ax for ax in (0, 1, 2) if ax != axis)
    # Slices (and frames of a 4D array) to the last axis: shape (H, W, n_slices).
    dest = -1 if smap.ndim == 3 else 2
    per_slice = np.moveaxis(smap, axis, dest).reshape(smap.shape[in_plane[0]], smap.shape[in_plane[1]], -1)
    if mask is None:
        return float(per_slice.mean(axis=(0, 1)).mean())
    m_slices = np.moveaxis(mask, axis, dest).reshape(per_slice.shape)
    counts = m_slices.sum(axis=(0, 1))
    sums = np.where(m_slices, per_slice, 0.0).sum(axis=(0, 1))
    keep = counts > 0
    return float((sums[keep] / counts[keep]).mean())


def _check_volume(a: np.ndarray, axis: int) -> None:
    if a.ndim not in (3, 4):
        raise ValueError(f"SSIM needs a 3D (i, j, k) or 4D (i, j, k, t) array, got shape {a.shape}")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")


def ssim(
    x: np.ndarray,
    ref: np.ndarray,
    *,
    data_range: float | None = None,
    mask: np.ndarray | None = None,
    axis: int = 2,
) -> float:
    """Mean 2D SSIM over the slices of a volume taken along ``axis``.

    Each slice's SSIM is the mean of its 2D SSIM map; with a mask, the mean of the map over the
    slice's masked pixels, and slices without masked pixels are left out. The result is the plain
    mean of the slice values. A 4D array contributes every (slice, frame) pair as a slice.

    Args:
        x: Test volume ``(i, j, k)`` or ``(i, j, k, t)``, physical units.
        ref: Reference of the same shape.
        data_range: ``R``; default ``ref.max() - ref.min()`` over the whole reference.
        mask: Optional boolean array of the same shape (masks the map, not the local statistics).
        axis: Slice axis, 0, 1 or 2 (2: axial slices ``(i, j)`` for a k-stack).

    Returns:
        SSIM in (-1, 1]; 1 for identical inputs.

    Raises:
        ValueError: On a shape mismatch, a bad ``axis``, an empty mask or a non-positive data range.
    """
    a, b = _pair(x, ref)
    _check_volume(b, axis)
    r = _range(b, data_range)
    m = _mask(mask, b.shape)
    in_plane = tuple(ax for ax in (0, 1, 2) if ax != axis)
    return _slice_mean(ssim_map(a, b, data_range=r, axes=in_plane), m, axis)


def ssim3d(x: np.ndarray, ref: np.ndarray, *, data_range: float | None = None, mask: np.ndarray | None = None) -> float:
    """3D SSIM: mean of the SSIM map computed with an 11×11×11 Gaussian window (σ = 1.5 voxels).

    Args:
        x: Test volume ``(i, j, k)``, or ``(i, j, k, t)`` (then the mean over frames of the maps).
        ref: Reference of the same shape.
        data_range: ``R``; default ``ref.max() - ref.min()`` over the whole reference.
        mask: Optional boolean array of the same shape; the map is then averaged over masked voxels.

    Returns:
        SSIM in (-1, 1]; 1 for identical inputs.

    Raises:
        ValueError: On a shape mismatch, an empty mask or a non-positive data range.
    """
    a, b = _pair(x, ref)
    _check_volume(b, 2)
    r = _range(b, data_range)
    m = _mask(mask, b.shape)
    smap = ssim_map(a, b, data_range=r, axes=(0, 1, 2))
    return float(smap[m].mean() if m is not None else smap.mean())


def _fill_between(m: np.ndarray, axis: int) -> np.ndarray:
    """True where a line along ``axis`` has a True value at or before and at or after the voxel."""
    before = np.cumsum(m, axis=axis) > 0
    after = np.flip(np.cumsum(np.flip(m, axis=axis), axis=axis), axis=axis) > 0
    return before & after


def foreground_mask(ref: np.ndarray, *, border: int = 0) -> np.ndarray:
    """Boolean foreground (head/body) mask of a reference volume.

    Rule: a voxel is foreground when ``|ref| > 0.1 · P99(|ref|)`` (P99: the 99th percentile over all
    voxels), or when it lies inside the foreground along both in-plane directions — that is, lines
    along axis 0 and along axis 1 through it both meet a thresholded voxel on each side. This fills
    enclosed dark regions (ventricles, CSF, signal voids) without filling notches open to the
    outside along either direction. Then ``border`` voxels at each end of axes 0 and 1 are set to
    False (the edge that an upscaling by ``border`` cannot reconstruct).

    Args:
        ref: Reference volume ``(i, j, k)`` or ``(i, j, k, t)``, physical units.
        border: Voxels cropped at both ends of axes 0 and 1 (usually the in-plane scale factor).

    Returns:
        Boolean array of ``ref``'s shape.

    Raises:
        ValueError: If ``ref`` has fewer than 2 dimensions or ``border`` is negative.
    """
    a = np.abs(np.asarray(ref, dtype=np.float64))
    if a.ndim < 2:
        raise ValueError(f"a mask needs at least 2 axes, got shape {a.shape}")
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    thr = FOREGROUND_FRACTION * float(np.percentile(a, FOREGROUND_PERCENTILE))
    m = a > thr
    m = m | (_fill_between(m, 0) & _fill_between(m, 1))
    if border > 0:
        m[:border] = False
        m[-border:] = False
        m[:, :border] = False
        m[:, -border:] = False
    return m


def evaluate(sr: np.ndarray, bicubic: np.ndarray, ref: np.ndarray, *, scale: int) -> dict[str, float]:
    """All metrics of a simulated run: SR and bicubic against the reference.

    Args:
        sr: Super-resolved volume on the reference grid, as written (physical units).
        bicubic: Bicubic upsampling of the same low-resolution input, same grid.
        ref: The original high-resolution volume.
        scale: In-plane scale factor; the masked metrics crop this many voxels at the in-plane edges.

    Returns:
        ``{key: value}`` for every key of :data:`METRIC_KEYS` (PSNR in dB, SSIM unitless). Masked
        values are ``nan`` when the mask is empty (e.g. a volume smaller than twice the border).

    Raises:
        ValueError: On a shape mismatch or a constant reference.
    """
    b = np.asarray(ref, dtype=np.float64)
    arrs = {"bicubic": _pair(bicubic, b)[0], "sr": _pair(sr, b)[0]}
    _check_volume(b, 2)
    r = _range(b, None)
    mask = foreground_mask(b, border=scale)
    if not mask.any():
        logger.warning("foreground mask is empty (shape %s, border %d)", b.shape, scale)
    # Each map is computed once and averaged both over the volume and over the mask.
    maps2d = dict(zip(arrs, _ssim_maps(list(arrs.values()), b, data_range=r, axes=(0, 1)), strict=True))
    maps3d = dict(zip(arrs, _ssim_maps(list(arrs.values()), b, data_range=r, axes=(0, 1, 2)), strict=True))
    out: dict[str, float] = {}
    for name, arr in arrs.items():
        out[f"psnr_{name}"] = psnr(arr, b, data_range=r)
        out[f"ssim_{name}"] = _slice_mean(maps2d[name], None, 2)
        out[f"ssim3d_{name}"] = float(maps3d[name].mean())
        if mask.any():
            out[f"psnr_{name}_masked"] = psnr(arr, b, data_range=r, mask=mask)
            out[f"ssim_{name}_masked"] = _slice_mean(maps2d[name], mask, 2)
        else:
            out[f"psnr_{name}_masked"] = math.nan
            out[f"ssim_{name}_masked"] = math.nan
    return {k: out[k] for k in METRIC_KEYS}
