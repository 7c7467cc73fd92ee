"""Coarse-grid (in-plane) adaptation of an ESPCN-like network: its first layer is tuned on the
study's own slices coarsened ×2, or, for small slices, on planes that contain the slice axis."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mrisr.adapt.common import (
    AdaptConfig,
    AdaptResult,
    _fit,
    _held_out_stride,
    _rejected,
    _split_planes,
    _with_signal,
    _working_copy,
    effective_steps,
)

log = logging.getLogger(__name__)

#: Coarse-grid adaptation from slice-axis planes: the held-out loss must fall below this share of the
#: unadapted network's.
COARSE_ACCEPT_RATIO = 0.99
#: Coarse-grid adaptation, both sources: the adapted network's in-plane consistency error may be at
#: most this multiple of the unadapted one's (set after dipy's test_piesno DWI, whose slice axis
#: misled the planes source: held-out loss 0.16×, consistency 4.6×, output 2.4 dB worse).
COARSE_CONSISTENCY_LIMIT = 2.0
#: Slice-axis planes need at least this many blocks of ``f`` slices: on thinner studies they were
#: accepted and lost up to 1.2 dB (16-slice template slabs; the held-out EPI cut to 8 or 16 slices
#: lost 0.07 / gained 0.04 dB, against +0.27 dB with its 24 slices). Set after those measurements.
COARSE_MIN_BLOCKS = 6
#: The study's own slices teach the coarse-grid network when they are at least this many voxels on
#: each side; the adapted copy is then used only when the held-out child loss falls below this share
#: of the unadapted network's — a sign that the study's contrast is far from the network's training
#: data. Set after looking at the development scans (docs/beyond.md): EPI and DWI, which gained
#: 0.27–0.46 dB, fell further than the bound; T1, where adaptation lost up to 0.32 dB or gained
#: nothing, stayed above it (closest: a 16-slice slab of the training template).
COARSE_CHILD_MIN = 24
COARSE_CHILD_ACCEPT = 0.75
#: Held-out planes used for early stopping, at most (evenly chosen), cropped to this many slices.
COARSE_VAL_PLANES = 32
COARSE_VAL_DEPTH = 128


def _consistency_loss(net: nn.Module, planes: torch.Tensor, coarse_dim: int, f: int) -> torch.Tensor:
    """Loss of ``net`` on ``planes`` ``(n, 1, h, w)`` that are coarse along ``coarse_dim`` (2: rows,
    3: columns) and fine along the other dimension.

    The planes are box-averaged ×``f`` along their fine dimension, which makes them coarse along both
    like a real input slice; the network's output, box-averaged ×``f`` back along the coarse
    dimension, must equal the planes. The fine dimension is thus fully supervised, the coarse one
    through its block means only (all that the study knows about it).
    """
    fine_pool = (1, f) if coarse_dim == 2 else (f, 1)
    coarse_pool = (f, 1) if coarse_dim == 2 else (1, f)
    return F.mse_loss(F.avg_pool2d(net(F.avg_pool2d(planes, fine_pool)), coarse_pool), planes)


def _child_factor(f: int) -> int:
    """How much the study's own slices are coarsened to teach a ×``f`` network: 2 for even ``f``
    (the output, box-averaged ×``f/2``, is compared with the slice), else ``f`` (plain zero-shot)."""
    return 2 if f % 2 == 0 else f


def _child_loss(net: nn.Module, slices: torch.Tensor, f: int) -> torch.Tensor:
    """Loss of ``net`` on the study's own slices ``(n, 1, h, w)`` (sides multiples of the child factor).

    Each slice is box-averaged ×c (its *child*, :func:`_child_factor`); the network's ×``f`` output
    for the child, box-averaged ×``f/c``, must equal the slice: the slice's own scale is fully
    supervised, the finer one through block means only.
    """
    c = _child_factor(f)
    return F.mse_loss(F.avg_pool2d(net(F.avg_pool2d(slices, c)), f // c), slices)


def _child_sets(slices: torch.Tensor, c: int, val_share: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and held-out slices: every ``1/val_share``-th slice with signal is held out, or, with
    fewer than 5 such slices, the last quarter of every slice's columns; sides cut to multiples of ``c``
    (held-out ones at most 16 slices, centre-cropped to 128 voxels)."""
    h, w = slices.shape[-2] // c * c, slices.shape[-1] // c * c
    slices = slices[..., :h, :w]
    keep = _with_signal(slices.flatten(1).std(dim=1).numpy())
    every = _held_out_stride(val_share)
    if len(keep) >= 5:
        held = keep[min(every // 2, len(keep) - 1) :: every]
        train = slices[torch.from_numpy(np.setdiff1d(keep, held))]
        val = slices[torch.from_numpy(held)]
    else:
        q = max(c, w // 4 // c * c)
        kept = slices[torch.from_numpy(keep)]
        train, val = kept[..., : w - q], kept[..., w - q :]
    val = val[torch.linspace(0, len(val) - 1, min(len(val), 16)).round().long()] if len(val) else val
    vh, vw = min(val.shape[-2], 128 // c * c), min(val.shape[-1], 128 // c * c)
    top, left = (val.shape[-2] - vh) // (2 * c) * c, (val.shape[-1] - vw) // (2 * c) * c
    return train, val[..., top : top + vh, left : left + vw]


def _slice_consistency(net: nn.Module, slices: torch.Tensor, f: int, dev: torch.device) -> float:
    """MSE between the input slices and the box-average ×``f`` of the network's output."""
    total = 0.0
    with torch.no_grad():
        for chunk in slices.split(4):
            c = chunk.to(dev)
            total += float(F.mse_loss(F.avg_pool2d(net(c), f), c, reduction="sum"))
    return total / slices.numel()


def adapt_coarse_grid(
    model: nn.Module,
    x: np.ndarray,
    factors: Sequence[int],
    *,
    config: AdaptConfig | None = None,
    device: torch.device | str = "cpu",
    axis: int = 2,
) -> tuple[nn.Module, AdaptResult]:
    """Tune the first layer of a copy of a coarse-grid network (ESPCN) on a study, in-plane.

    Only the first convolution is tuned (on the development scans, tuning all layers or the later
    ones gained less or lost: docs/beyond.md), from one of two sources:

    - **own slices** (sides ≥ ``COARSE_CHILD_MIN``): :func:`_child_loss` on random crops of at most
      64 voxels of the study's slices, 4 per step (:func:`_child_step`); held out: every 5th slice,
      or the last quarter of the columns when there are fewer than 5 (:func:`_child_sets`);
    - **slice-axis planes** (smaller slices, ≥ ``COARSE_MIN_BLOCKS`` × f of them):
      :func:`_consistency_loss` on crops of planes that contain ``axis`` (``patch_size`` bounds their
      fine dimension), flips and transposes alternating which dimension is coarse; every 5th plane
      (``val_share``) held out.

    The weights with the lowest held-out loss are kept. The adapted copy is used only if (1) that loss
    is below ``COARSE_CHILD_ACCEPT`` (own slices) or ``COARSE_ACCEPT_RATIO`` (planes) × the unadapted
    network's, and (2) on up to 16 of the study's slices, the box-average of its ×f output departs
    from the input at most ``COARSE_CONSISTENCY_LIMIT`` × as much as the unadapted network's does.

    Args:
        model: An ESPCN-like network with ``input_space == "lr"`` and square ``config.factors``.
        x: The study's normalised 3D array.
        factors: Refinement per axis: the network's factor on both axes other than ``axis``.
        config: Settings (``steps`` default ``STEPS_COARSE_GRID``; ``patch_size`` is used by the
            planes source only).
        device: Torch device.
        axis: Slicing axis (the donor of the planes source).

    Returns:
        ``(network, result)`` as :func:`adapt_model`.
    """
    cfg = config or AdaptConfig()
    t0 = time.perf_counter()
    method = "coarse-grid"
    plane_f = {int(factors[a]) for a in range(3) if a != axis}
    own = getattr(getattr(model, "config", None), "factors", None)
    if int(factors[axis]) != 1 or len(plane_f) != 1 or own is None or {int(v) for v in own} != plane_f:
        return model, _rejected(
            f"a coarse-grid network {tuple(own or ())} adapts only to its own in-plane factors, not {tuple(factors)}",
            cfg, t0, method=method,
        )  # fmt: skip
    f = plane_f.pop()
    vol = np.moveaxis(np.asarray(x, dtype=np.float32), axis, 2)
    slices = torch.from_numpy(np.ascontiguousarray(np.moveaxis(vol, 2, 0)))[:, None]  # (n, 1, h, w)
    depth = vol.shape[2] - vol.shape[2] % f
    c = _child_factor(f)
    dev = torch.device(device)
    steps = effective_steps(cfg, model)
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    net = _working_copy(model, dev)
    first = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    for p in net.parameters():
        p.requires_grad_(False)
    for p in first.parameters():
        p.requires_grad_(True)

    step_loss: Callable[[int], torch.Tensor]
    val_loss: Callable[[nn.Module], float]
    if min(vol.shape[:2]) >= COARSE_CHILD_MIN:
        source, accept = "own slices", COARSE_CHILD_ACCEPT
        train_s, val_s = _child_sets(slices, c, cfg.val_share)
        if min(train_s.numel(), val_s.numel()) == 0:
            return model, _rejected("no slices with signal to learn from", cfg, t0, axis, f, method, source)
        n_train, n_val = len(train_s), len(val_s)
        crop = 64 // c * c
        step_loss, val_loss = _child_step(net, train_s, val_s, f, crop, max(1, cfg.batch_size // 4), gen, dev)
    elif depth >= COARSE_MIN_BLOCKS * f and min(vol.shape[:2]) >= 4:
        source, accept = "slice-axis planes", COARSE_ACCEPT_RATIO
        stacks = [
            np.ascontiguousarray(np.transpose(vol, (1, 0, 2))[:, :, :depth]),
            np.ascontiguousarray(vol[:, :, :depth]),
        ]
        train_sets, val_sets = _split_planes(stacks, cfg.val_share)
        if not train_sets:
            return model, _rejected("too few planes with signal along the slice axis", cfg, t0, axis, f, method, source)
        val_sets = _bounded_val_planes(val_sets, depth, f)
        n_train, n_val = sum(len(t) for t in train_sets), sum(len(v) for v in val_sets)
        step_loss, val_loss = _plane_step(net, train_sets, val_sets, f, cfg, gen, dev)
    else:
        return model, _rejected(
            f"slices too small ({vol.shape[0]}×{vol.shape[1]}; needs {COARSE_CHILD_MIN} a side) and too few of them "
            f"along axis {axis} ({vol.shape[2]}; needs {COARSE_MIN_BLOCKS * f}) to learn from",
            cfg, t0, axis, f, method,
        )  # fmt: skip

    class _Bicubic(nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, scale_factor=f, mode="bicubic", align_corners=False)

    bicubic = val_loss(_Bicubic())
    before, best, best_step = _fit(
        net, first.parameters(), step_loss, val_loss, steps=steps, lr=cfg.lr, val_every=cfg.val_every
    )
    for p in net.parameters():
        p.requires_grad_(False)
    # The study's own slices (with the most signal, up to 16) at the real scale, as a check.
    strength = slices.flatten(1).std(dim=1)
    check = slices[torch.sort(torch.argsort(strength, descending=True)[:16]).values]
    ref = _slice_consistency(_working_copy(model, dev).eval(), check, f, dev)
    ratio = _slice_consistency(net, check, f, dev) / max(ref, 1e-12)
    if not best < accept * before:
        used, reason = False, f"held-out loss {best:.3g} not below {accept} × the unadapted {before:.3g} ({source})"
    elif ratio > COARSE_CONSISTENCY_LIMIT:
        used, reason = (
            False,
            (
                f"adapted output departs {ratio:.2f}× as much from the input slices as the unadapted one's "
                f"(limit {COARSE_CONSISTENCY_LIMIT}): the {source} do not teach the real scale"
            ),
        )
    else:
        used, reason = True, f"adapted network beats the unadapted one on held-out {source}"
    result = AdaptResult(
        used, reason, axis, f, steps, best_step, bicubic, before, best, n_train, n_val,
        round(time.perf_counter() - t0, 3), "box", method, round(ratio, 4), source,
    )  # fmt: skip
    log.info("coarse-grid adaptation (%s): held-out loss before %.3g, after %.3g, consistency %.2f×: %s",
             source, before, best, ratio, reason)  # fmt: skip
    return (net.cpu() if dev.type != "cpu" else net), result


def _child_step(
    net: nn.Module,
    train: torch.Tensor,
    val: torch.Tensor,
    f: int,
    crop: int,
    n_batch: int,
    gen: torch.Generator,
    dev: torch.device,
) -> tuple[Callable[[int], torch.Tensor], Callable[[nn.Module], float]]:
    """Step and held-out losses of the own-slices source (:func:`_child_loss`): random crops of at most
    ``crop`` voxels, aligned to the child blocks, flipped, transposed every other step."""
    c = _child_factor(f)
    _, _, h, w = train.shape
    ph, pw = min(h, crop), min(w, crop)

    def step_loss(it: int) -> torch.Tensor:
        pick = torch.randint(len(train), (n_batch,), generator=gen)
        ys = torch.randint((h - ph) // c + 1, (n_batch,), generator=gen) * c
        xs = torch.randint((w - pw) // c + 1, (n_batch,), generator=gen) * c
        batch = torch.stack([train[p, :, y : y + ph, x_ : x_ + pw] for p, y, x_ in zip(pick, ys, xs, strict=True)])
        coin = torch.rand(2, generator=gen)
        if coin[0] < 0.5:
            batch = batch.flip(-1)
        if coin[1] < 0.5:
            batch = batch.flip(-2)
        batch = batch.to(dev)
        return _child_loss(net, batch.transpose(-1, -2) if it % 2 else batch, f)

    def val_loss(module: nn.Module) -> float:
        with torch.no_grad():
            v = val.to(dev)
            return float(_child_loss(module, v, f) + _child_loss(module, v.transpose(-1, -2), f)) / 2

    return step_loss, val_loss


def _bounded_val_planes(val_sets: list[torch.Tensor], depth: int, f: int) -> list[torch.Tensor]:
    """At most ``COARSE_VAL_PLANES`` held-out planes (evenly chosen), cropped to ``COARSE_VAL_DEPTH``
    slices in whole blocks of ``f`` (the cost of early stopping stays bounded)."""
    n_val = sum(len(v) for v in val_sets)
    val_depth = min(depth, COARSE_VAL_DEPTH // f * f)
    if n_val <= COARSE_VAL_PLANES and depth <= val_depth:
        return val_sets
    lo = (depth - val_depth) // (2 * f) * f
    return [
        v[
            np.linspace(0, len(v) - 1, min(len(v), max(1, round(COARSE_VAL_PLANES * len(v) / n_val))))
            .round()
            .astype(int)
        ][..., lo : lo + val_depth]
        for v in val_sets
    ]


def _plane_step(
    net: nn.Module,
    train_sets: list[torch.Tensor],
    val_sets: list[torch.Tensor],
    f: int,
    cfg: AdaptConfig,
    gen: torch.Generator,
    dev: torch.device,
) -> tuple[Callable[[int], torch.Tensor], Callable[[nn.Module], float]]:
    """Step and held-out losses of the slice-axis-planes source (:func:`_consistency_loss`)."""
    weights = torch.tensor([float(len(t)) for t in train_sets])
    n_batch = max(1, cfg.batch_size // 2)

    def step_loss(it: int) -> torch.Tensor:
        train_t = train_sets[int(torch.multinomial(weights, 1, generator=gen))]
        _, h, w = train_t.shape
        ph, pw = min(h, 32), min(w, max(2 * f, cfg.patch_size - cfg.patch_size % f))
        pick = torch.randint(len(train_t), (n_batch,), generator=gen)
        ys = torch.randint(h - ph + 1, (n_batch,), generator=gen)
        xs = torch.randint((w - pw) // f + 1, (n_batch,), generator=gen) * f  # keep the slice blocks aligned
        planes = torch.stack([train_t[p, y : y + ph, x_ : x_ + pw] for p, y, x_ in zip(pick, ys, xs, strict=True)])
        coin = torch.rand(2, generator=gen)
        if coin[0] < 0.5:
            planes = planes.flip(1)
        if coin[1] < 0.5:
            planes = planes.flip(2)
        planes = planes[:, None].to(dev)
        return (
            _consistency_loss(net, planes, 2, f) if it % 2 else _consistency_loss(net, planes.transpose(-1, -2), 3, f)
        )

    def val_loss(module: nn.Module) -> float:
        total, count = 0.0, 0
        with torch.no_grad():
            for v in val_sets:
                for chunk in v.split(16):
                    cc = chunk.to(dev)
                    for planes, dim in ((cc, 2), (cc.transpose(-1, -2), 3)):
                        total += float(_consistency_loss(module, planes, dim, f)) * planes.numel()
                        count += planes.numel()
        return total / count

    return step_loss, val_loss
