"""Batch report: merge every sidecar under an output folder into CSV, JSON and HTML pages.

:func:`build_report` reads the sidecars written by ``mrisr enhance`` (in every sub-folder, so the
shards of a cluster run merge into one report), and writes beside them:

``report.csv``
    One row per study, columns :data:`COLUMNS` (defined in :mod:`mrisr.report.columns`).
``report.json``
    ``{"summary", "provenance", "columns", "studies", "outliers", "failures", "duplicates"}``;
    non-finite numbers (an infinite PSNR of identical volumes) are written as ``null``.
``report.html``
    The index page (from a jinja2 template, :mod:`mrisr.report.page`): provenance, summary, group
    views (SR-vs-bicubic PSNR scatter, gain and SSIM distributions), outliers, the searchable,
    filterable, sortable table, embedded figures, failures and, when the folder holds a training
    run's ``metrics.csv``, its training curves.
``report_studies/<study>.html``
    One page per study: every metric with its definition, provenance, the mosaic and comparison
    figures, links to the output, the maps and the sidecar.

Study order is natural (``s2`` before ``s10``). Links only ever point to files inside the output
folder, by relative paths (:mod:`mrisr.report.links`). See ``docs/report.md``.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrisr.errors import MrisrError
from mrisr.fsutil import write_json_atomic, write_text_atomic
from mrisr.report import links
from mrisr.report.cohort import finite, flag_outliers, mean_sd, natural_key
from mrisr.report.columns import COLUMN_LIST
from mrisr.sidecar import METRIC_KEYS, SIDECAR_SUFFIX, is_sidecar_name, load_sidecar, study_from_name

logger = logging.getLogger(__name__)

COLUMNS: tuple[str, ...] = tuple(c.key for c in COLUMN_LIST)
NUMERIC: frozenset[str] = frozenset(c.key for c in COLUMN_LIST if c.numeric)
#: Files a sidecar may name, linked from the study page: sidecar key path → label.
LINKED_FILES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("output", "path"), "output"),
    (("output", "lowres"), "low-resolution input (simulated)"),
    (("output", "bicubic"), "bicubic volume"),
    (("uncertainty", "map"), "uncertainty map (ensemble spread)"),
    (("consistency", "map"), "consistency residual map"),
    (("figure",), "comparison figure"),
    (("mosaic",), "mosaic figure"),
)


class NoSidecarsError(MrisrError):
    """An output folder that holds no ``*_sr.json`` sidecar (and no training run)."""


class ReportBlockedError(MrisrError):
    """A file or folder that no earlier report of mrisr wrote stands where the report goes."""


#: What a report writes in its folder: replaced on the next report, and only then.
REPORT_FILES: tuple[str, ...] = ("report.csv", "report.json", "report.html", "report_studies")


def check_report_paths(root: Path) -> None:
    """Refuse to replace report files that mrisr did not write.

    The report's files (:data:`REPORT_FILES`) are mrisr's when ``report.json`` is one of its reports
    (a JSON object with ``summary``, ``columns`` and ``studies``); then the files it lists in
    ``files`` (every one of them, for reports written before that entry) are replaced. Anything else
    standing at one of those names is the user's.

    Raises:
        ReportBlockedError: Naming the first such path.
    """
    from mrisr.sidecar import load_sidecar  # the same bounded JSON reader

    owned: set[str] = set()
    data, _ = load_sidecar(root / "report.json") if (root / "report.json").is_file() else (None, None)
    if data is not None and all(k in data for k in ("summary", "columns", "studies")):
        listed = data.get("files")
        names = listed if isinstance(listed, list) else list(REPORT_FILES)
        owned = {n for n in names if n in REPORT_FILES} | {"report.json"}
    for name in REPORT_FILES:
        path = root / name
        if os.path.lexists(path) and name not in owned:
            raise ReportBlockedError(path, "not written by a report of mrisr; move it away to write the report here")


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
        gain_db_sd: Its sample standard deviation, dB (``None`` for fewer than two studies).
        ssim_gain_mean: Mean of ``ssim_sr - ssim_bicubic``.
        ssim_gain_sd: Its sample standard deviation (``None`` below two studies).
        failures: ``(study, reason)`` of every failed study.
        n_duplicates: Sidecars set aside because another sidecar of the same study was kept.
        n_outliers: Studies flagged as outliers of the cohort.
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
    n_outliers: int = 0


def find_sidecars(out_dir: Path) -> list[Path]:
    """Every sidecar under ``out_dir`` (recursively), hidden files and folders excluded, sorted."""
    return sorted(
        p
        for p in out_dir.rglob("*.json")
        if is_sidecar_name(p.name)
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(out_dir).parts)
    )


#: Largest magnitude of a number taken from a sidecar. No value mrisr writes comes near (PSNR in dB,
#: SSIM within ±1, seconds, intensities); beyond it, sums and squares of a cohort could overflow.
MAX_VALUE = 1e12


def _num(v: Any, where: str = "") -> float | None:
    """A number from a sidecar, ``None`` when absent (``null``) or unusable: a string, a boolean, a
    non-finite value (``Infinity``, ``NaN``, ``1e400``) or one beyond :data:`MAX_VALUE`; an unusable
    value is logged as a warning naming ``where`` (the sidecar and key) and is missing in the report."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        shown = _text(v, 40) if isinstance(v, str) else type(v).__name__
        logger.warning("%s: not a number (%r); shown as missing", where, shown)
        return None
    try:
        x = float(v)
    except OverflowError:  # an integer beyond the float range
        x = math.inf
    if not (math.isfinite(x) and abs(x) <= MAX_VALUE):
        logger.warning("%s: %s is not a plausible value; shown as missing", where, _plain(x))
        return None
    return x


