"""Tests of mrisr.report (CSV/JSON/HTML from sidecars), mrisr.figures and the ``mrisr report`` command."""

from __future__ import annotations

import csv
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from mrisr.cli import app
from mrisr.figures import FigureData, compare_figure
from mrisr.report import COLUMNS, NoSidecarsError, build_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sidecar(
    study: str,
    *,
    status: str = "done",
    psnr: tuple[float, float] | None = (30.0, 31.0),
    ssim: tuple[float, float] = (0.90, 0.92),
    figure: str | None = None,
    created: str = "2024-05-01T10:00:00+00:00",
    error: str | None = None,
) -> dict[str, Any]:
    """A sidecar as ``mrisr enhance --simulate`` writes it (only the fields the report reads)."""
    d: dict[str, Any] = {
        "study": study,
        "status": status,
        "error": error,
        "input": {"path": f"/data/{study}.nii.gz", "sha256": "0" * 64, "format": "nifti"},
        "device": "cpu",
        "seconds": 2.5,
        "simulate": psnr is not None,
        "figure": figure,
        "created": created,
    }
    if status == "done":
        d["output"] = {"path": f"{study}_sr.nii.gz", "format": "nifti", "shape": [8, 8, 2]}
    if psnr is not None and status == "done":
        d["metrics"] = {
            "psnr_bicubic": psnr[0], "psnr_sr": psnr[1], "ssim_bicubic": ssim[0], "ssim_sr": ssim[1],
            "ssim3d_bicubic": 0.8, "ssim3d_sr": 0.85, "psnr_bicubic_masked": psnr[0] - 1,
            "psnr_sr_masked": psnr[1] - 0.5, "ssim_bicubic_masked": 0.7, "ssim_sr_masked": 0.75,
        }  # fmt: skip
    return d


