"""One-axis adaptation of a fine-grid network (SRCNN) from a donor axis (the passes that then refine
a study one axis at a time are :func:`mrisr.passes.pass_plans`); :func:`adapt_model` is the entry
point for every network."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mrisr.adapt.axis_net import adapt_axis_network
from mrisr.adapt.coarse_grid import adapt_coarse_grid
from mrisr.adapt.common import (
    AdaptConfig,
    AdaptResult,
    _fit,
    _rejected,
    _split_planes,
    _working_copy,
    effective_steps,
)
from mrisr.degradation import degrade_and_upsample, degrade_volume, modes_of, upsample

log = logging.getLogger(__name__)

#: A donor axis may be at most this much coarser than the finest target spacing.
DONOR_TOLERANCE = 1.6
#: The adapted network is used only when its held-out error is below this share of bicubic's.
ACCEPT_RATIO = 0.97
#: Stricter when two axes are refined: the one-axis network then runs a second pass whose partner
#: axis is already fine, unlike its training planes. (Set after an accepted 0.94 made dipy's
#: aniso_vox 0.22 dB worse, so that scan no longer tests this rule independently.)
ACCEPT_RATIO_TWO_AXES = 0.85


def donor_axis(spacing: Sequence[float], factors: Sequence[int]) -> int | None:
    """The finest axis that is not refined and is about as fine as the target, else ``None``."""
    targets = [spacing[a] / factors[a] for a in range(3) if factors[a] > 1]
    if not targets:
        return None
    candidates = [b for b in range(3) if factors[b] == 1 and spacing[b] <= DONOR_TOLERANCE * min(targets)]
    return min(candidates, key=lambda b: spacing[b]) if candidates else None


#: A slice profile within this share of the slice spacing is treated as contiguous slices.
PROFILE_TOLERANCE = 0.01


def profile_matrix(n: int, f: int, width: float) -> torch.Tensor:
    """``(n // f, n)`` weights that average a fine axis into coarse samples of a slice profile.

    Coarse sample ``c`` sits at fine index ``f·c + (f − 1) / 2`` (voxel centres) and averages a box
    ``width`` fine voxels wide around it (a slice ``thickness / spacing · f`` output voxels thick),
    each fine voxel weighted by its overlap with the box; ``width == f`` is block averaging (contiguous
    slices), less leaves gaps, more overlaps. Boxes cut by the edges are renormalised.
    """
    centres = f * np.arange(n // f) + (f - 1) / 2
    j = np.arange(n)
    lo = np.maximum(j[None, :] - 0.5, centres[:, None] - width / 2)
    hi = np.minimum(j[None, :] + 0.5, centres[:, None] + width / 2)
    w = np.clip(hi - lo, 0.0, None)
    return torch.from_numpy((w / w.sum(axis=1, keepdims=True)).astype(np.float32))


def profile_width(factors: Sequence[int], profile: Sequence[float] | None) -> float | None:
    """Width in output voxels of the slice profile of the one refined axis (``thickness / spacing ·
    F``), or ``None`` when the slices are contiguous, the profile is unknown (NIfTI) or several axes
    are refined."""
    refined = [a for a in range(3) if int(factors[a]) > 1]
    if profile is None or len(refined) != 1 or abs(float(profile[refined[0]]) - 1) <= PROFILE_TOLERANCE:
        return None
    return float(profile[refined[0]]) * int(factors[refined[0]])


def match_slices(
    y: np.ndarray, x: np.ndarray, factors: Sequence[int], *, profile: Sequence[float] | None = None
) -> np.ndarray:
    """Make ``y`` agree with the thick slices ``x`` it was refined from, in place.

    ``y`` (float32, fine along the one refined axis of ``factors``) gets the smallest change, in the
    least-squares sense, after which averaging it with the slice profile gives ``x`` back: block
    means of ``F`` voxels for contiguous slices (``y += repeat(x − blockmean(y))``), else the
    profile of :func:`profile_matrix` (``y += Pᵀ(PPᵀ)⁻¹(x − Py)``). The true volume is one of those
    that agree, so, where the profile is right, this never moves the output away from it.

    Args:
        y: Refined array, shape ``x.shape`` times ``factors`` (one factor above 1).
        x: The thick-slice array it was refined from, same units.
        factors: Per-axis refinement (exactly one above 1).
        profile: Slice thickness over spacing per axis when the header states it (DICOM).

    Returns:
        ``y``.
    """
    (a,) = [ax for ax in range(3) if int(factors[ax]) > 1]
    f = int(factors[a])
    n = x.shape[a]
    if y.shape[a] != n * f:
        raise ValueError(f"refined axis {a} has {y.shape[a]} voxels, expected {n} × {f}")
    width = profile_width(factors, profile)
    if width is None:  # contiguous: the tool's box degradation is the forward model
        y += np.repeat(np.asarray(x, dtype=np.float32) - degrade_volume(y, factors, "box"), f, axis=a)
        return y
    xm = np.moveaxis(np.asarray(x, dtype=np.float32), a, -1)
    ym = np.moveaxis(y, a, -1)  # a view: updates land in y
    p = profile_matrix(n * f, f, width).double()
    lift = (p.T @ torch.linalg.inv(p @ p.T)).float().numpy()  # (n·f, n)
    ym += (xm - ym @ p.float().numpy().T) @ lift.T
    return y


def _degrade_width(x: torch.Tensor, f: int, mode: str, width: float | None) -> torch.Tensor:
    """Degrade ``x`` ``(N, 1, H, W)`` ×``f`` along W (``profile``: a slice profile ``width`` wide) and
    upsample it back by bicubic interpolation."""
    if mode != "profile" or width is None:
        return degrade_and_upsample(x, (1, f), mode)
    w = x.shape[-1]
    low = x[..., : w - w % f] @ profile_matrix(w - w % f, f, width).T
    return upsample(low, x.shape[-2:])


def _donor_planes(x: np.ndarray, b: int, f: int) -> list[np.ndarray]:
    """Planes containing axis ``b``, cut across each of the two other axes: ``(n, other, b)`` stacks.

    Each stack is cropped to a multiple of ``f`` along ``b``; stacks too small to use are dropped.
    """
    stacks = []
    for cut in (ax for ax in range(3) if ax != b):
        other = next(ax for ax in range(3) if ax not in (b, cut))
        st = np.transpose(x, (cut, other, b))
        st = st[:, :, : st.shape[2] - st.shape[2] % f]
        if st.shape[1] >= 8 and st.shape[2] >= 4 * f:
            stacks.append(np.ascontiguousarray(st, dtype=np.float32))
    return stacks


def adapt_model(
    model: nn.Module,
    x: np.ndarray,
    factors: Sequence[int],
    spacing: Sequence[float],
    *,
    config: AdaptConfig | None = None,
    device: torch.device | str = "cpu",
    axis: int = 2,
    profile: Sequence[float] | None = None,
) -> tuple[nn.Module, AdaptResult]:
    """Fine-tune a copy of ``model`` on a study across axes.

    Args:
        model: The network (left unchanged).
        x: The study's normalised 3D array (the input to be enhanced), axes ``(i, j, k)``.
        factors: The refinement per axis.
        spacing: Voxel size in mm per axis.
        config: Adaptation settings.
        device: Torch device.
        axis: Slicing axis (used by a coarse-grid network, :func:`adapt_coarse_grid`).
        profile: Slice thickness over spacing per axis when the header states it (DICOM). When one
            axis is refined and its profile is not contiguous, the donor planes are degraded with
            that slice profile (:func:`profile_matrix`, ``profile · f`` output voxels wide) instead
            of ``config.degradation``.

    Returns:
        ``(network, result)``: the adapted copy (``model`` itself when nothing could be trained) and
        what happened. Use the copy only when ``result.used``: a fine-grid one with
        :func:`pass_plans`, a coarse-grid one with its usual passes.
    """
    cfg = config or AdaptConfig()
    if getattr(getattr(model, "config", None), "name", "") == "axis-espcn":
        t0 = time.perf_counter()
        if sum(int(v) > 1 for v in factors) != 1:
            return model, _rejected(f"a one-axis network refines one axis, got {tuple(factors)}", cfg, t0)
        return adapt_axis_network(
            model, x, factors, spacing, config=cfg, steps=effective_steps(cfg, model), tolerance=DONOR_TOLERANCE,
            device=device, width=profile_width(factors, profile),
        )  # fmt: skip
    if getattr(model, "input_space", "hr") == "lr":
        return adapt_coarse_grid(model, x, factors, config=cfg, device=device, axis=axis)
    t0 = time.perf_counter()
    steps = effective_steps(cfg, model)
    f_all = {int(v) for v in factors if int(v) > 1}
    if len(f_all) != 1:
        return model, _rejected(f"needs one refinement factor, got {tuple(factors)}", cfg, t0)
    f = f_all.pop()
    b = donor_axis(spacing, factors)
    if b is None:
        return model, _rejected(f"no axis with voxels as fine as the target (spacing {tuple(spacing)})", cfg, t0)
    stacks = _donor_planes(np.asarray(x, dtype=np.float32), b, f)
    if not stacks:
        return model, _rejected(f"planes along the donor axis {b} are too small", cfg, t0, b, f)
    train_sets, val_sets = _split_planes(stacks, cfg.val_share)
    if not train_sets:
        return model, _rejected("too few planes with signal", cfg, t0, b, f)
    modes = list(modes_of(cfg.degradation))
    width = profile_width(factors, profile)
    if width is not None:
        modes = ["profile"]
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    net = _working_copy(model, dev)
    val_in = [{m: _degrade_width(v, f, m, width) for m in modes} for v in val_sets]

    def val_mse(module: nn.Module | None) -> float:
        total, count = 0.0, 0
        with torch.no_grad():
            for hr_v, ins in zip(val_sets, val_in, strict=True):
                for m in modes:
                    for flip in (False, True):  # the degraded axis as W, then as H
                        inp, tgt = ins[m], hr_v
                        if flip:
                            inp, tgt = inp.transpose(-1, -2), tgt.transpose(-1, -2)
                        out = module(inp.to(dev)) if module is not None else inp.to(dev)
                        total += float(F.mse_loss(out, tgt.to(dev), reduction="sum"))
                        count += tgt.numel()
        return total / count

    weights = torch.tensor([float(len(t)) for t in train_sets])

    def step_loss(it: int) -> torch.Tensor:
        train_t = train_sets[int(torch.multinomial(weights, 1, generator=gen))]
        _, h, w = train_t.shape
        ph, pw = min(h, cfg.patch_size), min(w, cfg.patch_size - cfg.patch_size % f)
        pick = torch.randint(len(train_t), (cfg.batch_size,), generator=gen)
        ys = torch.randint(h - ph + 1, (cfg.batch_size,), generator=gen)
        xs = torch.randint(w - pw + 1, (cfg.batch_size,), generator=gen)
        hr = torch.stack([train_t[p, y : y + ph, x_ : x_ + pw] for p, y, x_ in zip(pick, ys, xs, strict=True)])[:, None]
        coin = torch.rand(3, generator=gen)
        if coin[0] < 0.5:
            hr = hr.flip(-1)
        if coin[1] < 0.5:
            hr = hr.flip(-2)
        inp = _degrade_width(hr, f, modes[it % len(modes)], width)
        if coin[2] < 0.5:  # the degraded axis as H half of the time
            inp, hr = inp.transpose(-1, -2), hr.transpose(-1, -2)
        return F.mse_loss(net(inp.to(dev)), hr.to(dev))

    bicubic = val_mse(None)
    before, best, best_step = _fit(
        net, net.parameters(), step_loss, val_mse, steps=steps, lr=cfg.lr, val_every=cfg.val_every
    )
    ratio = ACCEPT_RATIO if sum(int(v) > 1 for v in factors) == 1 else ACCEPT_RATIO_TWO_AXES
    used = best < ratio * bicubic
    reason = (
        "adapted network beats bicubic on held-out planes"
        if used
        else f"held-out error {best:.3g} not below {ratio} × bicubic's {bicubic:.3g}"
    )
    result = AdaptResult(
        used, reason, b, f, steps, best_step, bicubic, before, best,
        sum(len(t) for t in train_sets), sum(len(v) for v in val_sets), round(time.perf_counter() - t0, 3),
        cfg.degradation, source="donor planes", blur_width=width,
    )  # fmt: skip
    log.info("adaptation (donor axis %d): held-out MSE bicubic %.3g, before %.3g, after %.3g: %s",
             b, bicubic, before, best, reason)  # fmt: skip
    return (net.cpu() if dev.type != "cpu" else net), result


# -- coarse-grid (in-plane) adaptation ------------------------------------------------------------