def _plain(x: float) -> str:
    return "NaN" if math.isnan(x) else "Infinity" if x == math.inf else "-Infinity" if x == -math.inf else f"{x:g}"


def _diff(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    d = a - b
    return d if math.isfinite(d) else None


def _rel(p: Path, root: Path) -> str:
    return Path(os.path.relpath(p, root)).as_posix()


def _get(data: Any, keys: Iterable[str]) -> Any:
    for k in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(k)
    return data


def _text(v: Any, limit: int = 2000) -> str | None:
    """A string from a sidecar as one clean line (``None`` for anything that is not a string): no
    lone surrogates (file names that are not UTF-8 could not be written into the UTF-8 report)."""
    if not isinstance(v, str):
        return None
    t = " ".join(v.split())
    t = t if len(t) <= limit else t[: limit - 3] + "..."
    return t.encode("utf-8", "backslashreplace").decode("utf-8")


def _load_sidecar(path: Path, out_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(data, None)`` for a readable sidecar, else ``(None, reason)``: a link out of ``out_dir``, or
    what :func:`mrisr.sidecar.load_sidecar` refuses."""
    if links.inside(out_dir, path) is None:
        return None, f"unreadable sidecar: a link to a file outside the output folder {out_dir}"
    return load_sidecar(path)


def _row_from_sidecar(path: Path, root: Path) -> dict[str, Any]:
    """One report row; an unreadable or invalid sidecar gives a failed row naming the reason."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    name = _text(path.name) or ""
    row["study"] = study_from_name(name)
    row["sidecar"] = _text(_rel(path, root))
    row["status"] = "failed"
    row.update(_files=[], _prov={}, _output_link=None, _figure_link=None, _mosaic_link=None)
    data, why = _load_sidecar(path, root)
    if data is None:
        row["error"] = why
        return row
    try:
        _fill_row(row, data, path, root)
    except Exception as exc:  # a sidecar is data from disk: whatever it holds, it is one failed row
        logger.debug("sidecar %s", path, exc_info=True)
        row.update(status="failed", error=f"invalid sidecar: {type(exc).__name__}")
    return row


def _fill_row(row: dict[str, Any], data: dict[str, Any], path: Path, root: Path) -> None:
    """Fill ``row`` from a sidecar's ``data``: only strings and numbers are taken, and files only
    through :func:`~mrisr.report.links.figure_link` (inside the output folder)."""
    where = f"{_text(_rel(path, root))}: "
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
    row["seconds"] = _num(data.get("seconds"), f"{where}seconds")
    row["device"] = _text(data.get("device"), 60)
    row["input"] = _text(_get(data, ("input", "path")))
    named = {keys: links.sidecar_link(root, path, _get(data, keys), what=label) for keys, label in LINKED_FILES}
    row["_files"] = [(label, lk) for keys, label in LINKED_FILES if (lk := named[keys]) is not None]
    for key, keys in (("output", ("output", "path")), ("figure", ("figure",)), ("mosaic", ("mosaic",))):
        lk = named[keys]
        row[key] = None if lk is None else _text(lk.rel)
        row[f"_{key}_link"] = lk
    metrics = data.get("metrics")
    if isinstance(metrics, dict):
        for k in METRIC_KEYS:
            row[k] = _num(metrics.get(k), f"{where}metrics.{k}")
    row["psnr_lr"] = _num(_get(data, ("consistency", "psnr_lr")), f"{where}consistency.psnr_lr")
    row["residual_rms_head"] = _num(
        _get(data, ("consistency", "residual_rms_head")), f"{where}consistency.residual_rms_head"
    )
    rel_spread = _num(_get(data, ("uncertainty", "relative_mean_head")), f"{where}uncertainty.relative_mean_head")
    row["uncertainty_rel_head"] = None if rel_spread is None else 100.0 * rel_spread
    row["uncertainty_mean_head"] = _num(_get(data, ("uncertainty", "mean_head")), f"{where}uncertainty.mean_head")
    row["gain_db"] = _diff(row["psnr_sr"], row["psnr_bicubic"])
    row["gain_db_masked"] = _diff(row["psnr_sr_masked"], row["psnr_bicubic_masked"])
    row["ssim_gain"] = _diff(row["ssim_sr"], row["ssim_bicubic"])
    row["output_from"] = _text(data.get("output_from"), 40)
    scale = data.get("scale")
    if isinstance(scale, list) and scale and all(isinstance(f, int) and not isinstance(f, bool) for f in scale):
        row["scale"] = "×".join(map(str, scale))[:40]
    row["ensemble"] = _num(data.get("ensemble"), f"{where}ensemble")
    row["checkpoint_sha256"] = _text(_get(data, ("checkpoint", "sha256")), 64)
    row["mrisr_version"] = _text(data.get("mrisr_version"), 40)
    cmd = data.get("command")
    words = [w for w in (_text(c, 500) for c in cmd[:200]) if w] if isinstance(cmd, list) else []
    row["_prov"] = {
        "checkpoint": _text(_get(data, ("checkpoint", "path")), 500),
        "degradation": _text(data.get("degradation"), 40),
        "command": " ".join(words)[:2000] or None,
        "created": _text(data.get("created"), 40),
    }


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
    return [best[k] for k in sorted(best, key=natural_key)], dropped


def _cell_text(v: Any) -> str:
    return "" if v is None else repr(v) if isinstance(v, float) else str(v)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_cell_text(row[c]) for c in COLUMNS])
    write_text_atomic(path, buf.getvalue())