def write(folder: Path, d: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / f"{d['study']}_sr.json"
    p.write_text(json.dumps(d), encoding="utf-8")
    return p


def small_figure(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    ref = rng.random((16, 12, 3))
    ref[4:12, 3:9] += 1.0
    data = FigureData(sr=ref + 0.02, affine=np.eye(4), factors=(4, 4, 1), lowres=ref[::4, ::4], bicubic=ref + 0.1,
                      reference=ref)  # fmt: skip
    metrics = {"psnr_bicubic": 20.0, "psnr_sr": 30.0, "ssim_bicubic": 0.5, "ssim_sr": 0.9}
    return compare_figure(path, data, metrics=metrics, title=path.stem)


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """Two shards: gains 1, 2 and 3 dB, a failure, an unreadable sidecar and a re-run study."""
    root = tmp_path / "out"
    s0, s1 = root / "shard-0", root / "shard-1"
    write(s0, sidecar("a", psnr=(30.0, 31.0), ssim=(0.90, 0.91), figure="a_compare.png"))
    small_figure(s0 / "a_compare.png")
    write(s0, sidecar("b", psnr=(20.0, 22.0), ssim=(0.80, 0.83), figure="missing.png"))
    write(s1, sidecar("c", psnr=(25.0, 28.0), ssim=(0.70, 0.75)))
    write(s1, sidecar("d", status="failed", psnr=None, error="UnreadableFileError: d.nii: truncated\nfile"))
    (s1 / "e_sr.json").write_text('{"study": "e", "status": ', encoding="utf-8")
    # study "c" also failed in an earlier run in the other shard: the done one wins.
    write(s0, sidecar("c", status="failed", psnr=None, error="killed", created="2024-01-01T00:00:00+00:00"))
    (s0 / ".x_sr.json.mrisr-tmp-1-abcd.json").write_text("{", encoding="utf-8")
    return root


class _TableRows(HTMLParser):
    """Collects the text of every row of ``<table id="studies">`` and every ``img`` src."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.imgs: list[str] = []
        self._in = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._in = a.get("id") == "studies"
        elif tag == "tr" and self._in:
            self.rows.append([])
        elif tag == "td" and self._in:
            self._cell = []
        elif tag == "img":
            self.imgs.append(a.get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in = False
        elif tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def parse(html: str) -> _TableRows:
    p = _TableRows()
    p.feed(html)
    return p


def test_build_report_merges_shards(out_dir: Path) -> None:
    res = build_report(out_dir)
    assert (res.n_studies, res.n_done, res.n_failed, res.n_duplicates) == (5, 3, 2, 1)
    # gains 1, 2, 3 dB → mean 2, sample sd 1; SSIM gains 0.01, 0.03, 0.05 → 0.03 ± 0.02
    assert res.gain_db_mean == pytest.approx(2.0)
    assert res.gain_db_sd == pytest.approx(1.0)
    assert res.ssim_gain_mean == pytest.approx(0.03)
    assert res.ssim_gain_sd == pytest.approx(0.02)
    failures = dict(res.failures)
    assert failures["d"] == "UnreadableFileError: d.nii: truncated file"
    assert failures["e"].startswith("unreadable sidecar:")

    with open(res.csv, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == COLUMNS
    by = {r["study"]: r for r in rows}
    assert [r["study"] for r in rows] == ["a", "b", "c", "d", "e"]
    assert float(by["c"]["gain_db"]) == pytest.approx(3.0)
    assert float(by["b"]["gain_db_masked"]) == pytest.approx(2.5)
    assert by["c"]["status"] == "done" and by["c"]["sidecar"] == "shard-1/c_sr.json"
    assert by["a"]["output"] == "shard-0/a_sr.nii.gz"
    assert by["a"]["figure"] == "shard-0/a_compare.png"
    assert by["d"]["psnr_sr"] == "" and by["d"]["status"] == "failed"

    rep = json.loads(res.json.read_text(encoding="utf-8"))
    assert rep["summary"]["studies"] == 5 and rep["summary"]["gain_db_mean"] == pytest.approx(2.0)
    assert rep["duplicates"] == ["shard-0/c_sr.json"]
    assert {f["study"] for f in rep["failures"]} == {"d", "e"}


def _study_page(index: Path, page: str, study: str) -> Path:
    href = re.search(r'<a href="(report_studies/[^"]+)">' + re.escape(study) + "</a>", page)
    assert href is not None, study
    return index.parent / href.group(1)


def test_html_is_self_contained(out_dir: Path) -> None:
    res = build_report(out_dir)
    page = res.html.read_text(encoding="utf-8")
    parsed = parse(page)
    assert len(parsed.rows) == 1 + 5  # header row + one per study
    assert [r[0] for r in parsed.rows[1:]] == ["a", "b", "c", "d", "e"]
    # the one existing figure embedded; charts are inline SVG; nothing fetched from elsewhere
    assert len(parsed.imgs) == 1 and parsed.imgs[0].startswith("data:image/png;base64,")
    assert page.count("<svg") == 3  # scatter, gain and SSIM distributions
    assert not re.search(r"<link|src=\"(?!data:)|https?://", page)
    assert "truncated file" in page and "unreadable sidecar" in page
    assert 'id="fig-a"' in page
    # every study has a page, linked relatively; b's page names its missing figure without a link
    b_page = _study_page(res.html, page, "b").read_text(encoding="utf-8")
    assert "shard-0/missing.png</code> (missing)" in b_page and 'src="../shard-0/missing.png"' not in b_page
    a_page = _study_page(res.html, page, "a").read_text(encoding="utf-8")
    assert 'src="../shard-0/a_compare.png"' in a_page
    assert (res.html.parent / "shard-0/a_compare.png").is_file()
    assert 'href="../report.html"' in a_page
    for study in "abcde":
        assert _study_page(res.html, page, study).is_file()


def test_embedding_is_limited(tmp_path: Path) -> None:
    for i in range(4):
        write(tmp_path, sidecar(f"s{i}", psnr=(30.0, 30.0 + i), figure=f"s{i}_compare.png"))
        small_figure(tmp_path / f"s{i}_compare.png", seed=i)
    page = build_report(tmp_path, embed_first=2, embed_worst=1).html.read_text(encoding="utf-8")
    ids = re.findall(r'<figure id="fig-(s\d)"', page)
    assert ids == ["s0", "s1"]  # first two by name; the worst gain (s0) is already among them
    page = build_report(tmp_path, embed_first=1, embed_worst=2).html.read_text(encoding="utf-8")
    assert re.findall(r'<figure id="fig-(s\d)"', page) == ["s0", "s1"]
    page = build_report(tmp_path, embed_first=0, embed_worst=0).html.read_text(encoding="utf-8")
    assert '<figure id="fig-' not in page
    assert 'src="../s3_compare.png"' in _study_page(tmp_path / "report.html", page, "s3").read_text(encoding="utf-8")


def test_infinite_and_missing_metrics(tmp_path: Path) -> None:
    d = sidecar("same", psnr=(30.0, math.inf))
    write(tmp_path, d)
    write(tmp_path, sidecar("plain", psnr=None) | {"consistency": {"psnr_lr": 41.5}})
    res = build_report(tmp_path)
    assert res.gain_db_mean is None  # the only gain is infinite
    rep = json.loads(res.json.read_text(encoding="utf-8"))  # strict JSON: no Infinity
    row = {r["study"]: r for r in rep["studies"]}
    assert row["same"]["psnr_sr"] is None and row["plain"]["psnr_lr"] == 41.5
    assert "Infinity" not in res.json.read_text(encoding="utf-8")
    assert "No PSNR/SSIM" in res.html.read_text(encoding="utf-8")


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        build_report(tmp_path / "nope")
    with pytest.raises(NoSidecarsError):
        build_report(tmp_path)


def test_two_thousand_studies(tmp_path: Path) -> None:
    """The numbers of a large report (its build time is measured by benchmarks/bench_report.py)."""
    rng = np.random.default_rng(0)
    gains = rng.normal(1.0, 0.5, 2000)
    for i, g in enumerate(gains):
        status = "failed" if i % 100 == 7 else "done"
        write(tmp_path / f"shard-{i % 8}", sidecar(f"study{i:05d}", status=status, psnr=(30.0, 30.0 + g),
                                                   error="boom" if status == "failed" else None))  # fmt: skip
    res = build_report(tmp_path)
    assert res.n_studies == 2000 and res.n_failed == 20
    done = np.array([g for i, g in enumerate(gains) if i % 100 != 7])
    assert res.gain_db_mean == pytest.approx(done.mean(), abs=1e-9)
    assert res.gain_db_sd == pytest.approx(done.std(ddof=1), abs=1e-9)
    with open(res.csv, newline="", encoding="utf-8") as fh:
        assert sum(1 for _ in csv.DictReader(fh)) == 2000
    assert len(parse(res.html.read_text(encoding="utf-8")).rows) == 2001
    assert len(list((tmp_path / "report_studies").glob("*.html"))) == 2000


def test_cli_report(out_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["report", str(out_dir)])
    assert r.exit_code == 1, r.output
    assert "report.html" in r.output and "+2.00 ± 1.00" in r.output
    ok = tmp_path / "ok"
    write(ok, sidecar("z"))
    r = runner.invoke(app, ["report", str(ok)])
    assert r.exit_code == 0, r.output
    assert (ok / "report.html").is_file() and (ok / "report.csv").is_file()
    r = runner.invoke(app, ["report", str(tmp_path / "missing")])
    assert r.exit_code == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    r = runner.invoke(app, ["report", str(empty)])
    assert r.exit_code == 2 and "no *_sr.json" in r.output
