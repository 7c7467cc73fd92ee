"""Batch report: merge every ``*_sr.json`` sidecar under an output folder into CSV, JSON and HTML.

:func:`build_report` reads the sidecars written by ``mrisr enhance`` (in every sub-folder, so the
shards of a cluster run merge into one report), and writes beside them:

``report.csv``
    One row per study, columns :data:`COLUMNS`.
``report.json``
    ``{"summary": ..., "columns": ..., "studies": [...], "failures": [...], "duplicates": [...]}``;
    non-finite numbers (an infinite PSNR of identical volumes) are written as ``null``.
``report.html``
    One self-contained page (CSS, JS and images inline): summary, gain histogram, a table sortable by
    any column, comparison figures, failures. To stay small with thousands of studies only some
    figures are embedded (base64 data URIs): the first ``embed_first`` studies by name and the
    ``embed_worst`` studies with the lowest PSNR gain; every other figure is linked by its relative
    path, which resolves while the page stays in the output folder.

See ``docs/report.md``.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrisr.errors import MrisrError
from mrisr.fsutil import write_json_atomic, write_text_atomic
from mrisr.report.links import UnsafeLinkError, figure_link, inside

logger = logging.getLogger(__name__)

SIDECAR_SUFFIX = "_sr.json"
#: Sidecars of studies written as BIDS derivatives: ``sub-01_desc-sr_T1w.json``,
#: ``sub-01_desc-preprocsr_T1w.json`` (an input's own ``desc`` is kept in front of ``sr``).
BIDS_SIDECAR = re.compile(r"_desc-[A-Za-z0-9]*sr_[A-Za-z0-9]+\.json$")


def is_sidecar_name(name: str) -> bool:
    """True for ``<id>_sr.json`` and for BIDS derivative sidecars ``..._desc-[<old>]sr_<suffix>.json``."""
    return name.endswith(SIDECAR_SUFFIX) or BIDS_SIDECAR.search(name) is not None


METRICS: tuple[str, ...] = (
    "psnr_bicubic", "psnr_sr", "ssim_bicubic", "ssim_sr", "ssim3d_bicubic", "ssim3d_sr",
    "psnr_bicubic_masked", "psnr_sr_masked", "ssim_bicubic_masked", "ssim_sr_masked",
)  # fmt: skip
COLUMNS: tuple[str, ...] = (
    "study", "status",
    "psnr_bicubic", "psnr_sr", "gain_db", "ssim_bicubic", "ssim_sr", "ssim_gain",
    "ssim3d_bicubic", "ssim3d_sr",
    "psnr_bicubic_masked", "psnr_sr_masked", "gain_db_masked", "ssim_bicubic_masked", "ssim_sr_masked",
    "psnr_lr", "seconds", "device", "input", "output", "figure", "sidecar", "error",
)  # fmt: skip
NUMERIC: frozenset[str] = frozenset(METRICS) | {"gain_db", "ssim_gain", "gain_db_masked", "psnr_lr", "seconds"}


class NoSidecarsError(MrisrError):
    """An output folder that holds no ``*_sr.json`` sidecar."""


@dataclass(frozen=True)
class ReportResult:
    """What :func:`build_report` wrote and found.

    Attributes:
        csv: Path of ``report.csv``.
        json: Path of ``report.json``.
        html: Path of ``report.html``.
        n_studies: Studies (after merging duplicates).
        n_done: Studies with status ``done``.
        n_failed: The others (failed, unreadable or invalid sidecars).
        gain_db_mean: Mean of ``psnr_sr - psnr_bicubic`` over studies with metrics, dB (``None``: none).
        gain_db_sd: Its sample standard deviation, dB (0 for one study, ``None`` for none).
        ssim_gain_mean: Mean of ``ssim_sr - ssim_bicubic``.
        ssim_gain_sd: Its sample standard deviation.
        failures: ``(study, reason)`` of every failed study.
        n_duplicates: Sidecars set aside because another sidecar of the same study was kept.
    """

    csv: Path
    json: Path
    html: Path
    n_studies: int
    n_done: int
    n_failed: int
    gain_db_mean: float | None
    gain_db_sd: float | None
    ssim_gain_mean: float | None
    ssim_gain_sd: float | None
    failures: tuple[tuple[str, str], ...]
    n_duplicates: int


def find_sidecars(out_dir: Path) -> list[Path]:
    """Every ``*_sr.json`` under ``out_dir`` (recursively), hidden temporaries excluded, sorted."""
    return sorted(
        p
        for p in out_dir.rglob("*.json")
        if is_sidecar_name(p.name)
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(out_dir).parts)
    )


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


def _diff(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    d = a - b
    return d if math.isfinite(d) else None


def _rel(p: Path, root: Path) -> str:
    return Path(os.path.relpath(p, root)).as_posix()


#: Largest sidecar read (bytes): mrisr writes a few KB; a bigger file is not one of its sidecars.
MAX_SIDECAR_BYTES = 16 << 20


def _text(v: Any, limit: int = 2000) -> str | None:
    """A string from a sidecar as one clean line (``None`` for anything that is not a string): no
    lone surrogates (file names that are not UTF-8 could not be written into the UTF-8 report)."""
    if not isinstance(v, str):
        return None
    t = " ".join(v.split())
    t = t if len(t) <= limit else t[: limit - 3] + "..."
    return t.encode("utf-8", "backslashreplace").decode("utf-8")


def _load_sidecar(path: Path, out_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(data, None)`` for a readable sidecar, else ``(None, reason)``: a link out of ``out_dir``,
    too large, not UTF-8, not JSON, nested too deeply for the parser, or not a JSON object."""
    if inside(out_dir, path) is None:
        return None, f"unreadable sidecar: a link to a file outside the output folder {out_dir}"
    try:
        size = path.stat().st_size
        if size > MAX_SIDECAR_BYTES:
            return None, f"unreadable sidecar: {size} bytes (more than {MAX_SIDECAR_BYTES}; not an mrisr sidecar)"
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"unreadable sidecar: {' '.join(str(exc).split())[:300]}"
    except RecursionError:
        return None, "unreadable sidecar: JSON nested too deeply"
    if not isinstance(data, dict):
        return None, "invalid sidecar: not a JSON object"
    return data, None


