"""Figures of a study in radiological display: the comparison figure and the three-plane mosaic.

Every panel is turned with :mod:`mrisr.display` (nibabel's orientation tools; patient left on the
image right in axial and coronal views), drawn in mm with the physical aspect, and carries its
orientation letters, a scale bar in mm and the voxel slice index (and frame, for 4D studies).

:func:`compare_figure` (``<id>_compare.png``), four columns:

1. the *main plane* (:func:`mrisr.display.main_plane`: the plane that contains the refined axes, so a
   thick-slice ``--scale 1,1,F`` study is shown in a plane through the slice axis): the reference
   (``--simulate``), the input (nearest-neighbour: each input voxel shows as a block), bicubic and SR;
2. the same panels zoomed on the window where SR and bicubic differ most;
3. maps: with a reference ``|bicubic − reference|`` and ``|SR − reference|`` on one colour scale,
   otherwise ``|SR − bicubic|``; the data-consistency residual (SR degraded onto the input grid minus
   the input) and the ensemble spread (uncertainty) when they are given;
4. SR in the three planes through the volume centre, and the study's numbers.

:func:`mosaic_figure` (``<id>_mosaic.png``): SR at five slices in each of the three planes.

Intensities are in the volume's own units (the input's, after NIfTI scaling / DICOM rescale).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mrisr.display import Display, busiest_window, main_plane, plane_axes, plane_extent, plane_image
from mrisr.fsutil import atomic_path
from mrisr.panels import check_3d, decorate, pyplot, slice_label, top, window

logger = logging.getLogger(__name__)

ZOOM_FRACTION = 0.25
"""Side of the zoom window as a fraction of the main plane's size (at least 8 display pixels)."""
DPI = 100
UNITS = "input units"


@dataclass(frozen=True)
class FigureData:
    """What the comparison figure shows (3D arrays: the first frame of a 4D study).

    Attributes:
        sr: Super-resolved volume ``(i, j, k)`` on the output grid.
        affine: 4×4 RAS affine of the output grid, mm.
        factors: Per-axis refinement (voxel order).
        lowres: The input on the coarse grid ``(i/f_i, j/f_j, k/f_k)`` (``--simulate``: the degraded
            reference), or ``None``.
        bicubic: Bicubic upsampling on the output grid, or ``None`` to interpolate ``lowres`` in the
            shown plane only (no full-size volume is made for the figure).
        reference: Original high-resolution volume (``--simulate``), or ``None``.
        residual: Data-consistency residual on the coarse grid (SR degraded minus input), or ``None``.
        uncertainty: Ensemble spread (standard deviation) on the output grid, or ``None``.
        sr_label: Name of the SR panels (``ESPCN``, ``SRCNN``; ``bicubic (fallback)`` when the output
            is an interpolation).
        frames: Frames of the study (4D: the figure shows frame 0 of them).
    """

    sr: np.ndarray
    affine: np.ndarray
    factors: tuple[int, int, int]
    lowres: np.ndarray | None = None
    bicubic: np.ndarray | None = None
    reference: np.ndarray | None = None
    residual: np.ndarray | None = None
    uncertainty: np.ndarray | None = None
    sr_label: str = "SR"
    frames: int = 1


