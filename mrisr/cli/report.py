"""``mrisr report``: merge the sidecars of an output folder into report.csv/.json/.html."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mrisr.cli import EXIT_OK, EXIT_SOME_FAILED, app, fail


def _pm(mean: float | None, sd: float | None, digits: int, unit: str = "") -> str:
    if mean is None:
        return "n/a"
    if sd is None:  # a single study: no spread to show
        return f"{mean:+.{digits}f}{unit}"
    return f"{mean:+.{digits}f} ± {sd:.{digits}f}{unit}"


@app.command()
def report(
    out: Annotated[Path, typer.Argument(help="Output folder of `mrisr enhance` (shards included).")],
    embed_first: Annotated[
        int, typer.Option(min=0, help="Figures embedded in the HTML for the first studies by name.")
    ] = 20,
    embed_worst: Annotated[
        int, typer.Option(min=0, help="Figures embedded for the studies with the lowest PSNR gain.")
    ] = 10,
) -> None:
    """Write report.csv, report.json and a self-contained report.html for an output folder.

    Exit code 1 when any study failed, 2 when OUT is missing or holds no sidecar.
    """
    from rich.markup import escape
    from rich.table import Table

    from mrisr.cli.console import make_console
    from mrisr.errors import printable
    from mrisr.report import NoSidecarsError, ReportBlockedError, build_report

    try:
        res = build_report(out, embed_first=embed_first, embed_worst=embed_worst)
    except (FileNotFoundError, NoSidecarsError, ReportBlockedError) as exc:
        raise fail(str(exc)) from None
    except OSError as exc:  # a read-only or full output folder: the report files cannot be written
        where = exc.filename or out
        raise fail(f"{where}: cannot write the report ({exc.strerror or exc})") from None
    table = Table(title=f"mrisr report: {out}")
    table.add_column("studies", justify="right")
    table.add_column("done", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("PSNR gain (dB)", justify="right")
    table.add_column("SSIM gain", justify="right")
    table.add_row(
        str(res.n_studies),
        str(res.n_done),
        f"[red]{res.n_failed}[/red]" if res.n_failed else "0",
        _pm(res.gain_db_mean, res.gain_db_sd, 2),
        _pm(res.ssim_gain_mean, res.ssim_gain_sd, 4),
    )
    console = make_console()
    console.print(table)
    if res.n_outliers:
        console.print(f"[yellow]{res.n_outliers} outlier studies[/yellow] (robust z > 3; see the report)")
    for study, reason in res.failures[:20]:
        console.print(f"[red]failed[/red] {escape(printable(study))}: {escape(printable(reason))}", highlight=False)
    if len(res.failures) > 20:
        console.print(f"... and {len(res.failures) - 20} more failures (see {res.csv})")
    console.print(f"report: {escape(printable(str(res.html)))}", highlight=False)
    raise typer.Exit(EXIT_SOME_FAILED if res.n_failed else EXIT_OK)