def _row_from_sidecar(path: Path, out_dir: Path) -> dict[str, Any]:
    """One report row; an unreadable or invalid sidecar gives a failed row naming the reason."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    name = _text(path.name) or ""
    row["study"] = name[: -len(SIDECAR_SUFFIX)] if name.endswith(SIDECAR_SUFFIX) else Path(name).stem
    row["sidecar"] = _text(_rel(path, out_dir))
    row["status"] = "failed"
    data, why = _load_sidecar(path, out_dir)
    if data is None:
        row["error"] = why
        return row
    try:
        _fill_row(row, data, path, out_dir)
    except Exception as exc:  # a sidecar is data from disk: whatever it holds, it is one failed row
        logger.debug("sidecar %s", path, exc_info=True)
        row.update(status="failed", error=f"invalid sidecar: {type(exc).__name__}")
    return row


def _fill_row(row: dict[str, Any], data: dict[str, Any], path: Path, out_dir: Path) -> None:
    """Fill ``row`` from a sidecar's ``data``: only strings and numbers are taken, and a figure only
    through :func:`~mrisr.report.links.figure_link`."""
    row["_created"] = _text(data.get("created")) or ""
    study = _text(data.get("study"), 200)
    if study:
        row["study"] = study
    status = data.get("status")
    row["status"] = status if status in ("done", "failed") else "failed"
    err = data.get("error")
    row["error"] = None if err is None else (_text(err) or f"invalid error entry ({type(err).__name__})")
    if status not in ("done", "failed"):
        shown = _text(status, 60) if isinstance(status, str) else type(status).__name__
        row["error"] = f"invalid sidecar: status {shown!r}"
    row["seconds"] = _num(data.get("seconds"))
    row["device"] = _text(data.get("device"), 60)
    inp, outp = data.get("input"), data.get("output")
    if isinstance(inp, dict):
        row["input"] = _text(inp.get("path"))
    if isinstance(outp, dict) and _text(outp.get("path")):
        row["output"] = _text(_rel(path.parent / str(outp["path"]), out_dir))
    metrics = data.get("metrics")
    if isinstance(metrics, dict):
        for k in METRICS:
            row[k] = _num(metrics.get(k))
    cons = data.get("consistency")
    if isinstance(cons, dict):
        row["psnr_lr"] = _num(cons.get("psnr_lr"))
    row["gain_db"] = _diff(row["psnr_sr"], row["psnr_bicubic"])
    row["gain_db_masked"] = _diff(row["psnr_sr_masked"], row["psnr_bicubic_masked"])
    row["ssim_gain"] = _diff(row["ssim_sr"], row["ssim_bicubic"])
    fig = data.get("figure")
    if fig is not None and fig != "":
        try:
            link = figure_link(out_dir, path, fig)
        except UnsafeLinkError as exc:
            logger.warning("%s", exc)
            row["_figure_refused"] = exc.reason
        else:
            row["figure"] = _text(link.rel)
            row["_figure_href"] = link.href
            row["_figure_file"] = link.file
            row["_figure_missing"] = not link.exists


def _merge(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One row per study: a done sidecar beats a failed one, then the newest ``created`` wins."""
    best: dict[str, dict[str, Any]] = {}
    dropped: list[dict[str, Any]] = []
    for row in rows:
        key = row["study"]
        old = best.get(key)
        if old is None:
            best[key] = row
            continue
        rank_new = (row["status"] == "done", row.get("_created") or "")
        rank_old = (old["status"] == "done", old.get("_created") or "")
        keep, drop = (row, old) if rank_new > rank_old else (old, row)
        best[key] = keep
        dropped.append(drop)
    return [best[k] for k in sorted(best)], dropped


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = math.fsum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    var = math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def _finite(values: list[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, float) and math.isfinite(v)]


