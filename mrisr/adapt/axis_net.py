"""Per-study adaptation of a one-axis coarse-grid network (:class:`mrisr.models.AxisESPCN`, thick
slices): the study's own slices, cut across the refined axis, are fine along both of their axes; each
is degraded ×F along one of them with the slice profile and the network is fine-tuned to undo that
(the idea of SMORE and ECLARE, warm-started from weights trained on the corpus so that a few hundred
steps suffice).

Every 5th slice is held out. Of bicubic interpolation, the starting network and the adapted one, the
one with the lowest held-out error refines the study: the adapted copy is *used* when it beats both,
the starting network runs when the adaptation did not improve on it, and bicubic interpolation when
neither network beats it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mrisr.adapt.common import AdaptConfig, AdaptResult, _fit, _rejected, _split_planes, _working_copy
from mrisr.degradation import MIXED, downsample, modes_of, upsample

log = logging.getLogger(__name__)

#: The largest batch and patch side the adaptation draws (what bounds the cost of one step).
MAX_BATCH = 16
MAX_PATCH = 48
#: The donor degradations of a contiguous slice stack whose profile the header does not state
#: (NIfTI): box, Gaussian (FWHM = the slice thickness) and antialiased bicubic, in turn.
UNKNOWN_PROFILE_MODES: tuple[str, ...] = ("box", "gaussian", "bicubic")
#: Slices of the study used for held-out errors at most (evenly chosen), cropped to this many voxels.
VAL_SLICES = 8
VAL_SIDE = 128
#: Held-out check every so many steps (at least; ``config.val_every`` when larger), and at the end.
VAL_EVERY = 50


def _gaussian_matrix(n: int, f: int) -> torch.Tensor:
    """``(n // f, n)`` weights: a Gaussian slice profile of FWHM ``f`` fine voxels, centred on each
    coarse voxel (fine index ``f·c + (f − 1) / 2``), renormalised at the edges."""
    sigma = f / (2 * np.sqrt(2 * np.log(2)))
    centres = f * np.arange(n // f) + (f - 1) / 2
    w = np.exp(-0.5 * ((np.arange(n)[None, :] - centres[:, None]) / sigma) ** 2)
    return torch.from_numpy((w / w.sum(axis=1, keepdims=True)).astype(np.float32))


def degrade_columns(x: torch.Tensor, f: int, mode: str, width: float | None = None) -> torch.Tensor:
    """Degrade ``x`` ``(N, 1, H, W)`` ×``f`` along its columns (``W`` divisible by ``f``), onto the coarse
    grid: ``box``, ``bicubic`` (antialiased), ``gaussian`` (FWHM ``f``) or ``profile`` (a box ``width``
    fine voxels wide, :func:`mrisr.adapt.one_axis.profile_matrix`: a stated slice gap or overlap)."""
    if mode in ("box", "bicubic"):
        return downsample(x, (1, f), mode)
    w = x.shape[-1]
    if mode == "gaussian":
        return x @ _gaussian_matrix(w, f).T
    if mode == "profile" and width is not None:
        from mrisr.adapt.one_axis import profile_matrix

        return x @ profile_matrix(w, f, width).T
    raise ValueError(f"unknown slice profile {mode!r}")


def donor_slices(
    x: np.ndarray, refined: int, spacing: Sequence[float], f: int, tolerance: float
) -> tuple[np.ndarray, list[int]]:
    """The study's slices cut across the ``refined`` axis, ``(n, h, w)``, and which of their two
    axes (``0``: rows, ``1``: columns) are fine enough to be degraded (at most ``tolerance`` times the
    target spacing ``spacing[refined] / f``)."""
    target = float(spacing[refined]) / f
    others = [a for a in range(3) if a != refined]
    fine = [i for i, a in enumerate(others) if float(spacing[a]) <= tolerance * target]
    return np.ascontiguousarray(np.moveaxis(np.asarray(x, dtype=np.float32), refined, 0)), fine


def adapt_axis_network(
    model: nn.Module,
    x: np.ndarray,
    factors: Sequence[int],
    spacing: Sequence[float],
    *,
    config: AdaptConfig,
    steps: int,
    tolerance: float,
    device: torch.device | str = "cpu",
    width: float | None = None,
) -> tuple[nn.Module, AdaptResult]:
    """Fine-tune a copy of the one-axis coarse-grid ``model`` on the study ``x`` (normalised, 3D).

    Args:
        model: An :class:`~mrisr.models.AxisESPCN` for the refined axis's factor (left unchanged).
        x: The study's normalised array.
        factors: Per-axis refinement, exactly one above 1.
        spacing: Voxel size in mm per axis.
        config: Learning rate, batch, patch, held-out share, degradation (``mixed``: the profiles of
            :data:`UNKNOWN_PROFILE_MODES` in turn) and seed.
        steps: Optimisation steps (each of at most :data:`MAX_BATCH` patches of :data:`MAX_PATCH`).
        tolerance: A donor axis may be at most this much coarser than the target spacing.
        device: Torch device.
        width: The stated slice profile's width in output voxels (``None``: contiguous).

    Returns:
        ``(network, result)``: the adapted copy, or ``model`` itself when the adaptation is not used;
        ``result.fallback_bicubic`` tells whether bicubic interpolation beat both networks.
    """
    t0 = time.perf_counter()
    (a,) = [ax for ax in range(3) if int(factors[ax]) > 1]
    f = int(factors[a])
    planes, fine = donor_slices(x, a, spacing, f, tolerance)
    method, source = "axis-coarse-grid", "own slices"
    if not fine:
        return model, _rejected(
            f"no axis across the slices is as fine as the target (spacing {tuple(spacing)})", config, t0, None, f,
            method, source,
        )  # fmt: skip
    # Each slice with its degradable axis as the columns (both orientations when both are fine).
    stacks = [planes if ax == 1 else np.ascontiguousarray(planes.transpose(0, 2, 1)) for ax in fine]
    stacks = [st[:, :, : st.shape[2] - st.shape[2] % f] for st in stacks if st.shape[2] >= 2 * f and st.shape[1] >= 4]
    train_sets, val_sets = _split_planes(stacks, config.val_share) if stacks else ([], [])
    if not train_sets:
        return model, _rejected(
            "too few slices with signal across the refined axis", config, t0, None, f, method, source
        )
    val_sets = [_val_crop(v, f) for v in val_sets]
    modes = (
        ["profile"]
        if width is not None
        else list(UNKNOWN_PROFILE_MODES if config.degradation == MIXED else modes_of(config.degradation))
    )
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    net = _working_copy(model, dev)
    val_in = [{m: degrade_columns(v, f, m, width) for m in modes} for v in val_sets]

    def val_mse(module: nn.Module | None) -> float:
        total, count = 0.0, 0
        with torch.no_grad():
            for hr_v, ins in zip(val_sets, val_in, strict=True):
                for m in modes:
                    inp = ins[m].to(dev)
                    out = module(inp) if module is not None else upsample(inp, hr_v.shape[-2:])
                    total += float(F.mse_loss(out, hr_v.to(dev), reduction="sum"))
                    count += hr_v.numel()
        return total / count

    weights = torch.tensor([float(len(t)) for t in train_sets])
    batch = min(config.batch_size, MAX_BATCH)
    side = min(config.patch_size, MAX_PATCH)

    def step_loss(it: int) -> torch.Tensor:
        train_t = train_sets[int(torch.multinomial(weights, 1, generator=gen))]
        _, h, w = train_t.shape
        ph, pw = min(h, side), min(w, side - side % f)
        pick = torch.randint(len(train_t), (batch,), generator=gen)
        ys = torch.randint(h - ph + 1, (batch,), generator=gen)
        xs = torch.randint(w - pw + 1, (batch,), generator=gen)
        hr = torch.stack([train_t[p, y : y + ph, x_ : x_ + pw] for p, y, x_ in zip(pick, ys, xs, strict=True)])[:, None]
        coin = torch.rand(2, generator=gen)
        if coin[0] < 0.5:
            hr = hr.flip(-1)
        if coin[1] < 0.5:
            hr = hr.flip(-2)
        inp = degrade_columns(hr, f, modes[it % len(modes)], width)
        return F.l1_loss(net(inp.to(dev)), hr.to(dev))

    bicubic = val_mse(None)
    before, best, best_step = _fit(
        net, net.parameters(), step_loss, val_mse, steps=steps, lr=config.lr, val_every=max(VAL_EVERY, config.val_every)
    )
    used = best_step > 0 and best < before and best < bicubic
    if used:
        reason = f"held-out error {best / before:.2f}× the unadapted network's, {best / bicubic:.2f}× bicubic's"
    elif before < bicubic:
        reason = f"adaptation did not lower the held-out error ({best:.3g} vs {before:.3g}): the unadapted network ran"
    else:
        reason = f"neither network beat bicubic on held-out slices ({min(best, before):.3g} vs {bicubic:.3g})"
    n_train, n_val = sum(len(t) for t in train_sets), sum(len(v) for v in val_sets)
    donor = [ax for ax in range(3) if ax != a][fine[0]]  # the first axis the slices were degraded along
    result = AdaptResult(
        used, reason, donor, f, steps, best_step, bicubic, before, best, n_train, n_val,
        round(time.perf_counter() - t0, 3), config.degradation, method=method, source=source, blur_width=width,
    )  # fmt: skip
    log.info(
        "thick-slice adaptation: held-out MSE bicubic %.3g, before %.3g, after %.3g: %s", bicubic, before, best, reason
    )
    if used:
        return (net.cpu() if dev.type != "cpu" else net), result
    return model, result


def _val_crop(v: torch.Tensor, f: int) -> torch.Tensor:
    """At most :data:`VAL_SLICES` held-out slices ``(n, 1, h, w)``, evenly chosen, cropped to
    :data:`VAL_SIDE` voxels (columns: a multiple of ``f``): the held-out error's cost is bounded too."""
    n = len(v)
    if n > VAL_SLICES:
        v = v[np.linspace(0, n - 1, VAL_SLICES).round().astype(int)]
    side_w = min(v.shape[-1], VAL_SIDE - VAL_SIDE % f)
    return v[..., : min(v.shape[-2], VAL_SIDE), :side_w].contiguous()
