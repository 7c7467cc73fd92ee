#!/usr/bin/env python3
"""Gain of `mrisr enhance` over clamped bicubic on high-resolution scans you trust.

    .venv/bin/python benchmarks/heldout.py SCAN.nii.gz [...] [--mode bicubic|box|thick] [-- EXTRA ENHANCE ARGS]

In-plane modes (``bicubic``: antialiased bicubic ×4 per axial slice; ``box``: 4×4 block average) make
the low-resolution input from the scan's axes 0 and 1, written on the coarser grid (voxel-centre
convention) in the scan's dtype; ``thick`` averages blocks of 4 slices along axis 2 (thick slices)
and enhances with ``--scale 1,1,4``. The output must land on the scan's own grid; PSNR is computed
against the scan in its own units with data range = max - min of the scan, and the baseline is
bicubic interpolation of the same input clamped to the input's value range. 4D scans: first volume.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from _common import mrisr_command

from mrisr.geometry import coarsen_affine


def _psnr(x: np.ndarray, ref: np.ndarray) -> float:
    rng = float(ref.max() - ref.min())
    return float(10 * np.log10(rng * rng / np.mean((x.astype(np.float64) - ref) ** 2)))


def _lowres(hr: np.ndarray, mode: str) -> tuple[np.ndarray, tuple[int, int, int]]:
    if mode == "thick":
        hr = hr[:, :, : hr.shape[2] // 4 * 4]
        return hr.reshape(*hr.shape[:2], -1, 4).mean(axis=3), (1, 1, 4)
    t = torch.from_numpy(hr).permute(2, 0, 1)[:, None]
    if mode == "box":
        low = F.avg_pool2d(t, 4)
    else:
        low = F.interpolate(t, scale_factor=0.25, mode="bicubic", antialias=True, align_corners=False)
    return low[:, 0].permute(1, 2, 0).numpy(), (4, 4, 1)


def _bicubic(lr: np.ndarray, shape: tuple[int, ...], factors: tuple[int, int, int]) -> np.ndarray:
    t = torch.from_numpy(lr.astype(np.float32))
    if factors[2] > 1:
        up = F.interpolate(t[:, None], size=shape[1:3], mode="bicubic", align_corners=False)[:, 0]
    else:
        up = F.interpolate(t.permute(2, 0, 1)[:, None], size=shape[:2], mode="bicubic", align_corners=False)
        up = up[:, 0].permute(1, 2, 0)
    return up.numpy().clip(lr.min(), lr.max())


def gain(scan: Path, mode: str, extra: list[str]) -> str:
    img = nib.load(scan)
    hr = np.asarray(img.dataobj)
    hr = hr[..., 0] if hr.ndim == 4 else hr
    dtype = hr.dtype
    if mode != "thick":
        hr = hr[: hr.shape[0] // 4 * 4, : hr.shape[1] // 4 * 4]
    lr, factors = _lowres(hr.astype(np.float32), mode)
    if mode == "thick":
        hr = hr[:, :, : lr.shape[2] * 4]
    if np.issubdtype(dtype, np.integer):
        lr = np.clip(np.rint(lr), np.iinfo(dtype).min, np.iinfo(dtype).max)
    lr = lr.astype(dtype)
    ref = hr.astype(np.float64)
    mrisr = mrisr_command()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "lowres.nii.gz"
        nib.save(nib.Nifti1Image(lr, coarsen_affine(img.affine, factors)), src)
        cmd = [*mrisr, "enhance", str(src), "--out", f"{tmp}/out", "--scale", ",".join(map(str, factors)), *extra]
        done = subprocess.run([*cmd, "--no-figure"], capture_output=True, text=True)
        if done.returncode:
            return f"{scan.name} {mode}: mrisr failed: {done.stderr.strip().splitlines()[-1:]}"
        out = nib.load(next(Path(tmp, "out").glob("*.nii.gz")))
        if out.shape[:3] != ref.shape or not np.allclose(out.affine, img.affine, atol=1e-3):
            return f"{scan.name} {mode}: output grid differs from the scan's"
        sr = np.asarray(out.dataobj, dtype=np.float64)
        side = json.loads(next(Path(tmp, "out").glob("*_sr.json")).read_text())
    base, got = _psnr(_bicubic(lr, ref.shape, factors), ref), _psnr(sr, ref)
    timing = f"study {side['seconds']:.1f} s on {side['device']}"
    if side.get("adapt"):
        ad = side["adapt"]
        timing += f", adaptation {ad['seconds']:.1f} s ({'used' if ad['used'] else 'not used'})"
    return f"{scan.name} {mode}: bicubic {base:.2f} dB, mrisr {got:.2f} dB, gain {got - base:+.3f} dB ({timing})"


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scans", type=Path, nargs="+")
    ap.add_argument("--mode", choices=["bicubic", "box", "thick"], default="bicubic")
    a = ap.parse_args(argv)
    for scan in a.scans:
        print(gain(scan, a.mode, extra), flush=True)


if __name__ == "__main__":
    main()
