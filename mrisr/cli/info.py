"""``mrisr info``: list the studies under files and folders with their grids (shape, spacing, affine)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from mrisr.cli import EXIT_OK, EXIT_SOME_FAILED, app, fail
from mrisr.cli.console import echo


def _fmt_floats(values: Any, digits: int = 4) -> str:
    return " × ".join(f"{float(v):.{digits}g}" for v in values)


@app.command()
def info(
    inputs: Annotated[list[Path], typer.Argument(help="NIfTI, MetaImage, NRRD or DICOM files, or folders of studies.")],
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print a JSON array, one object per study (with 'error' for one that fails)."),
    ] = False,
    exclude: Annotated[
        list[Path] | None,
        typer.Option(help="A folder not to search (e.g. an output folder inside an input); repeatable."),
    ] = None,
) -> None:
    """Show each study's format, shape, voxel spacing (mm), data type and RAS affine."""
    from mrisr.discovery import find_studies
    from mrisr.errors import MrisrError

    try:
        studies = find_studies(inputs, exclude=exclude or [])
    except (MrisrError, FileNotFoundError) as exc:
        raise fail(str(exc)) from None
    if not studies:
        raise fail(f"no NIfTI or DICOM studies found in {', '.join(map(str, inputs))}")
    rows: list[dict[str, Any]] = []
    failed = 0
    for study in studies:
        try:
            vol = study.load()
        except (MrisrError, OSError) as exc:
            if isinstance(exc, MrisrError):
                line = f"{study.where(exc.path)}: {exc.reason}"
            else:
                line = f"{study.location}: {exc.strerror or exc}"
            echo(f"error: {study.id}: {line}")
            failed += 1
            if as_json:
                rows.append({"id": study.id, "format": study.fmt, "path": str(study.path), "error": line})
            continue
        rows.append(
            {
                "id": study.id,
                "format": study.fmt,
                "path": str(study.path),
                "shape": [int(n) for n in vol.data.shape],
                "spacing": [float(s) for s in vol.spacing],
                "affine": [[float(v) for v in row] for row in vol.affine],
                "dtype": str(vol.dtype),
                "frames": vol.n_frames,
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        _print_table(rows)
    raise typer.Exit(EXIT_SOME_FAILED if failed else EXIT_OK)


def _print_table(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    from mrisr.cli.console import make_console

    table = Table(title=f"{len(rows)} {'study' if len(rows) == 1 else 'studies'}")
    table.add_column("id", overflow="fold")
    table.add_column("format")
    table.add_column("shape", no_wrap=True)
    table.add_column("spacing (mm)", no_wrap=True)
    table.add_column("dtype")
    table.add_column("origin RAS (mm)", no_wrap=True)
    table.add_column("path", overflow="fold")
    for r in rows:
        origin = [row[3] for row in r["affine"][:3]]
        table.add_row(
            r["id"],
            r["format"],
            " × ".join(str(n) for n in r["shape"]),
            _fmt_floats(r["spacing"]),
            r["dtype"],
            ", ".join(f"{v:.1f}" for v in origin),
            r["path"],
        )
    make_console().print(table)  # not a terminal: full width, ids and paths never cut
