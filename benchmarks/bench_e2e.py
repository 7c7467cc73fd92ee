#!/usr/bin/env python3
"""End to end: one study's `mrisr enhance` time against its I/O floor.

    .venv/bin/python benchmarks/bench_e2e.py [--shape 256,256,64] [--device cuda] [--arch espcn] [--repeat 3]

The I/O floor is what no enhancement can avoid: reading the input NIfTI and writing an output of the
enhanced size in the same format, dtype and compression, through mrisr's own reader and writer
(:mod:`mrisr.io`). The enhance time is the whole ``mrisr enhance --no-figure`` process (start-up,
model load, compute, consistency check, write) and the in-process study time that the sidecar
records. The issue's target on the GPU: study time ≤ 1.2× the floor. Runs on the CPU as well (where
compute dominates). Prints a Markdown table; nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import mrisr_command, synthetic_study

from mrisr.geometry import refine_affine
from mrisr.io import read_volume
from mrisr.io.nifti import write_nifti


def _floor(src: Path, out: Path) -> float:
    t0 = time.perf_counter()
    vol = read_volume(src)
    factors = (4, 4, 1)
    data = np.asarray(vol.data, dtype=np.float32)
    big = np.repeat(np.repeat(data, 4, axis=0), 4, axis=1)  # the output's size and (roughly) its content
    write_nifti(vol.with_data(big, refine_affine(vol.affine, factors)), out)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="256,256,64")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--arch", default="espcn")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    shape = tuple(int(v) for v in a.shape.split(","))
    mrisr = mrisr_command()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "study.nii.gz"
        synthetic_study(src, shape, (4.0, 4.0, 1.0))
        floors, procs, inproc = [], [], []
        for i in range(a.repeat):
            floors.append(_floor(src, Path(tmp) / f"floor{i}.nii.gz"))
            out = Path(tmp) / f"o{i}"
            cmd = [*mrisr, "enhance", str(src), "--out", str(out), "--device", a.device, "--arch", a.arch]
            cmd.append("--no-figure")
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            procs.append(time.perf_counter() - t0)
            inproc.append(float(json.loads((out / "study_sr.json").read_text())["seconds"]))
    floor, proc, study = statistics.median(floors), statistics.median(procs), statistics.median(inproc)
    out_shape = (shape[0] * 4, shape[1] * 4, shape[2])
    print(f"\n### End to end: {'×'.join(map(str, shape))} int16 → {'×'.join(map(str, out_shape))}, .nii.gz, "
          f"{a.arch} on {a.device}, median of {a.repeat}\n")  # fmt: skip
    print("| what | seconds | ratio to the I/O floor |\n| --- | --- | --- |")
    print(f"| I/O floor (read input + write output, mrisr.io) | {floor:.2f} | 1.00× |")
    print(f"| study time recorded in the sidecar | {study:.2f} | {study / floor:.2f}× |")
    print(f"| whole `mrisr enhance` process | {proc:.2f} | {proc / floor:.2f}× |")


if __name__ == "__main__":
    main()