def _checkpoint_text(r: dict[str, Any]) -> str | None:
    path, sha = r["_prov"].get("checkpoint"), r["checkpoint_sha256"]
    return f"{path or '?'} (sha256 {sha})" if sha else path


def _provenance(rows: list[dict[str, Any]]) -> dict[str, list[tuple[str, int]]]:
    """Distinct values (with study counts) of what made the outputs, most common first."""
    fields: dict[str, list[str | None]] = {
        "mrisr version": [r["mrisr_version"] for r in rows],
        "checkpoint": [_checkpoint_text(r) for r in rows],
        "scale": [r["scale"] for r in rows],
        "ensemble views": [None if r["ensemble"] is None else str(int(r["ensemble"])) for r in rows],
        "degradation model": [r["_prov"].get("degradation") for r in rows],
        "output from": [r["output_from"] for r in rows],
        "device": [r["device"] for r in rows],
        "command line": [r["_prov"].get("command") for r in rows],
    }
    out: dict[str, list[tuple[str, int]]] = {}
    for name, values in fields.items():
        counts: dict[str, int] = {}
        for v in values:
            if v:
                counts[v] = counts.get(v, 0) + 1
        out[name] = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    created = sorted(c for r in rows if (c := r["_prov"].get("created")))
    out["created"] = [(f"{created[0]} … {created[-1]}", len(created))] if created else []
    return out


