"""The report's HTML pages, rendered from the jinja2 templates in ``mrisr/report/templates``.

``report.html`` (the index) is self-contained (CSS, JS and embedded figures inline, charts as inline
SVG); the study pages in ``report_studies/`` link their figures by relative paths. Autoescaping is on
for every template: study ids, errors, paths and command lines from sidecars are text, never markup.
The table rows are static HTML (readable without JavaScript); numeric cells carry their
full-precision value in ``data-v`` so sorting is numeric, and empty cells sort last.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mrisr import __version__
from mrisr.fsutil import atomic_path, write_text_atomic
from mrisr.report import charts, links
from mrisr.report.cohort import MIN_COHORT, OUTLIER_Z, finite
from mrisr.report.columns import COLUMN_INFO, COLUMN_LIST, NARROW_HIDDEN, TABLE_COLUMNS, Column
from mrisr.report.curves import TrainingRun
from mrisr.report.links import FigureLink

log = logging.getLogger(__name__)

STUDY_DIR = "report_studies"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_BREAK = re.compile(r"(?<=[_./-])")


def page_name(study: str) -> str:
    """File name of a study's page: its id made safe for any file system, plus a short hash of it."""
    safe = _UNSAFE.sub("_", study).strip("._")[:60] or "study"
    return f"{safe}-{hashlib.sha1(study.encode('utf-8', 'replace')).hexdigest()[:8]}.html"


def _fmt(v: Any, col: Column) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{col.digits if col.digits is not None else 4}f}"
    return str(v)


def _breakable(text: Any) -> Any:
    """``text`` escaped, with a line-break opportunity after each ``_ - . /`` (long BIDS ids wrap there)."""
    from markupsafe import Markup, escape

    return Markup("<wbr>").join(escape(p) for p in _BREAK.split(str(text)))


def _dv(v: Any) -> str:
    return repr(float(v)) if isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v) else ""


@lru_cache(maxsize=1)
def _env() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("mrisr.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
        lstrip_blocks=False,
    )
    env.filters["fmt"] = _fmt
    env.filters["dv"] = _dv
    env.filters["breakable"] = _breakable
    return env


def _charts(rows: Sequence[dict[str, Any]], pages: dict[str, str]) -> dict[str, charts.Chart]:
    done = [r for r in rows if r["status"] == "done"]
    out: dict[str, charts.Chart] = {}
    pts = [r for r in done if all(isinstance(r[k], float) and math.isfinite(r[k]) for k in ("psnr_bicubic", "psnr_sr"))]
    if pts:
        out["scatter"] = charts.scatter(
            [r["psnr_bicubic"] for r in pts], [r["psnr_sr"] for r in pts],
            [f"{r['study']}: bicubic {r['psnr_bicubic']:.2f} dB, SR {r['psnr_sr']:.2f} dB" for r in pts],
            [pages[r["study"]] for r in pts], ["out" if r["flags"] else "" for r in pts],
            xlabel="PSNR bicubic (dB)", ylabel="PSNR SR (dB)",
        )  # fmt: skip
    gains = finite(r["gain_db"] for r in done)
    if gains:
        out["gain"] = charts.histograms([("PSNR gain", gains)], xlabel="PSNR gain of SR over bicubic (dB)")
    sb, ss = finite(r["ssim_bicubic"] for r in done), finite(r["ssim_sr"] for r in done)
    if sb or ss:
        out["ssim"] = charts.histograms([("bicubic", sb), ("SR", ss)], xlabel="SSIM (mean 2D, unitless)")
    cons = finite(r["psnr_lr"] for r in done)
    if cons:
        out["consistency"] = charts.histograms([("consistency", cons)], xlabel="consistency PSNR (dB)")
    return out


def _run_context(run: TrainingRun) -> dict[str, Any]:
    steps = run.steps
    ctx: dict[str, Any] = {"path": run.path, "href": quote(run.path), "n": len(steps), "psnr": None, "ssim": None}
    ctx["loss"] = charts.lines(steps, [("loss", run.columns["loss"])], xlabel="step", ylabel="loss")
    for kind in ("psnr", "ssim"):
        names = [k for k in (f"val_{kind}_sr", f"val_{kind}_bicubic") if k in run.columns]
        if names and any(v is not None for k in names for v in run.columns[k]):
            ylabel = f"validation {kind.upper()}{' (dB)' if kind == 'psnr' else ''}"
            ctx[kind] = charts.lines(steps, [(k, run.columns[k]) for k in names], xlabel="step", ylabel=ylabel)
            ctx[f"{kind}_names"] = names
    return ctx


