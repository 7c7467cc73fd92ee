"""Per-study self-supervised adaptation (zero-shot SR / SMORE style).

Before a study is enhanced, a *copy* of the network is fine-tuned on the study itself, with no other
data: the study's own slices (already low-resolution) are degraded further by the same factors, and
the network learns to map them back. Part of the slices is held out; the weights with the lowest
held-out error are kept, and when no step beats the unadapted network on the held-out slices the
original weights are kept — so adaptation cannot make the held-out fit worse than it was.

Everything here is seeded: on the CPU a given study, network and configuration always give the same
adapted weights.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mrisr.inference import plan_passes
from mrisr.transforms import downsample, upsample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdaptConfig:
    """Settings of the adaptation.

    Attributes:
        steps: Optimisation steps at most.
        lr: Adam learning rate.
        batch_size: Patches per step.
        patch_size: Side of the (study-resolution) target patches, in voxels (cut to the slice size).
        val_every: Held-out evaluation every so many steps.
        val_share: Share of the slices held out (every n-th slice).
        degradation: ``bicubic``, ``box``, ``kspace`` or ``mixed`` (bicubic and box alternating).
        seed: Seed of patch sampling and augmentation.
    """

    steps: int = 200
    lr: float = 1e-4
    batch_size: int = 16
    patch_size: int = 48
    val_every: int = 20
    val_share: float = 0.2
    degradation: str = "mixed"
    seed: int = 0


@dataclass(frozen=True)
class AdaptResult:
    """What adaptation did (recorded in the sidecar)."""

    steps: int
    best_step: int
    val_mse_before: float
    val_mse_after: float
    val_mse_bicubic: float
    n_train_slices: int
    n_val_slices: int
    seconds: float
    degradation: str
    kept_original: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


def _pairs_source(x: np.ndarray, factors: tuple[int, int, int], axis: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Slices for self-supervision: the first pass's slices and its in-plane factors."""
    cut, fs = plan_passes(factors, axis)[0]
    slices = np.moveaxis(np.asarray(x, dtype=np.float32), cut, 0)
    return slices, (int(fs[0]), int(fs[1]))


def _make_input(hr: torch.Tensor, fs: tuple[int, int], mode: str) -> torch.Tensor:
    """Degrade ``hr`` patches by ``fs`` then bicubic back to their size (the network's input)."""
    return upsample(downsample(hr, fs, mode), hr.shape[-2:])


def _crop_multiple(a: np.ndarray, fs: tuple[int, int]) -> np.ndarray:
    h, w = a.shape[-2:]
    return a[..., : h - h % fs[0], : w - w % fs[1]]


def adapt_model(
    model: nn.Module,
    x: np.ndarray,
    factors: tuple[int, int, int],
    *,
    axis: int = 2,
    config: AdaptConfig | None = None,
    device: torch.device | str = "cpu",
) -> tuple[nn.Module, AdaptResult]:
    """Fine-tune a copy of ``model`` on a study.

    Args:
        model: The network (left unchanged).
        x: The study's normalised 3D array (the low-resolution input to be enhanced).
        factors: The factors the study will be enhanced by.
        axis: The slicing axis of the enhancement.
        config: Adaptation settings.
        device: Torch device.

    Returns:
        The adapted copy (eval mode) and what happened.

    Raises:
        ValueError: When the study is too small to be degraded once more by ``factors``.
    """
    cfg = config or AdaptConfig()
    t0 = time.perf_counter()
    dev = torch.device(device)
    slices, fs = _pairs_source(x, factors, axis)
    slices = _crop_multiple(slices, fs)
    n, h, w = slices.shape
    if h < 2 * fs[0] or w < 2 * fs[1] or n < 2:
        raise ValueError(f"too small to adapt on: {n} slices of {h}×{w} at factors {fs}")
    # Slices with signal only; every k-th one held out.
    energy = slices.reshape(n, -1).std(axis=1)
    keep = np.flatnonzero(energy > 0.05 * energy.max())
    step = max(2, round(1 / max(cfg.val_share, 1e-3)))
    val_idx = keep[step // 2 :: step]
    train_idx = np.setdiff1d(keep, val_idx)
    if len(val_idx) == 0 or len(train_idx) == 0:
        raise ValueError("too few slices with signal to adapt on")
    ph = min(h - h % fs[0], max(fs[0], cfg.patch_size - cfg.patch_size % fs[0]))
    pw = min(w - w % fs[1], max(fs[1], cfg.patch_size - cfg.patch_size % fs[1]))
    modes = ["bicubic", "box"] if cfg.degradation == "mixed" else [cfg.degradation]

    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    net = copy.deepcopy(model).to(dev).train()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)

    val_hr = torch.from_numpy(np.ascontiguousarray(slices[val_idx]))[:, None]
    val_in = {m: _make_input(val_hr, fs, m) for m in modes}

    def val_mse(module: nn.Module | None) -> float:
        total = 0.0
        with torch.no_grad():
            for m in modes:
                inp = val_in[m].to(dev)
                out = module(inp) if module is not None else inp
                total += float(F.mse_loss(out, val_hr.to(dev)))
        return total / len(modes)

    net.eval()
    before = val_mse(net)
    bicubic = val_mse(None)
    best, best_step, best_state = before, 0, copy.deepcopy(net.state_dict())
    train_t = torch.from_numpy(np.ascontiguousarray(slices[train_idx]))
    square = fs[0] == fs[1] and ph == pw
    for it in range(1, cfg.steps + 1):
        net.train()
        pick = torch.randint(len(train_idx), (cfg.batch_size,), generator=gen)
        ys = torch.randint(h - ph + 1, (cfg.batch_size,), generator=gen)
        xs = torch.randint(w - pw + 1, (cfg.batch_size,), generator=gen)
        hr = torch.stack([train_t[p, y : y + ph, x_ : x_ + pw] for p, y, x_ in zip(pick, ys, xs, strict=True)])[:, None]
        flips = torch.rand(2, generator=gen)
        if flips[0] < 0.5:
            hr = hr.flip(-1)
        if flips[1] < 0.5:
            hr = hr.flip(-2)
        if square and torch.rand(1, generator=gen) < 0.5:
            hr = hr.transpose(-1, -2)
        mode = modes[it % len(modes)]
        inp = _make_input(hr, fs, mode).to(dev)
        loss = F.mse_loss(net(inp), hr.to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if it % cfg.val_every == 0 or it == cfg.steps:
            net.eval()
            cur = val_mse(net)
            if cur < best:
                best, best_step, best_state = cur, it, copy.deepcopy(net.state_dict())
    net.load_state_dict(best_state)
    net.eval()
    result = AdaptResult(
        steps=cfg.steps,
        best_step=best_step,
        val_mse_before=before,
        val_mse_after=best,
        val_mse_bicubic=bicubic,
        n_train_slices=len(train_idx),
        n_val_slices=len(val_idx),
        seconds=round(time.perf_counter() - t0, 3),
        degradation=cfg.degradation,
        kept_original=best_step == 0,
    )
    log.info("adapted: held-out MSE %.3g -> %.3g (bicubic %.3g), best step %d", before, best, bicubic, best_step)
    return net.cpu() if dev.type != "cpu" else net, result
