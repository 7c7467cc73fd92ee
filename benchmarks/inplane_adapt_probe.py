#!/usr/bin/env python3
"""What per-study adaptation could add in-plane, and what a donor-plane attempt adds: a probe.

    .venv/bin/python benchmarks/inplane_adapt_probe.py SCAN.nii.gz [...] [--steps 1000] [--lr 1e-3]
        [--layers body.0] [--seed 0]

Not a feature of the tool: it measures, on scans whose high-resolution truth you hold, the two numbers
docs/beyond.md reports for the in-plane ``--adapt`` question. Each scan (first volume of 4D) is cropped
to a multiple of 4 in axes 0 and 1 and box-averaged ×4 in that plane (integer scans rounded, as
``sr_gain.py`` does); gains are PSNR in dB over bicubic clamped to the input's range, data range = the
scan's max - min.

- ``default``: the shipped ESPCN with the 8-view ensemble, as ``mrisr enhance`` runs it.
- ``oracle``: the ESPCN fine-tuned on the study's *true* pairs of its even slices (Adam, lr 1e-4,
  300 steps), scored on the odd slices against the default on the same slices. It uses the answer, so
  it is an upper bound on what any adaptation to this study's contrast could add, not a method.
- ``donor``: the ESPCN fine-tuned with no external data on the planes that contain the slice axis
  (axis 2, fine in these scans): each plane is box-averaged ×4 along that axis, so that it is coarse
  along both of its axes like a real input slice, and the network's output, box-averaged ×4 back along
  the plane's *other* axis, must equal the plane. The slice axis is thus fully supervised and the other
  only through block means; flips and transposes alternate which axis is which. Every 5th plane is held
  out and the weights with the lowest held-out loss are kept (``val`` is that loss over the unadapted
  network's). This is the tool's fallback source (``slice-axis planes``); ``mrisr enhance --adapt``
  prefers the study's own slices — measure it with ``benchmarks/heldout.py SCAN -- --adapt``.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mrisr.checkpoint import Checkpoint, load_checkpoint, shipped_checkpoint
from mrisr.inference import RunOptions, super_resolve_array
from mrisr.transforms import fit_normalization

F_ = 4


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    hr = np.asarray(nib.load(path).dataobj)
    hr = hr[..., 0] if hr.ndim == 4 else hr
    hr = hr[:, :, None] if hr.ndim == 2 else hr
    is_int = np.issubdtype(hr.dtype, np.integer)
    hr = hr[: hr.shape[0] // F_ * F_, : hr.shape[1] // F_ * F_].astype(np.float32)
    lr = F.avg_pool2d(torch.from_numpy(hr).permute(2, 0, 1)[:, None], F_)[:, 0].permute(1, 2, 0).numpy()
    return hr, np.round(lr) if is_int else lr


def _net(ck: Checkpoint) -> nn.Module:
    m = ck.build()
    m.load_state_dict(ck.state_dict)
    return m.eval()


def _plane_loss(m: nn.Module, x: torch.Tensor, coarse_dim: int) -> torch.Tensor:
    """``x``: planes ``(n, 1, h, w)``, coarse along ``coarse_dim`` (2 or 3), fine along the other."""
    k_in = (F_, 1) if coarse_dim == 3 else (1, F_)
    k_back = (F_, 1) if coarse_dim == 2 else (1, F_)
    return F.mse_loss(F.avg_pool2d(m(F.avg_pool2d(x, k_in)), k_back), x)


def _donor(
    m0: nn.Module, lrn: np.ndarray, steps: int, lr: float, layers: str, seed: int
) -> tuple[nn.Module, float, int]:
    torch.manual_seed(seed)
    vol = torch.from_numpy(lrn)
    z = vol.shape[2] // F_ * F_
    planes = [vol[:, j, :z] for j in range(vol.shape[1])] + [vol[i, :, :z] for i in range(vol.shape[0])]
    held = planes[2::5]
    groups: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for k, p in enumerate(planes):
        if k % 5 != 2:
            groups.setdefault(tuple(p.shape), []).append(p)
    shapes = list(groups.values())

    def held_loss(m: nn.Module) -> float:
        with torch.no_grad():
            return float(
                np.mean([float(_plane_loss(m, p[None, None], 2) + _plane_loss(m, p.T[None, None], 3)) for p in held])
            )

    m = copy.deepcopy(m0).train()
    opt = torch.optim.Adam([p for n, p in m.named_parameters() if n.startswith(layers)], lr=lr)
    start = held_loss(m0)
    best = (start, 0, copy.deepcopy(m0.state_dict()))
    for step in range(1, steps + 1):
        group = shapes[int(torch.randint(0, len(shapes), (1,)))]
        batch = torch.stack([group[int(i)] for i in torch.randint(0, len(group), (8,))])
        for dim in (1, 2):
            if torch.rand(1) < 0.5:
                batch = batch.flip(dim)
        x = batch[:, None] if step % 2 else batch.transpose(1, 2)[:, None]
        loss = _plane_loss(m, x, 2 if step % 2 else 3)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0:
            m.eval()
            v = held_loss(m)
            m.train()
            if v < best[0]:
                best = (v, step, copy.deepcopy(m.state_dict()))
    m.load_state_dict(best[2])
    return m.eval(), best[0] / start, best[1]


def _oracle(m0: nn.Module, lrn: np.ndarray, hrn: np.ndarray, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    x = torch.from_numpy(lrn).permute(2, 0, 1)[::2, None]
    y = torch.from_numpy(hrn).permute(2, 0, 1)[::2, None]
    m = copy.deepcopy(m0).train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-4)
    for step in range(300):
        idx = torch.randint(0, x.shape[0], (8,))
        xb, yb = (x[idx], y[idx]) if step % 2 else (x[idx].flip(-1), y[idx].flip(-1))
        loss = F.mse_loss(m(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


def probe(path: Path, args: argparse.Namespace) -> str:
    hr, lr = _load(path)
    norm = fit_normalization(lr)
    lrn, hrn = norm.apply(lr), norm.apply(hr)
    ckpt = shipped_checkpoint((4, 4, 1), arch="espcn")
    assert ckpt is not None
    m0 = _net(load_checkpoint(ckpt))
    rng = float(hr.max() - hr.min())

    def psnr(m: nn.Module | None, ens: int, sl: slice = slice(None)) -> float:
        out = norm.invert(super_resolve_array(m, lrn, (4, 4, 1), opts=RunOptions(ensemble=ens)))
        err = out.clip(lr.min(), lr.max())[:, :, sl].astype(np.float64) - hr[:, :, sl]
        return float(10 * np.log10(rng * rng / np.mean(err**2)))

    base = psnr(None, 1)
    default = psnr(m0, 8) - base
    row = f"{path.name}: default {default:+.3f}"
    if hr.shape[2] >= 2:
        odd = slice(1, None, 2)
        oracle = _oracle(m0, lrn, hrn, args.seed)
        b_odd = psnr(None, 1, odd)
        row += f" | oracle on odd slices {psnr(m0, 8, odd) - b_odd:+.3f} -> {psnr(oracle, 8, odd) - b_odd:+.3f}"
    if hr.shape[2] >= 2 * F_:
        t0 = time.perf_counter()
        donor, val, best = _donor(m0, lrn, args.steps, args.lr, args.layers, args.seed)
        secs = time.perf_counter() - t0
        row += f" | donor {psnr(donor, 8) - base:+.3f} (val {val:.3f}, best step {best}, {secs:.0f} s)"
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scans", type=Path, nargs="+")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--layers", default="body.0", help="parameter-name prefix to tune ('body' = all)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    for scan in args.scans:
        print(probe(scan, args), flush=True)


if __name__ == "__main__":
    main()
