"""``mrisr demo``: the embedded default job (see :mod:`mrisr.demo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mrisr.cli import app, fail


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("demo-out"),
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
) -> None:
    """Run the offline demo: simulate on a bundled T1 slab, enhance a real EPI, write the report."""
    from mrisr.demo import run_demo
    from mrisr.errors import MrisrError

    try:
        html = run_demo(out, device=device)
    except MrisrError as exc:
        raise fail(str(exc), 1) from None
    typer.echo(f"report: {html}")
