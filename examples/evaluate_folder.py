"""Evaluate SR against bicubic on a folder of high-resolution references, then write the report.

    .venv/bin/python examples/evaluate_folder.py [REFERENCE_DIR] [OUT_DIR]

Each study is degraded ×4 (antialiased bicubic), super-resolved back onto its own grid, and compared
with the reference (PSNR/SSIM of SR and of bicubic, see docs/metrics.md). Without arguments it uses
the T1 slab bundled with mrisr — training data of the shipped weights, so not a held-out figure.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from mrisr.demo import T1_SLAB
from mrisr.device import resolve_device
from mrisr.discovery import find_studies
from mrisr.enhance import EnhanceOptions, Enhancer, resolve_checkpoint
from mrisr.inference import DEFAULT_ENSEMBLE, RunOptions
from mrisr.report import build_report


def main(refs: Path, out: Path) -> int:
    # The command line's defaults (the library's RunOptions run one view on the CPU).
    run = RunOptions(device=resolve_device("auto"), ensemble=DEFAULT_ENSEMBLE)
    enhancer = Enhancer(resolve_checkpoint(None, (4, 4, 1)), run)
    results = enhancer.enhance(find_studies([refs]), EnhanceOptions(out_dir=out, simulate=True, overwrite=True))
    for r in results:
        if r.status == "done":
            m = r.metrics
            gain = m["psnr_sr"] - m["psnr_bicubic"]
            print(f"{r.study.id}: bicubic {m['psnr_bicubic']:.2f} dB, SR {m['psnr_sr']:.2f} dB ({gain:+.2f} dB)")
        else:
            print(f"{r.study.id}: {r.status} {r.error or ''}")
    report = build_report(out)
    print(f"report: {report.html}")
    return 0 if all(r.status == "done" for r in results) else 1


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(sys.argv[1]) if len(sys.argv) > 1 else T1_SLAB
        target = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tmp) / "out"
        sys.exit(main(source, target))
