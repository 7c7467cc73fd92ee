"""Random degraded/high-resolution patch pairs for training (:class:`PatchDataset`).

Each item is drawn from its own random generator seeded by ``(seed, epoch, index)``, so the patches do
not depend on the number of workers or processes, and a resumed run sees the patches an
uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import (
    Compose,
    RandAdjustContrast,
    RandFlip,
    RandGaussianNoise,
    RandRotate90,
    RandScaleIntensity,
)
from monai.utils import convert_to_tensor
from torch.utils.data import Dataset

from mrisr.degradation import degrade_and_upsample, downsample, draw_mode
from mrisr.monai_transforms import SliceStack
from mrisr.training.augment import (
    HR_BLUR_SIGMA,
    ZOOM_OUT,
    gaussian_blur,
    random_bias_field,
    random_contrast,
    tissue_contrast,
)
from mrisr.training.config import TrainConfig


def head_mask(x: np.ndarray, threshold: float) -> np.ndarray:
    """Foreground of a 2D slice with enclosed holes filled (dark CSF inside the head counts as head).

    A voxel is inside when it lies between foreground voxels both along its row and along its column.
    """
    fg = x > threshold
    rows = np.maximum.accumulate(fg, axis=1) & np.maximum.accumulate(fg[:, ::-1], axis=1)[:, ::-1]
    cols = np.maximum.accumulate(fg, axis=0) & np.maximum.accumulate(fg[::-1], axis=0)[::-1]
    return rows & cols


@dataclass
class Piece:
    """A normalised 3D array that patches are drawn from, with the slice axes to use and, where the
    run has them on its grid, tissue probability maps ``(K, *data.shape)``."""

    data: np.ndarray
    axes: tuple[int, ...]
    threshold: float
    tissue: np.ndarray | None = None


def _slice_at(axis: int, k: int) -> tuple[slice | int, ...]:
    """Index of slice ``k`` across ``axis`` of a 3D array (the 2D slice :class:`SliceStack` gives)."""
    return tuple(k if a == axis else slice(None) for a in range(3))


class PatchDataset(Dataset):
    """Random degraded/high-resolution patch pairs; item ``i`` of epoch ``e`` depends only on ``(seed, e, i)``.

    Each item is ``{"input": (1, P, P), "target": (1, P, P)}`` float32 tensors, ``P = cfg.hr_patch``.
    Set :attr:`epoch` before iterating an epoch.
    """

    def __init__(self, pieces: Sequence[Piece], cfg: TrainConfig, length: int) -> None:
        if not pieces:
            raise ValueError("no training volumes")
        self.cfg = cfg
        self.length = length
        self.epoch = 0
        # Every usable (piece, axis, slice) with some foreground, so patches come from the head.
        self.slices: list[tuple[int, int, int]] = []
        for pi, piece in enumerate(pieces):
            for axis in piece.axes:
                counts = (SliceStack(axis)(piece.data) > piece.threshold).reshape(piece.data.shape[axis], -1)
                frac = counts.mean(axis=1)
                good = np.flatnonzero(frac >= 0.02)
                if good.size == 0:
                    good = np.arange(piece.data.shape[axis])
                self.slices.extend((pi, axis, int(k)) for k in good)
        self.pieces = list(pieces)
        self.augment = Compose(
            [
                RandFlip(prob=0.5, spatial_axis=0),
                RandFlip(prob=0.5, spatial_axis=1),
                RandRotate90(prob=0.5, max_k=3),
                RandAdjustContrast(prob=0.5, gamma=(0.7, 1.5)),
                RandScaleIntensity(factors=0.2, prob=0.5),
                RandGaussianNoise(prob=cfg.noise_prob, std=cfg.noise_std),
            ]
        )

    def __len__(self) -> int:
        return self.length

    def _crop(self, rng: np.random.Generator, zoom: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """A ``P``×``P`` patch, its head mask and, when its piece has tissue maps, the same window of
        them ``(K, P, P)``; with ``zoom`` > 1 a ``zoom`` times wider region shrunk to ``P``×``P``
        (antialiased bicubic), so that anatomy is ``zoom`` times smaller per voxel."""
        pi, axis, k = self.slices[int(rng.integers(len(self.slices)))]
        piece = self.pieces[pi]
        img = SliceStack(axis)(piece.data)[k]
        # The maps' slices ride along as extra channels: padded, cut and shrunk as the image is.
        chans = (
            img[None]
            if piece.tissue is None
            else np.concatenate([img[None], piece.tissue[(slice(None), *_slice_at(axis, k))]])
        )
        p = self.cfg.hr_patch
        q = p if zoom == 1.0 else round(p * zoom)
        pad = [(0, 0), (0, max(0, q - img.shape[0])), (0, max(0, q - img.shape[1]))]
        if pad[1][1] or pad[2][1]:
            chans = np.pad(chans, pad, mode="edge")
        img = chans[0]
        mask = head_mask(img, piece.threshold)
        ys, xs = np.nonzero(mask)
        if ys.size:
            j = int(rng.integers(ys.size))
            cy, cx = int(ys[j]), int(xs[j])
        else:
            cy, cx = int(rng.integers(img.shape[0])), int(rng.integers(img.shape[1]))
        y0 = min(max(0, cy - q // 2), img.shape[0] - q)
        x0 = min(max(0, cx - q // 2), img.shape[1] - q)
        cut, pmask = chans[:, y0 : y0 + q, x0 : x0 + q].copy(), mask[y0 : y0 + q, x0 : x0 + q]
        if q != p:
            both = torch.from_numpy(np.concatenate([cut, pmask[None].astype(np.float32)]))[:, None]
            small = F.interpolate(both, size=(p, p), mode="bicubic", antialias=True, align_corners=False)[:, 0]
            cut, pmask = small[:-1].numpy().astype(np.float32), small[-1].numpy() > 0.5
        return cut[0], pmask, (cut[1:] if piece.tissue is not None else None)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, self.epoch, int(index)])
        # Drawn only when asked, so that runs without it keep their random streams.
        zoom = float(rng.uniform(*ZOOM_OUT)) if cfg.zoom_out > 0 and rng.random() < cfg.zoom_out else 1.0
        hr, mask, tissue = self._crop(rng, zoom)
        if tissue is not None and cfg.tissue_contrast > 0 and rng.random() < cfg.tissue_contrast:
            hr = tissue_contrast(hr, mask, tissue, rng)  # drawn only with maps, as the others only when asked
        elif cfg.random_contrast > 0 and rng.random() < cfg.random_contrast:
            hr = random_contrast(hr, mask, rng)
        elif rng.random() < cfg.invert_prob:
            c = np.float32(1.0 + 0.2 * rng.random())
            hr = np.where(mask, np.clip(c - hr, 0.0, None), hr).astype(np.float32)
        if cfg.bias_field > 0 and rng.random() < cfg.bias_field:  # drawn only when asked, as above
            hr = random_bias_field(hr, rng)
        if cfg.hr_blur > 0 and rng.random() < cfg.hr_blur:  # a softer truth, like an EPI's own blur
            hr = gaussian_blur(hr, float(rng.uniform(*HR_BLUR_SIGMA)))
        t = torch.from_numpy(np.ascontiguousarray(hr, dtype=np.float32))[None]
        if cfg.augment:
            self.augment.set_random_state(seed=int(rng.integers(2**31)))
            t = convert_to_tensor(self.augment(t), dtype=torch.float32, track_meta=False)
        mode = draw_mode(cfg.degradation, rng)
        if getattr(cfg.model, "name", "srcnn") == "espcn":  # a low-resolution-grid network sees the LR patch
            x = downsample(t[None], (cfg.scale, cfg.scale), mode)[0]
        elif getattr(cfg.model, "name", "srcnn") == "axis-espcn":  # coarse along its columns only
            if rng.random() < 0.5:  # the thick axis is the patch's rows or its columns, half the time each
                t = t.transpose(-1, -2).contiguous()
            x = downsample(t[None], (1, cfg.scale), mode)[0]
        elif cfg.through_plane:  # one axis: the thick one is the rows or the columns, half the time each
            f = (1, cfg.scale) if rng.random() < 0.5 else (cfg.scale, 1)
            x = degrade_and_upsample(t[None], f, mode)[0]
        else:
            x = degrade_and_upsample(t[None], (cfg.scale, cfg.scale), mode)[0]
        return {"input": x.contiguous(), "target": t.contiguous()}
