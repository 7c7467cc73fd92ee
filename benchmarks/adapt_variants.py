#!/usr/bin/env python3
"""Variants of in-plane ``--adapt`` (own-slices source), scored as ``benchmarks/heldout.py`` scores them.

    .venv/bin/python benchmarks/adapt_variants.py SCAN.nii.gz:box [SCAN.nii.gz:bicubic ...]
        [--layers first|firstlast|all] [--steps 1000] [--lr 1e-3] [--alpha 1.0 ...]

Each scan (first volume of 4D) is cropped to multiples of 4 in axes 0 and 1 and degraded ×4 per axial
slice (``box``: 4×4 block means; ``bicubic``: antialiased bicubic), in the scan's dtype, as the held-out
benchmark does. :func:`mrisr.adapt.adapt_coarse_grid` then runs with the given steps and learning rate;
``--layers`` replaces which convolutions it tunes (the tool tunes the first one only). ``--alpha`` scales
the weight change: the network scored is ``w0 + alpha · (w_adapted − w0)`` (1 is the tool's). Printed:
PSNR gain of each over the unadapted network (both with the 8-view ensemble, output clamped to the
input's range as the tool does), the held-out child-loss ratio and whether the tool would use it.
docs/beyond.md reports what this gave.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import mrisr.adapt as adapt
from mrisr.adapt import coarse_grid
from mrisr.checkpoint import load_checkpoint, shipped_checkpoint
from mrisr.inference import RunOptions, super_resolve_array
from mrisr.transforms import fit_normalization


def _pair(path: Path, mode: str) -> tuple[np.ndarray, np.ndarray]:
    hr = np.asarray(nib.load(path).dataobj)
    hr = hr[..., 0] if hr.ndim == 4 else hr
    hr = hr[:, :, None] if hr.ndim == 2 else hr
    is_int = np.issubdtype(hr.dtype, np.integer)
    hr = hr[: hr.shape[0] // 4 * 4, : hr.shape[1] // 4 * 4].astype(np.float32)
    t = torch.from_numpy(hr).permute(2, 0, 1)[:, None]
    if mode == "box":
        lo = F.avg_pool2d(t, 4)
    else:
        lo = F.interpolate(t, scale_factor=0.25, mode="bicubic", antialias=True, align_corners=False)
    lr = lo[:, 0].permute(1, 2, 0).numpy()
    return hr, np.round(lr) if is_int else lr


def _tuning(layers: str) -> Callable[..., tuple[float, float, int]]:
    """A stand-in for the coarse-grid ``_fit`` that tunes the chosen convolutions instead of those it is given."""
    fit = coarse_grid._fit

    def tuned(net: nn.Module, params: object, step_loss: Any, val: Any, **kw: Any) -> tuple[float, float, int]:
        convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
        chosen = {"first": convs[:1], "firstlast": [convs[0], convs[-1]], "all": convs}[layers]
        ps = [p for m in chosen for p in m.parameters()]
        for p in ps:
            p.requires_grad_(True)
        return fit(net, ps, step_loss, val, **kw)

    return tuned


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scans", nargs="+", help="SCAN.nii.gz:box or SCAN.nii.gz:bicubic")
    ap.add_argument("--layers", choices=["first", "firstlast", "all"], default="first")
    ap.add_argument("--steps", type=int, default=adapt.STEPS_COARSE_GRID)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--alpha", type=float, nargs="+", default=[1.0])
    args = ap.parse_args()
    torch.set_num_threads(2)
    ckpt = shipped_checkpoint((4, 4, 1), arch="espcn")
    assert ckpt is not None
    ck = load_checkpoint(ckpt)
    m0 = ck.build()
    m0.load_state_dict(ck.state_dict)
    m0.eval()
    for spec in args.scans:
        print(_variant(m0, spec, args), flush=True)


def _variant(m0: nn.Module, spec: str, args: argparse.Namespace) -> str:
    name, _, mode = spec.rpartition(":")
    hr, lr = _pair(Path(name), mode)
    norm = fit_normalization(lr)
    lrn = norm.apply(lr)
    rng = float(hr.max() - hr.min())

    def psnr(m: nn.Module) -> float:
        out = norm.invert(super_resolve_array(m, lrn, (4, 4, 1), opts=RunOptions(ensemble=8)))
        err = out.clip(lr.min(), lr.max()).astype(np.float64) - hr
        return float(10 * np.log10(rng * rng / np.mean(err**2)))

    t0 = time.perf_counter()
    cfg = adapt.AdaptConfig(steps=args.steps, lr=args.lr)
    with mock.patch.object(coarse_grid, "_fit", _tuning(args.layers)):
        net, res = adapt.adapt_coarse_grid(m0, lrn, (4, 4, 1), config=cfg)
    secs = time.perf_counter() - t0
    base, w0, w1 = psnr(m0), m0.state_dict(), net.state_dict()
    gains = []
    for a in args.alpha:
        m = copy.deepcopy(m0)
        m.load_state_dict({k: w0[k] + a * (w1[k] - w0[k]) for k in w0})
        gains.append(f"alpha {a:g}: {psnr(m.eval()) - base:+.3f}")
    ratio = (res.val_mse_after or 0.0) / (res.val_mse_before or 1.0)
    return (
        f"{Path(name).name} {mode} ({args.layers}, {args.steps} steps, lr {args.lr:g}): {', '.join(gains)} dB | "
        f"held-out ratio {ratio:.3f}, {res.source}, used {res.used}, best step {res.best_step}, {secs:.1f} s"
    )


if __name__ == "__main__":
    main()