def _embedded(rows: Sequence[dict[str, Any]], *, first: int, worst: int) -> list[dict[str, Any]]:
    """The figures embedded in the index: the first ``first`` studies and the ``worst`` lowest gains
    (PNG files inside the output folder only: :func:`mrisr.report.links.figure_link` checked them)."""
    from mrisr.report import _read_png

    with_fig = [r for r in rows if r.get("_figure_link") is not None and r["_figure_link"].exists]
    chosen = with_fig[: max(0, first)]
    ranked = sorted((r for r in with_fig if isinstance(r["gain_db"], float)), key=lambda r: (r["gain_db"], r["study"]))
    chosen += ranked[: max(0, worst)]
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for r in chosen:
        if r["study"] in seen:
            continue
        seen.add(r["study"])
        try:
            data = _read_png(r["_figure_link"].file)
        except (OSError, ValueError) as exc:
            log.warning("study %s: figure not embedded: %s", r["study"], exc)
            continue
        out.append({"study": r["study"], "b64": base64.b64encode(data).decode("ascii"), "gain": r["gain_db"]})
    return out


def _shown(link: FigureLink | None, depth: int) -> str | None:
    """The ``src`` of an existing figure from a page ``depth`` folders down, else ``None``."""
    return links.from_page(link.href, depth=depth) if link is not None and link.exists else None


def _study_context(r: dict[str, Any]) -> dict[str, Any]:
    depth = 1
    metrics = [(c, r[c.key]) for c in COLUMN_LIST if c.numeric and r.get(c.key) is not None]
    prov = [(name, v) for name, v in (
        ("input", r["input"]), ("mrisr version", r["mrisr_version"]), ("checkpoint", r["_prov"].get("checkpoint")),
        ("checkpoint sha256", r["checkpoint_sha256"]), ("scale", r["scale"]),
        ("ensemble views", None if r["ensemble"] is None else int(r["ensemble"])),
        ("degradation model", r["_prov"].get("degradation")), ("output from", r["output_from"]),
        ("device", r["device"]), ("created", r["_prov"].get("created")), ("command line", r["_prov"].get("command")),
    ) if v is not None]  # fmt: skip
    files = [(label, links.from_page(lk.href, depth=depth), lk.exists or lk.file.is_dir(), lk.rel)
             for label, lk in r["_files"]]  # fmt: skip
    if r["sidecar"]:
        files.append(("sidecar", links.from_page(quote(r["sidecar"]), depth=depth), True, r["sidecar"]))
    return {"r": r, "metrics": metrics, "prov": prov, "files": files,
            "figure": _shown(r.get("_figure_link"), depth), "mosaic": _shown(r.get("_mosaic_link"), depth)}  # fmt: skip


def write_pages(
    root: Path,
    html_path: Path,
    *,
    summary: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    provenance: dict[str, list[tuple[str, int]]],
    outliers: Sequence[dict[str, Any]],
    failures: Sequence[tuple[str, str]],
    runs: Sequence[TrainingRun],
    embed_first: int,
    embed_worst: int,
) -> None:
    """Write ``report.html`` and one page per study in ``report_studies/`` (replaced as a whole).

    Args:
        root: The report's folder.
        html_path: Where the index goes.
        summary: The summary of ``report.json``.
        rows: Report rows in display (natural) order.
        provenance: ``{field: [(value, studies), ...]}``.
        outliers: Flagged values (:func:`mrisr.report.cohort.flag_outliers`).
        failures: ``(study, reason)`` pairs.
        runs: Training runs found in the folder.
        embed_first: Figures embedded for the first studies.
        embed_worst: Figures embedded for the lowest gains.
    """
    env = _env()
    names = {r["study"]: page_name(r["study"]) for r in rows}
    pages = {s: f"{STUDY_DIR}/{n}" for s, n in names.items()}
    embedded = _embedded(rows, first=embed_first, worst=embed_worst)
    index = env.get_template("index.html.j2").render(
        summary=summary, rows=rows, provenance=provenance, outliers=outliers, failures=failures,
        cols=COLUMN_INFO, table_columns=[COLUMN_INFO[k] for k in TABLE_COLUMNS], all_columns=COLUMN_LIST,
        narrow_hidden=NARROW_HIDDEN, pages=pages, charts=_charts(rows, pages),
        embedded=embedded, embedded_ids={e["study"] for e in embedded},
        n_figures=sum(1 for r in rows if r["figure"]), runs=[_run_context(run) for run in runs],
        version=__version__, z=OUTLIER_Z, min_cohort=MIN_COHORT,
    )  # fmt: skip
    study_tpl = env.get_template("study.html.j2")
    # The pages are written into a fresh folder that replaces the old one at once: no stale pages of
    # studies that are gone, and no fsync per page (thousands of small files).
    with atomic_path(root / STUDY_DIR) as tmp:
        tmp.mkdir()
        for n, r in enumerate(rows):
            prev = names[rows[n - 1]["study"]] if n > 0 else None
            nxt = names[rows[n + 1]["study"]] if n + 1 < len(rows) else None
            text = study_tpl.render(prev=prev, next=nxt, **_study_context(r))
            (tmp / names[r["study"]]).write_text(text, encoding="utf-8")
    write_text_atomic(html_path, index)
