"""Comparison figures of a study: original / down-scaled / bicubic / SRCNN, with zoom and error map.

Arrays are 3D in voxel order ``(i, j, k)`` (see :mod:`mrisr.io`); the middle k-slice is shown,
transposed so that ``i`` runs horizontally and ``j`` upwards (``origin="lower"``). Down-scaled inputs
are drawn over the same extent as the high-resolution grid with nearest-neighbour display, so each
coarse voxel shows as a block.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mrisr.fsutil import atomic_path

logger = logging.getLogger(__name__)

ZOOM_FRACTION = 0.25
"""Side of the zoomed central region as a fraction of the in-plane size."""


def _middle_slice(vol: np.ndarray) -> np.ndarray:
    a = np.asarray(vol)
    if a.ndim == 4:
        a = a[..., 0]
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise ValueError(f"expected a 3D (i, j, k) array, got shape {np.shape(vol)}")
    return np.asarray(a[:, :, a.shape[2] // 2], dtype=np.float64)


def _window(s: np.ndarray) -> tuple[float, float]:
    finite = s[np.isfinite(s)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [0.5, 99.5])
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def _zoom_box(shape: tuple[int, int]) -> tuple[slice, slice]:
    """Central region of an ``(I, J)`` slice: ``ZOOM_FRACTION`` of each side, at least 4 voxels."""
    out = []
    for n in shape:
        w = max(min(n, 4), round(n * ZOOM_FRACTION))
        start = (n - w) // 2
        out.append(slice(start, start + w))
    return out[0], out[1]


def _label(name: str, metrics: Mapping[str, Any] | None, key: str | None) -> str:
    if not metrics or key is None:
        return name
    parts = []
    p, s = metrics.get(f"psnr_{key}"), metrics.get(f"ssim_{key}")
    if isinstance(p, int | float):
        parts.append(f"PSNR {p:.2f} dB")
    if isinstance(s, int | float):
        parts.append(f"SSIM {s:.4f}")
    return f"{name}\n{' · '.join(parts)}" if parts else name


def _show(ax: Any, img: np.ndarray | None, vmin: float, vmax: float, extent: tuple[float, ...]) -> bool:
    """Draw a slice (``(i, j)``, i horizontal) in grey, or say it is not available; True if drawn."""
    if img is None:
        ax.text(0.5, 0.5, "not available", ha="center", va="center", transform=ax.transAxes)
        return False
    ax.imshow(img.T, cmap="gray", vmin=vmin, vmax=vmax, origin="lower", extent=extent, interpolation="nearest")
    return True


def preload() -> None:
    """Import matplotlib (with the Agg backend) now; called from a background thread to hide its cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot


def compare_figure(
    path: str | Path,
    *,
    reference: np.ndarray | None,
    lowres: np.ndarray | None,
    bicubic: np.ndarray,
    sr: np.ndarray,
    metrics: Mapping[str, Any] | None,
    title: str,
    sr_label: str = "SRCNN",
) -> Path:
    """Write a PNG comparing the middle k-slice of the inputs and outputs of one study.

    ``sr_label`` names the network's panels (``"SRCNN"``, ``"ESPCN"``).

    With a reference (simulation): top row original / down-scaled / bicubic / SRCNN, bottom row the
    zoomed central region of original / bicubic / SRCNN and the error map ``|SR − original|``.
    Without a reference (plain enhance): input (nearest-neighbour display) / bicubic / SRCNN, with
    their zoomed central regions below. Panels carry PSNR/SSIM from ``metrics`` where known (keys
    ``psnr_bicubic``, ``ssim_bicubic``, ``psnr_sr``, ``ssim_sr``).

    Args:
        path: Output PNG path (written atomically).
        reference: Original high-resolution volume ``(i, j, k)`` or ``None``.
        lowres: Low-resolution input ``(i/s_i, j/s_j, k/s_k)`` or ``None``.
        bicubic: Bicubic upsampling on the high-resolution grid ``(i, j, k)``.
        sr: Super-resolved volume on the same grid.
        metrics: Metric values (see :func:`mrisr.metrics.evaluate`) or ``None``.
        title: Figure title (usually the study id).

    Returns:
        The written path.

    Raises:
        ValueError: When the arrays are not 3D or ``bicubic``, ``sr`` and ``reference`` differ in shape.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    out = Path(path)
    bic = _middle_slice(bicubic)
    srs = _middle_slice(sr)
    ref = None if reference is None else _middle_slice(reference)
    low = None if lowres is None else _middle_slice(lowres)
    if bic.shape != srs.shape or (ref is not None and ref.shape != bic.shape):
        raise ValueError(
            f"bicubic {np.shape(bicubic)}, sr {np.shape(sr)} and reference "
            f"{None if reference is None else np.shape(reference)} must share one grid"
        )
    vmin, vmax = _window(ref if ref is not None else bic)
    ni, nj = bic.shape
    extent = (-0.5, ni - 0.5, -0.5, nj - 0.5)
    zi, zj = _zoom_box((ni, nj))

    Panel = tuple[str, np.ndarray | None, str | None]
    top: list[Panel]
    zooms: list[Panel]
    if ref is not None:
        top = [
            ("original", ref, None),
            ("down-scaled", low, None),
            ("bicubic", bic, "bicubic"),
            (sr_label, srs, "sr"),
        ]
        zooms = [("original", ref, None), ("bicubic", bic, "bicubic"), (sr_label, srs, "sr")]
    else:
        top = [("input", low, None), ("bicubic", bic, "bicubic"), (sr_label, srs, "sr")]
        zooms = [("input", low, None), ("bicubic", bic, "bicubic"), (sr_label, srs, "sr")]
    ncol = len(top)
    fig, axes = plt.subplots(2, ncol, figsize=(3.6 * ncol, 7.6), squeeze=False)
    try:
        fig.suptitle(title)
        for ax, (name, img, key) in zip(axes[0], top, strict=True):
            if _show(ax, img, vmin, vmax, extent):
                ax.add_patch(
                    Rectangle(
                        (zi.start - 0.5, zj.start - 0.5), zi.stop - zi.start, zj.stop - zj.start,
                        fill=False, edgecolor="yellow", linewidth=0.8,
                    )
                )  # fmt: skip
            ax.set_title(_label(name, metrics, key), fontsize=9)
            ax.set_axis_off()
        zextent = (zi.start - 0.5, zi.stop - 0.5, zj.start - 0.5, zj.stop - 0.5)
        for ax, (name, img, key) in zip(axes[1], zooms, strict=False):
            if _show(ax, img, vmin, vmax, extent):
                ax.set_xlim(zextent[0], zextent[1])
                ax.set_ylim(zextent[2], zextent[3])
            ax.set_title(f"{_label(name, metrics, key)}\n(zoom)", fontsize=9)
            ax.set_axis_off()
        if ref is not None:
            ax = axes[1][3]
            err = np.abs(srs - ref)
            emax = float(np.percentile(err, 99.5)) or float(err.max()) or 1.0
            im = ax.imshow(err.T, cmap="magma", vmin=0.0, vmax=emax, origin="lower", extent=extent)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
            ax.set_title(f"|{sr_label} − original|", fontsize=9)
            ax.set_axis_off()
        fig.tight_layout()
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=80)
    finally:
        plt.close(fig)
    logger.debug("wrote comparison figure %s", out)
    return out
