"""Whole-volume validation: SR and clamped bicubic against the high-resolution volume."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from mrisr.degradation import crop_array_to_multiple, degrade_volume, upsample_volume
from mrisr.inference import super_resolve_array
from mrisr.metrics import psnr, ssim
from mrisr.training.config import TrainConfig


def val_factors(cfg: TrainConfig) -> tuple[int, int, int]:
    """Validation factors: the trained ones, with a through-plane factor put on axis 1.

    Validation volumes may be a thin slab of axis-2 slices (one study), so the one-axis degradation
    goes along axis 1, which is as long as the study.
    """
    return (1, cfg.scale, 1) if cfg.through_plane else cfg.factors


def validate(
    model: nn.Module,
    volumes: Sequence[tuple[str, np.ndarray]],
    scale: int | tuple[int, int, int],
    mode: str,
    *,
    axis: int = 2,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Mean PSNR/SSIM of SR and of clamped bicubic over whole normalised validation volumes.

    ``scale`` is ``s`` (in-plane, ``(s, s, 1)``) or per-axis factors. Each volume is cropped to a
    multiple of the factors, degraded by ``mode`` (:func:`mrisr.degradation.degrade_volume`), and
    super-resolved with :func:`mrisr.inference.super_resolve_array` (bicubic, then the network, slice
    by slice across ``axis``). The bicubic baseline is clamped to the low-resolution value range.
    Metrics use the high-resolution volume's range as peak (:mod:`mrisr.metrics`).
    """
    factors = (scale, scale, 1) if isinstance(scale, int) else tuple(int(f) for f in scale)
    rows: list[tuple[float, float, float, float]] = []
    was_training = model.training
    for _, hr in volumes:
        hr = crop_array_to_multiple(hr, factors)
        lr = degrade_volume(hr, factors, mode)
        bic = np.clip(upsample_volume(lr, hr.shape), float(lr.min()), float(lr.max()))
        sr = super_resolve_array(model, lr, factors, axis=axis, device=device)  # type: ignore[arg-type]
        rng = float(hr.max() - hr.min()) or 1.0
        rows.append(
            (
                psnr(sr, hr, data_range=rng),
                psnr(bic, hr, data_range=rng),
                ssim(sr, hr, data_range=rng),
                ssim(bic, hr, data_range=rng),
            )
        )
    model.train(was_training)
    m = np.mean(np.asarray(rows, dtype=np.float64), axis=0)
    return {
        "val_psnr_sr": float(m[0]),
        "val_psnr_bicubic": float(m[1]),
        "val_ssim_sr": float(m[2]),
        "val_ssim_bicubic": float(m[3]),
    }