def build_report(out_dir: str | Path, *, embed_first: int = 20, embed_worst: int = 10) -> ReportResult:
    """Read every sidecar under ``out_dir`` and write report.csv, report.json, report.html and the study pages.

    Args:
        out_dir: Output folder of ``mrisr enhance`` (shards in sub-folders are included), or of
            ``mrisr train`` (its ``metrics.csv`` gives training curves).
        embed_first: Figures embedded in the index page for the first studies by name.
        embed_worst: Figures embedded for the studies with the lowest PSNR gain (in addition).

    Returns:
        A :class:`ReportResult`.

    Raises:
        FileNotFoundError: If ``out_dir`` is not a folder.
        NoSidecarsError: If it holds no sidecar and no training run.
    """
    from mrisr.report.curves import find_training_runs
    from mrisr.report.page import write_pages

    root = Path(out_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    paths = find_sidecars(root)
    runs = find_training_runs(root)
    if not paths and not runs:
        raise NoSidecarsError(root, f"no *{SIDECAR_SUFFIX} sidecar (nor a training run's metrics.csv) found")
    rows, dropped = _merge([_row_from_sidecar(p, root) for p in paths])
    for d in dropped:
        logger.info("study %s: sidecar %s superseded by another sidecar", d["study"], d["sidecar"])
    outliers = flag_outliers(rows)
    done = [r for r in rows if r["status"] == "done"]
    failed = [r for r in rows if r["status"] != "done"]
    gains = finite(r["gain_db"] for r in done)
    gm, gsd = mean_sd(gains)
    sm, ssd = mean_sd(finite(r["ssim_gain"] for r in done))
    cm, csd = mean_sd(finite(r["psnr_lr"] for r in done))
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
        "psnr_lr_mean": cm,
        "psnr_lr_sd": csd,
        "outliers": len({o["study"] for o in outliers}),
        "duplicates": len(dropped),
    }
    failures = tuple((str(r["study"]), str(r["error"] or "failed (no reason recorded)")) for r in failed)
    provenance = _provenance(done or rows)

    csv_path, json_path, html_path = root / "report.csv", root / "report.json", root / "report.html"
    check_report_paths(root)
    _write_csv(csv_path, rows)
    write_json_atomic(
        json_path,
        {
            "summary": summary,
            "provenance": {k: [{"value": v, "studies": n} for v, n in vs] for k, vs in provenance.items()},
            "columns": list(COLUMNS),
            "studies": [{c: r[c] for c in COLUMNS} for r in rows],  # non-finite -> null: write_json_atomic
            "outliers": outliers,
            "failures": [{"study": s, "error": e} for s, e in failures],
            "duplicates": [d["sidecar"] for d in dropped],
            "files": list(REPORT_FILES),
        },
    )
    write_pages(root, html_path, summary=summary, rows=rows, provenance=provenance, outliers=outliers,
                failures=failures, runs=runs, embed_first=embed_first, embed_worst=embed_worst)  # fmt: skip
    logger.info("report of %d studies written to %s", len(rows), html_path)
    return ReportResult(
        csv=csv_path, json=json_path, html=html_path, n_studies=len(rows),
        n_done=len(done), n_failed=len(failed), gain_db_mean=gm, gain_db_sd=gsd, ssim_gain_mean=sm,
        ssim_gain_sd=ssd, failures=failures, n_duplicates=len(dropped), n_outliers=summary["outliers"],
    )  # fmt: skip


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
