"""Training losses: MSE, L1 and ``1 - SSIM`` on batches of slices ``(N, 1, H, W)``."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from mrisr.metrics import gaussian_window


def _gaussian_kernel(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The 2D SSIM window ``(1, 1, size, size)``: the outer product of the metrics' 1D window."""
    g = torch.from_numpy(gaussian_window(size, sigma))
    return (g[:, None] * g[None, :])[None, None]


def ssim_loss(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """``1 - SSIM`` of batches ``(N, 1, H, W)`` (11×11 Gaussian window, σ 1.5, valid convolution)."""
    w = _gaussian_kernel().to(x.device, x.dtype)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = F.conv2d(x, w), F.conv2d(y, w)
    vx = F.conv2d(x * x, w) - mx * mx
    vy = F.conv2d(y * y, w) - my * my
    cxy = F.conv2d(x * y, w) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return 1.0 - s.mean()


def loss_fn(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss a run's ``loss`` setting names (``mse`` for any other name)."""
    if name == "l1":
        return F.l1_loss
    if name == "ssim":
        return ssim_loss
    return F.mse_loss