def _cell_text(v: Any) -> str:
    return "" if v is None else repr(v) if isinstance(v, float) else str(v)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_cell_text(row[c]) for c in COLUMNS])
    write_text_atomic(path, buf.getvalue())


def _histogram_png(gains: list[float]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.0, 2.8))
    try:
        ax.hist(gains, bins=min(50, max(5, int(math.sqrt(len(gains))))), color="#3b75af")
        ax.axvline(0.0, color="k", linewidth=0.8)
        ax.set_xlabel("PSNR gain of SR over bicubic (dB)")
        ax.set_ylabel("studies")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
    finally:
        plt.close(fig)
    return buf.getvalue()


def build_report(out_dir: str | Path, *, embed_first: int = 20, embed_worst: int = 10) -> ReportResult:
    """Read every sidecar under ``out_dir`` and write ``report.csv``, ``report.json``, ``report.html``.

    Args:
        out_dir: Output folder of ``mrisr enhance`` (shards in sub-folders are included).
        embed_first: Figures embedded in the HTML for the first studies by name.
        embed_worst: Figures embedded for the studies with the lowest PSNR gain (in addition).

    Returns:
        A :class:`ReportResult`.

    Raises:
        FileNotFoundError: If ``out_dir`` is not a folder.
        NoSidecarsError: If it holds no sidecar.
    """
    from mrisr.report.page import render_html

    root = Path(out_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    paths = find_sidecars(root)
    if not paths:
        raise NoSidecarsError(root, f"no *{SIDECAR_SUFFIX} sidecar found")
    rows, dropped = _merge([_row_from_sidecar(p, root) for p in paths])
    for d in dropped:
        logger.info("study %s: sidecar %s superseded by another sidecar", d["study"], d["sidecar"])
    done = [r for r in rows if r["status"] == "done"]
    failed = [r for r in rows if r["status"] != "done"]
    gm, gsd = _mean_sd(_finite([r["gain_db"] for r in done]))
    sm, ssd = _mean_sd(_finite([r["ssim_gain"] for r in done]))
    gains = _finite([r["gain_db"] for r in done])
    summary: dict[str, Any] = {
        "out_dir": str(root.resolve()),
        "studies": len(rows),
        "done": len(done),
        "failed": len(failed),
        "with_metrics": len(gains),
        "gain_db_mean": gm,
        "gain_db_sd": gsd,
        "ssim_gain_mean": sm,
        "ssim_gain_sd": ssd,
        "duplicates": len(dropped),
    }
    failures = tuple((str(r["study"]), str(r["error"] or "failed (no reason recorded)")) for r in failed)

    csv_path, json_path, html_path = root / "report.csv", root / "report.json", root / "report.html"
    _write_csv(csv_path, rows)
    write_json_atomic(
        json_path,
        {
            "summary": summary,
            "columns": list(COLUMNS),
            "studies": [{c: r[c] for c in COLUMNS} for r in rows],  # non-finite -> null: write_json_atomic
            "failures": [{"study": s, "error": e} for s, e in failures],
            "duplicates": [d["sidecar"] for d in dropped],
        },
    )
    embed = _pick_embedded(rows, root, embed_first=embed_first, embed_worst=embed_worst)
    hist = base64.b64encode(_histogram_png(gains)).decode("ascii") if gains else None
    page = render_html(summary=summary, rows=rows, columns=COLUMNS, numeric=NUMERIC, embedded=embed,
                       histogram_b64=hist, failures=failures)  # fmt: skip
    write_text_atomic(html_path, page)
    logger.info("report of %d studies written to %s", len(rows), html_path)
    return ReportResult(
        csv=csv_path, json=json_path, html=html_path, n_studies=len(rows),
        n_done=len(done), n_failed=len(failed), gain_db_mean=gm, gain_db_sd=gsd, ssim_gain_mean=sm,
        ssim_gain_sd=ssd, failures=failures, n_duplicates=len(dropped),
    )  # fmt: skip


def _pick_embedded(rows: list[dict[str, Any]], root: Path, *, embed_first: int, embed_worst: int) -> dict[str, str]:
    """``{study: base64 PNG}`` of the figures to embed (existing files only)."""
    with_fig = [r for r in rows if r["figure"] and not r.get("_figure_missing")]
    chosen = with_fig[: max(0, embed_first)]
    ranked = sorted((r for r in with_fig if isinstance(r["gain_db"], float)), key=lambda r: (r["gain_db"], r["study"]))
    chosen += ranked[: max(0, embed_worst)]
    out: dict[str, str] = {}
    for r in chosen:
        if r["study"] in out:
            continue
        try:
            # Checked by figure_link (inside the output folder); only PNG files are embedded.
            data = _read_png(r["_figure_file"])
        except (OSError, ValueError) as exc:
            logger.warning("study %s: figure not embedded: %s", r["study"], exc)
            continue
        out[r["study"]] = base64.b64encode(data).decode("ascii")
    return out


#: Largest figure embedded in the page (bytes); mrisr's figures are about 100 KB.
MAX_EMBED_BYTES = 8 << 20


def _read_png(path: Path) -> bytes:
    """The bytes of a PNG file of at most :data:`MAX_EMBED_BYTES`.

    Raises:
        ValueError: Larger, or not a PNG.
    """
    with path.open("rb") as fh:
        data = fh.read(MAX_EMBED_BYTES + 1)
    if len(data) > MAX_EMBED_BYTES:
        raise ValueError(f"{path}: larger than {MAX_EMBED_BYTES} bytes")
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError(f"{path}: not a PNG file")
    return data
