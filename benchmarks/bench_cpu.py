#!/usr/bin/env python3
"""CPU benchmarks of mrisr: process overhead against a bare script, start-up, output I/O, memory.

    .venv/bin/python benchmarks/bench_cpu.py [--repeat 5] [--only overhead,startup,io,memory]

Prints a Markdown table per benchmark (copied into docs/performance.md). Nothing here is a test:
timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from _common import synthetic_study

BIN = Path(sys.executable).parent
MRISR = str(BIN / "mrisr")

BARE = textwrap.dedent(
    """
    import sys, nibabel as nib, numpy as np, torch, torch.nn.functional as F
    from torch import nn
    src, out, ckpt = sys.argv[1:4]
    obj = torch.load(ckpt, map_location="cpu", weights_only=True)
    a = obj["arch"]; ks, fs = a["kernel_sizes"], a["filters"]; ch = [1, *fs, 1]
    layers = []
    for i, k in enumerate(ks):
        layers.append(nn.Conv2d(ch[i], ch[i + 1], k, padding=k // 2, padding_mode=a["padding_mode"]))
        if i < len(ks) - 1:
            layers.append(nn.ReLU(inplace=True))
    body = nn.Sequential(*layers)
    body.load_state_dict({k.removeprefix("body."): v for k, v in obj["state_dict"].items()})
    img = nib.load(src); x = np.asarray(img.dataobj, dtype=np.float32)
    s = float(np.percentile(x[x > 0], 99.5))
    t = torch.from_numpy(x / s).permute(2, 0, 1)[:, None]
    with torch.inference_mode():
        up = F.interpolate(t, scale_factor=4, mode="bicubic", align_corners=False)
        y = body(up) + up if a["residual"] else body(up)
    sr = (y[:, 0].permute(1, 2, 0).numpy() * s).clip(x.min(), x.max())
    aff = img.affine.copy(); aff[:3, :2] /= 4
    nib.save(nib.Nifti1Image(np.rint(sr).astype(img.get_data_dtype()), aff), out)
    """
)


def _time(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _study(folder: Path, shape: tuple[int, int, int]) -> Path:
    return synthetic_study(folder / "study.nii.gz", shape, (3.0, 3.0, 3.0))


def _checkpoint() -> str:
    from mrisr.checkpoint import shipped_checkpoint

    found = shipped_checkpoint((4, 4, 1))
    if found is None:
        sys.exit("no shipped weights to benchmark with")
    return str(found)


def overhead(repeat: int, tmp: Path) -> None:
    src = _study(tmp, (64, 48, 40))
    ckpt = _checkpoint()
    (tmp / "bare.py").write_text(BARE)
    bare = _time([sys.executable, str(tmp / "bare.py"), str(src), str(tmp / "bare.nii.gz"), ckpt], repeat)
    rows = [("bare script (torch + nibabel)", bare)]
    for label, extra in [
        ("mrisr enhance --ensemble 1 --no-figure (the bare script's job)", ["--ensemble", "1", "--no-figure"]),
        ("mrisr enhance --ensemble 1 (with the figure)", ["--ensemble", "1"]),
        ("mrisr enhance (default: 8-view ensemble, figure)", []),
    ]:
        cmd = [
            MRISR,
            "enhance",
            str(src),
            "--out",
            str(tmp / "o"),
            "--checkpoint",
            ckpt,
            "--device",
            "cpu",
            "--overwrite",
        ]
        rows.append((label, _time([*cmd, *extra], repeat)))
    print(f"\n### CPU overhead: 40 slices of 64×48 → 256×192, ×4, median of {repeat}\n")
    print("| run | seconds | ratio to bare |\n| --- | --- | --- |")
    for label, t in rows:
        print(f"| {label} | {t:.2f} | {t / bare:.2f}× |")


def startup(repeat: int, tmp: Path) -> None:
    t = _time([MRISR, "--help"], repeat)
    print(f"\n### Start-up\n\n| command | seconds (median of {repeat}) |\n| --- | --- |\n| `mrisr --help` | {t:.3f} |")


def io(repeat: int, tmp: Path) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:1024, 0:1024]
    base = (np.sin(xx / 9) * np.cos(yy / 13) + 1.2) * 400
    vol = np.stack([base + rng.normal(0, 8, base.shape) for _ in range(32)], axis=-1).astype(np.int16)
    print(f"\n### Output I/O: one ×4 output of 1024×1024×32 int16 ({vol.nbytes / 2**20:.0f} MiB raw)\n")
    print("| file | gzip level | write s | read s | MiB on disk |\n| --- | --- | --- | --- | --- |")
    from nibabel.openers import Opener

    for name, level in [("nii", None), ("nii.gz", 1), ("nii.gz", 6), ("nii.gz", 9)]:
        path = tmp / f"io.{name}"
        old = Opener.default_compresslevel
        if level is not None:
            Opener.default_compresslevel = level
        w, r = [], []
        for _ in range(max(1, repeat // 2)):
            t0 = time.perf_counter()
            nib.save(nib.Nifti1Image(vol, np.eye(4)), str(path))
            w.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            np.asarray(nib.load(str(path)).dataobj)
            r.append(time.perf_counter() - t0)
        Opener.default_compresslevel = old
        print(
            f"| .{name} | {level if level else '-'} | {min(w):.2f} | {min(r):.2f} | {path.stat().st_size / 2**20:.1f} |"
        )


def memory(repeat: int, tmp: Path) -> None:
    """Peak RSS of a study whose float32 output is 1 GiB, with a tiny network (memory, not speed)."""
    import torch

    from mrisr.checkpoint import save_checkpoint
    from mrisr.models import SRCNN, SRCNNConfig

    cfg = SRCNNConfig(kernel_sizes=(3, 1, 3), filters=(4, 4), residual=True)
    ckpt = save_checkpoint(tmp / "tiny.pt", SRCNN(cfg), cfg.to_dict(), {"scale": [4, 4, 1]})
    shape = (256, 256, 256)
    rng = np.random.default_rng(0)
    vol = (rng.random(shape, dtype=np.float32) * 1000).astype(np.int16)
    src = tmp / "big.nii"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(src))
    out_bytes = 1024 * 1024 * 256 * 4
    code = (
        "import resource, sys; from mrisr.cli import main; rc = main(sys.argv[1:]); "
        "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)"
    )
    cmd = [sys.executable, "-c", code, "enhance", str(src), "--out", str(tmp / "m"), "--checkpoint", str(ckpt)]
    cmd += ["--dtype", "float32", "--no-figure", "--device", "cpu", "--overwrite"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    secs = time.perf_counter() - t0
    peak = int(next(ln.split()[1] for ln in done.stdout.splitlines() if ln.startswith("PEAK"))) * 1024
    del torch
    print("\n### Memory: 256×256×256 int16 → 1024×1024×256 float32 (1 GiB output), tiny network\n")
    print("| peak RSS GiB | output GiB | ratio | seconds |\n| --- | --- | --- | --- |")
    print(f"| {peak / 2**30:.2f} | {out_bytes / 2**30:.2f} | {peak / out_bytes:.2f}× | {secs:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", default="overhead,startup,io,memory")
    a = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs; torch threads default; python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as d:
        for name in a.only.split(","):
            globals()[name](a.repeat, Path(d))


if __name__ == "__main__":
    main()
