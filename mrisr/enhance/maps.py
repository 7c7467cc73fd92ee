"""What is written beside a study's output: quality maps (ensemble spread, data-consistency
residual), their summaries, and the figures.

* **Ensemble spread** (``--save-uncertainty``): per voxel, the standard deviation over the ensemble
  views (flips/transposes, :func:`mrisr.inference.ensemble_views`) of the network's output, in the
  output's intensity units, on the output grid (``<id>_uncertainty.nii.gz``). Computed only when
  asked: it needs one more float32 volume.
* **Data-consistency residual**: the SR volume degraded back onto the input grid with the
  degradation model the tool uses, minus the input, on the input grid (``<id>_residual.nii.gz`` with
  ``--save-residual``). It is computed for every study (the consistency PSNR needs it anyway).

Each is summarised inside the head: :func:`mrisr.metrics.foreground_mask` of the volume on that
grid (the rule of the masked metrics). See docs/metrics.md for what they mean and do not prove.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from mrisr.degradation import degrade_frames
from mrisr.frames import first_frame
from mrisr.io import Volume
from mrisr.metrics import foreground_mask, psnr


def _head(a: np.ndarray, border: int) -> np.ndarray:
    m = foreground_mask(a, border=border)
    if not m.any():
        m = foreground_mask(a, border=0)
    return m


def _finite_or_none(v: float) -> float | None:
    return round(float(v), 6) if math.isfinite(v) else None


def consistency(
    sr: np.ndarray, lr: np.ndarray, factors: tuple[int, int, int], degradation: str
) -> tuple[dict[str, Any], np.ndarray]:
    """The residual ``degrade(sr) − lr`` and its summary.

    Args:
        sr: The output as written (physical units), on the refined grid; 3D or 4D.
        lr: The input on its own grid (``--simulate``: the degraded reference), same units.
        factors: Per-axis refinement.
        degradation: Degradation model (``bicubic``, ``box``, ``kspace``) used to degrade ``sr``.

    Returns:
        ``({"psnr_lr", "degradation", "residual_rms", "residual_rms_head", "residual_max_abs_head"},
        residual)``: PSNR in dB of the degraded SR against the input with the input's range as data
        range, RMS of the residual over the whole grid and inside the head, the largest absolute
        residual inside the head (intensity units); the residual is float32 on the input grid.
    """
    lr32 = np.asarray(lr, dtype=np.float32)
    residual = degrade_frames(sr, factors, degradation)
    residual -= lr32
    rng = float(lr32.max() - lr32.min()) or 1.0
    head = _head(lr32, border=1)
    r_head = residual[head]
    summary: dict[str, Any] = {
        "psnr_lr": _finite_or_none(psnr(residual + lr32, lr32, data_range=rng)),
        "degradation": degradation,
        "residual_rms": _finite_or_none(float(np.sqrt(np.mean(np.square(residual, dtype=np.float64))))),
        "residual_rms_head": _finite_or_none(float(np.sqrt(np.mean(np.square(r_head, dtype=np.float64))))),
        "residual_max_abs_head": _finite_or_none(float(np.abs(r_head).max())) if r_head.size else None,
    }
    return summary, residual


def uncertainty(spread: np.ndarray, sr: np.ndarray, factors: tuple[int, int, int], views: int) -> dict[str, Any]:
    """Summary of an ensemble spread map inside the head of ``sr``.

    Returns:
        ``{"views", "mean_head", "p95_head", "relative_mean_head"}``: the mean and 95th percentile of
        the spread inside the head (intensity units) and the mean divided by the 99th percentile of
        ``sr`` inside the head (unitless, comparable between studies).
    """
    head = _head(np.asarray(sr), border=max(factors[0], factors[1]))
    s = np.asarray(spread, dtype=np.float64)[head]
    top = float(np.percentile(np.abs(np.asarray(sr)[head]), 99)) if s.size else 0.0
    mean = float(s.mean()) if s.size else math.nan
    return {
        "views": views,
        "mean_head": _finite_or_none(mean),
        "p95_head": _finite_or_none(float(np.percentile(s, 95))) if s.size else None,
        "relative_mean_head": _finite_or_none(mean / top) if top > 0 else None,
    }


def write_map(vol: Volume, path: Path) -> None:
    """Write a map as float32 NIfTI (whatever the output's format), atomically."""
    from mrisr.io.nifti import write_nifti

    write_nifti(vol, path, dtype=np.dtype(np.float32))


def output_label(network: str, output_from: str) -> str:
    """Name of the SR panels: the network, ``<network> (adapted)`` or ``bicubic (fallback)``."""
    return {"bicubic": "bicubic (fallback)", "adapted network": f"{network} (adapted)"}.get(output_from, network)


def draw_figures(
    figure_path: Path,
    mosaic_path: Path,
    *,
    title: str,
    arrays: dict[str, np.ndarray | None],
    metrics: dict[str, float] | None,
    affine: np.ndarray,
    factors: tuple[int, int, int],
    network: str,
    output_from: str,
    notes: dict[str, str],
) -> bool:
    """Draw the comparison figure and the mosaic (:mod:`mrisr.figures`); ``False`` without matplotlib.

    Args:
        figure_path: Where the comparison PNG goes.
        mosaic_path: Where the mosaic PNG goes.
        title: Figure title (the study id).
        arrays: ``sr``, ``lowres``, ``bicubic``, ``reference``, ``residual``, ``uncertainty`` (3D or
            4D; ``None`` where not available).
        metrics: PSNR/SSIM of ``--simulate``, or ``None``.
        affine: RAS affine of the output grid.
        factors: Per-axis refinement.
        network: Name of the network (``ESPCN``).
        output_from: ``network``, ``adapted network`` or ``bicubic`` (a fallback is labelled so).
        notes: Extra lines for the numbers panel.
    """
    try:
        from mrisr.figures import FigureData, compare_figure, mosaic_figure
    except ImportError:  # figures are optional (matplotlib missing on a lean install)
        return False
    sr = arrays["sr"]
    assert sr is not None
    label = output_label(network, output_from)
    frames = sr.shape[3] if sr.ndim == 4 else 1
    data = FigureData(
        sr=np.asarray(first_frame(sr)),
        affine=affine,
        factors=factors,
        lowres=first_frame(arrays.get("lowres")),
        bicubic=first_frame(arrays.get("bicubic")),
        reference=first_frame(arrays.get("reference")),
        residual=first_frame(arrays.get("residual")),
        uncertainty=first_frame(arrays.get("uncertainty")),
        sr_label=label,
        frames=frames,
    )
    all_notes = {"scale": "×".join(map(str, factors)), "output from": output_from, **notes}
    compare_figure(figure_path, data, metrics=metrics, notes=all_notes, title=title)
    mosaic_figure(mosaic_path, data.sr, affine, title=f"{title} — {label}", frames=frames)
    return True
