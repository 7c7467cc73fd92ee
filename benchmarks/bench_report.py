#!/usr/bin/env python3
"""Build time of ``mrisr report`` over many sidecars (default 2,000 studies in 8 shard folders).

    .venv/bin/python benchmarks/bench_report.py [--studies 2000] [--repeat 3]

Each sidecar carries metrics, consistency, uncertainty and provenance like ``mrisr enhance --simulate
--save-uncertainty`` writes them; every study has a comparison figure and a mosaic (copies of one real
PNG), so the index embeds 30 figures as the default does. Prints the median wall and CPU time, the
index size, the number of study pages and the load average (the CPU time is less sensitive than the
wall time to other processes). Nothing here is a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mrisr.figures import FigureData, compare_figure, mosaic_figure
from mrisr.report import build_report


def _sidecar(i: int, gain: float, rng: np.random.Generator) -> dict[str, object]:
    study = f"sub-{i:04d}_T1w"
    failed = i % 100 == 7
    d: dict[str, object] = {
        "study": study, "status": "failed" if failed else "done", "error": "UnreadableFileError: x" if failed else None,
        "input": {"path": f"/data/{study}.nii.gz"}, "device": "cpu", "seconds": float(rng.uniform(5, 60)),
        "mrisr_version": "0.1.0", "scale": [4, 4, 1], "ensemble": 8, "degradation": "bicubic",
        "checkpoint": {"path": "/w/espcn_x4.pt", "sha256": "ab" * 32}, "output_from": "network",
        "command": ["mrisr", "enhance", "/data", "--out", "out", "--simulate"],
        "created": "2026-01-01T00:00:00+00:00", "figure": f"{study}_compare.png", "mosaic": f"{study}_mosaic.png",
    }  # fmt: skip
    if not failed:
        b = float(rng.normal(30, 2))
        d["output"] = {"path": f"{study}_sr.nii.gz"}
        d["metrics"] = {"psnr_bicubic": b, "psnr_sr": b + gain, "ssim_bicubic": 0.85, "ssim_sr": 0.87,
                        "ssim3d_bicubic": 0.8, "ssim3d_sr": 0.82, "psnr_bicubic_masked": b - 2,
                        "psnr_sr_masked": b - 2 + gain, "ssim_bicubic_masked": 0.8, "ssim_sr_masked": 0.83}  # fmt: skip
        d["consistency"] = {"psnr_lr": float(rng.normal(45, 1)), "residual_rms_head": 3.0}
        d["uncertainty"] = {"relative_mean_head": 0.004, "mean_head": 1.5, "views": 8}
    return d


def make_folder(root: Path, n: int) -> None:
    """``n`` sidecars in 8 shard folders, each with a figure and a mosaic."""
    rng = np.random.default_rng(0)
    ref = rng.random((64, 64, 8)).astype(np.float32)
    ref[16:48, 16:48] += 1.0
    lr = ref.reshape(16, 4, 16, 4, 8).mean(axis=(1, 3))
    fig = compare_figure(root / "fig.png", FigureData(sr=ref, affine=np.eye(4), factors=(4, 4, 1), lowres=lr,
                                                      bicubic=ref, reference=ref), title="x")  # fmt: skip
    mos = mosaic_figure(root / "mos.png", ref, np.eye(4), title="x")
    for i, g in enumerate(rng.normal(1.0, 0.5, n)):
        shard = root / f"shard-{i % 8}"
        shard.mkdir(exist_ok=True)
        d = _sidecar(i, float(g), rng)
        (shard / f"{d['study']}_sr.json").write_text(json.dumps(d), encoding="utf-8")
        shutil.copyfile(fig, shard / str(d["figure"]))
        shutil.copyfile(mos, shard / str(d["mosaic"]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_folder(root, args.studies)
        times, cpu = [], []
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            res = build_report(root)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        pages = len(list((root / "report_studies").glob("*.html")))
        size = res.html.stat().st_size / 2**20
    load = os.getloadavg()[0]
    print(f"| studies | wall time (median of {args.repeat}) | CPU time | report.html | study pages | load average |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {args.studies} | {statistics.median(times):.2f} s | {statistics.median(cpu):.2f} s | {size:.1f} MiB "
          f"| {pages} | {load:.1f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