def preload() -> None:
    """Import matplotlib (with the Agg backend) now; called from a background thread to hide its cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot


def _bicubic_plane(lowres: np.ndarray, factors: tuple[int, int, int], vox_axis: int, hr_index: int) -> np.ndarray:
    """Bicubic upsampling (clamped to the input's range) of the fine slice ``hr_index`` across ``vox_axis``.

    Only a slab of ±3 input slices is interpolated: the cubic kernel reaches 2 input voxels, so the
    slice equals that of the whole volume's interpolation. Returns a 3D array, 1 voxel thick.
    """
    from mrisr.degradation import upsample_volume

    f = int(factors[vox_axis])
    lo_idx = hr_index // f
    start, stop = max(0, lo_idx - 3), min(lowres.shape[vox_axis], lo_idx + 4)
    slab = np.take(lowres, np.arange(start, stop), axis=vox_axis)
    shape = [n * int(fa) for n, fa in zip(slab.shape, factors, strict=True)]
    up = np.clip(upsample_volume(slab, shape), float(lowres.min()), float(lowres.max()))
    return np.take(up, [hr_index - start * f], axis=vox_axis)


def _label(name: str, metrics: Mapping[str, Any] | None, key: str | None) -> str:
    if not metrics or key is None:
        return name
    parts = []
    p, s = metrics.get(f"psnr_{key}"), metrics.get(f"ssim_{key}")
    if isinstance(p, int | float) and not isinstance(p, bool):
        parts.append(f"PSNR {p:.2f} dB")
    if isinstance(s, int | float) and not isinstance(s, bool):
        parts.append(f"SSIM {s:.4f}")
    return f"{name}\n{' · '.join(parts)}" if parts else name


def compare_figure(
    path: str | Path,
    data: FigureData,
    *,
    metrics: Mapping[str, Any] | None = None,
    notes: Mapping[str, str] | None = None,
    title: str,
) -> Path:
    """Write the comparison PNG of one study (see the module docstring for its panels).

    Args:
        path: Output PNG path (written atomically).
        data: The volumes to show.
        metrics: PSNR/SSIM keyed as :func:`mrisr.metrics.evaluate` returns them, or ``None``.
        notes: Extra ``{name: value}`` lines for the numbers panel (scale, views, consistency...).
        title: Figure title (usually the study id).

    Returns:
        The written path.

    Raises:
        ValueError: When an array is not 3D, or ``bicubic``, ``reference`` or ``uncertainty`` are not on
            the grid of ``sr``.
    """
    plt = pyplot()
    from matplotlib.patches import Rectangle

    sr = np.asarray(data.sr)
    check_3d("sr", sr)
    for name in ("bicubic", "reference", "uncertainty"):
        check_3d(name, getattr(data, name), sr.shape)
    check_3d("lowres", data.lowres)
    check_3d("residual", data.residual)
    disp = Display.of(data.affine, sr.shape)
    coarse = disp.coarse(data.factors)
    plane = main_plane(disp, data.factors)
    fixed, _, _ = plane_axes(plane)
    idx = disp.shape[fixed] // 2
    vox = disp.vox_axis(fixed)
    lo_idx = idx // int(data.factors[vox])

    def hr(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else plane_image(disp.turn(a), plane, idx).astype(np.float64)

    def lr(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else plane_image(coarse.turn(a), plane, lo_idx).astype(np.float64)

    srs, ref = hr(sr), hr(data.reference)
    assert srs is not None
    if data.bicubic is not None:
        bic = hr(data.bicubic)
    elif data.lowres is not None:
        one = _bicubic_plane(np.asarray(data.lowres), data.factors, vox, disp.vox_index(fixed, idx))
        bic = plane_image(Display(disp.transform, (1, 1, 1), disp.spacing, disp.oblique).turn(one), plane, 0)
        bic = bic.astype(np.float64)
    else:
        bic = None
    low, res, unc = lr(data.lowres), lr(data.residual), hr(data.uncertainty)
    extent = plane_extent(disp, plane)
    vmin, vmax = window(ref if ref is not None else srs)
    zh = max(min(8, srs.shape[0]), round(srs.shape[0] * ZOOM_FRACTION))
    zw = max(min(8, srs.shape[1]), round(srs.shape[1] * ZOOM_FRACTION))
    head = srs > 0.1 * np.percentile(np.abs(srs), 99) if np.any(srs) else None  # rule of metrics.foreground_mask
    zr, zc = busiest_window(srs - bic if bic is not None else srs, (zh, zw), inside=head)
    px_w, px_h = (extent[1] - extent[0]) / srs.shape[1], (extent[2] - extent[3]) / srs.shape[0]
    zbox = (zc * px_w, (zc + zw) * px_w, (zr + zh) * px_h, zr * px_h)  # mm: left, right, bottom, top

    Panel = tuple[str, np.ndarray | None, str | None, tuple[float, float, float, float]]
    lextent = plane_extent(coarse, plane)
    panels: list[Panel] = []
    if ref is not None:
        panels.append(("reference", ref, None, extent))
    panels += [("input (nearest)", low, None, lextent), ("bicubic", bic, "bicubic", extent),
               (data.sr_label, srs, "sr", extent)]  # fmt: skip
    ncol, col_w = 4, 3.5
    # Rows as tall as what they show: a thin slab's plane (thick slices, few of them) takes little room.
    aspect = [(e[2] - e[3]) / (e[1] - e[0]) for e in (plane_extent(disp, p) for p in ("axial", "coronal", "sagittal"))]
    main_ratio = min(1.4, max(0.2, (extent[2] - extent[3]) / (extent[1] - extent[0])))
    ratios = [main_ratio] * 3 + [min(1.4, max(0.45, *aspect))]
    # (the colour bars take some of each column's width, so the images are a little less tall than wide)
    fig = plt.figure(figsize=(col_w * ncol, col_w * (0.82 * sum(ratios[:3]) + ratios[3]) + 2.0), layout="constrained")
    try:
        orient = " · axes nearest to an oblique grid" if disp.oblique else ""
        fig.suptitle(f"{title} — {slice_label(disp, plane, idx, data.frames)}{orient}", fontsize=13)
        axes = fig.subplots(4, ncol, squeeze=False, gridspec_kw={"height_ratios": ratios})
        for ax in axes.ravel():
            ax.set_axis_off()
        for col, (name, img, key, ext) in enumerate(panels):
            ax = axes[0][col]
            if img is None:
                ax.text(0.5, 0.5, "not available", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax, extent=ext, interpolation="nearest")
                ax.add_patch(Rectangle((zbox[0], zbox[3]), zbox[1] - zbox[0], zbox[2] - zbox[3], fill=False,
                                       edgecolor="#ffd54a", linewidth=1.2))  # fmt: skip
                decorate(ax, plane, ext)
            ax.set_title(_label(name, metrics, key), fontsize=11)
            zax = axes[1][col]
            if img is not None:
                zax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax, extent=ext, interpolation="nearest")
                zax.set_xlim(zbox[0], zbox[1])
                zax.set_ylim(zbox[2], zbox[3])
            zax.set_title(f"{name} (zoom ×{srs.shape[1] / zw:.1f})", fontsize=11)
        _maps_row(fig, axes[2], plane=plane, extent=extent, lextent=lextent, srs=srs, bic=bic, ref=ref, res=res,
                  unc=unc, sr_label=data.sr_label)  # fmt: skip
        _three_planes(axes[3][:3], disp, sr, data.frames)
        _numbers(axes[3][3], metrics, notes)
        with atomic_path(Path(path)) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    logger.debug("wrote comparison figure %s", path)
    return Path(path)


def _map(fig: Any, ax: Any, img: np.ndarray, *, title: str, cmap: str, vmin: float, vmax: float,
         extent: tuple[float, float, float, float], plane: str, unit: str) -> None:  # fmt: skip
    im = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, extent=extent, interpolation="nearest")
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    cb.set_label(unit, fontsize=9)
    cb.ax.tick_params(labelsize=8)
    decorate(ax, plane, extent, bar_color="black" if cmap == "RdBu_r" else "white")
    ax.set_title(title, fontsize=11)


def _maps_row(
    fig: Any,
    axes: Any,
    *,
    plane: str,
    extent: tuple[float, float, float, float],
    lextent: tuple[float, float, float, float],
    srs: np.ndarray,
    bic: np.ndarray | None,
    ref: np.ndarray | None,
    res: np.ndarray | None,
    unc: np.ndarray | None,
    sr_label: str,
) -> None:
    """Error maps (one shared scale), the consistency residual and the ensemble spread."""
    col = 0
    unit = f"intensity ({UNITS})"
    if ref is not None and bic is not None:
        eb, es = np.abs(bic - ref), np.abs(srs - ref)
        vtop = top(eb, es)
        for name, err in (("bicubic", eb), (sr_label, es)):
            _map(fig, axes[col], err, title=f"|{name} − reference|", cmap="magma", vmin=0.0, vmax=vtop,
                 extent=extent, plane=plane, unit=unit)  # fmt: skip
            col += 1
    elif bic is not None:
        d = np.abs(srs - bic)
        _map(fig, axes[col], d, title=f"|{sr_label} − bicubic| (what SR changed)", cmap="magma", vmin=0.0,
             vmax=top(d), extent=extent, plane=plane, unit=unit)  # fmt: skip
        col += 1
    if res is not None:
        vtop = top(res)
        _map(fig, axes[col], res, title="consistency residual\n(SR degraded − input)", cmap="RdBu_r", vmin=-vtop,
             vmax=vtop, extent=lextent, plane=plane, unit=unit)  # fmt: skip
        col += 1
    if unc is not None:
        _map(fig, axes[col], unc, title="ensemble spread (std of views)", cmap="viridis", vmin=0.0,
             vmax=top(unc), extent=extent, plane=plane, unit=unit)  # fmt: skip


def _three_planes(axes: Any, disp: Display, vol: np.ndarray, frames: int) -> None:
    ras = disp.turn(vol)
    vmin, vmax = window(ras[::3, ::3, ::2])
    for ax, plane in zip(axes, ("axial", "coronal", "sagittal"), strict=True):
        fixed, _, _ = plane_axes(plane)
        idx = disp.shape[fixed] // 2
        ext = plane_extent(disp, plane)
        ax.imshow(plane_image(ras, plane, idx), cmap="gray", vmin=vmin, vmax=vmax, extent=ext, interpolation="nearest")
        decorate(ax, plane, ext)
        ax.set_title(f"SR {slice_label(disp, plane, idx, frames)}", fontsize=10)


def _numbers(ax: Any, metrics: Mapping[str, Any] | None, notes: Mapping[str, str] | None) -> None:
    lines = []
    for key, name in (("psnr_bicubic", "PSNR bicubic"), ("psnr_sr", "PSNR SR"), ("ssim_bicubic", "SSIM bicubic"),
                      ("ssim_sr", "SSIM SR")):  # fmt: skip
        v = (metrics or {}).get(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            lines.append(f"{name}: {v:.2f} dB" if key.startswith("psnr") else f"{name}: {v:.4f}")
    lines += [f"{k}: {v}" for k, v in (notes or {}).items()]
    ax.text(0.02, 0.98, "\n".join(lines) or "no metrics (plain enhance)", transform=ax.transAxes, ha="left",
            va="top", fontsize=10, family="monospace", wrap=True)  # fmt: skip


def mosaic_figure(
    path: str | Path, sr: np.ndarray, affine: np.ndarray, *, title: str, per_plane: int = 5, frames: int = 1
) -> Path:
    """Write a PNG of ``sr`` at ``per_plane`` evenly spaced slices in each of the three planes.

    Args:
        path: Output PNG path (written atomically).
        sr: Volume ``(i, j, k)`` (the first frame of a 4D study).
        affine: Its 4×4 RAS affine, mm.
        title: Figure title.
        per_plane: Slices per plane (columns).
        frames: Frames of the study (shown in the labels).

    Returns:
        The written path.
    """
    plt = pyplot()
    vol = np.asarray(sr)
    check_3d("sr", vol)
    disp = Display.of(affine, vol.shape)
    ras = disp.turn(vol)
    vmin, vmax = window(ras[::3, ::3, ::2])
    planes = ("axial", "coronal", "sagittal")
    # Rows as tall as their planes (a thin slab's coronal and sagittal rows take little room).
    ratios = [min(1.5, max(0.12, (e[2] - e[3]) / (e[1] - e[0]))) for e in (plane_extent(disp, p) for p in planes)]
    col_w = 2.6
    fig = plt.figure(figsize=(col_w * per_plane, col_w * sum(ratios) + 0.45 * 3 + 0.5), layout="constrained")
    try:
        fig.suptitle(title, fontsize=13)
        axes = fig.subplots(3, per_plane, squeeze=False, gridspec_kw={"height_ratios": ratios})
        for row, plane in enumerate(planes):
            fixed, _, _ = plane_axes(plane)
            n = disp.shape[fixed]
            picks = sorted({min(n - 1, round((c + 1) * n / (per_plane + 1))) for c in range(per_plane)})
            ext = plane_extent(disp, plane)
            for col in range(per_plane):
                ax = axes[row][col]
                ax.set_axis_off()
                if col >= len(picks):
                    continue
                ax.imshow(plane_image(ras, plane, picks[col]), cmap="gray", vmin=vmin, vmax=vmax, extent=ext,
                          interpolation="nearest")  # fmt: skip
                decorate(ax, plane, ext, letters=col == 0)
                ax.set_title(slice_label(disp, plane, picks[col], frames), fontsize=9)
        with atomic_path(Path(path)) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return Path(path)
