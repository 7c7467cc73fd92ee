"""``mrisr demo``: the embedded default job (see :mod:`mrisr.demo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mrisr.cli import app, fail
from mrisr.cli.console import QUIET, echo, output


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("demo-out"),
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
) -> None:
    """Run the offline demo: simulate on a bundled T1 slab, enhance a real EPI, write the report."""
    from mrisr.demo import run_demo
    from mrisr.errors import MrisrError

    try:
        html, results = run_demo(out, device=device)
    except MrisrError as exc:
        raise fail(str(exc), 1) from None
    quiet = output.verbosity <= QUIET  # -q: the error lines alone
    for r in results:
        m = r.metrics or {}
        if r.status == "failed":
            echo(f"error: {r.study.id}: {r.error}")
        elif quiet:
            continue
        elif "psnr_sr" in m:
            gain = m["psnr_sr"] - m["psnr_bicubic"]
            typer.echo(
                f"{r.study.id} (simulated x4, training template): PSNR bicubic {m['psnr_bicubic']:.2f} dB, "
                f"SR {m['psnr_sr']:.2f} dB ({gain:+.2f} dB); SSIM {m['ssim_bicubic']:.3f} -> {m['ssim_sr']:.3f}"
            )
        else:
            typer.echo(f"{r.study.id} (real EPI, enhanced x4): {r.output}")
    if not quiet:
        typer.echo(f"report: {html}")
    if any(r.status == "failed" for r in results):
        raise typer.Exit(1)
