"""The report's pages: natural order, provenance, outliers, escaping of hostile sidecars, links,
single-study summaries, training curves and the cohort statistics behind them."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mrisr.cli import app
from mrisr.report import build_report
from mrisr.report.cohort import flag_outliers, natural_key, robust_z
from mrisr.report.columns import COLUMN_INFO, TABLE_COLUMNS
from mrisr.report.links import from_page, sidecar_link
from tests.test_report import parse, sidecar, write


def _rows(page: str) -> list[str]:
    return [r[0] for r in parse(page).rows[1:]]


def test_natural_order_and_single_study_summary(tmp_path: Path) -> None:
    for s in ("s10", "s2", "s1", "S3"):
        write(tmp_path, sidecar(s, psnr=(30.0, 31.0)))
    page = build_report(tmp_path).html.read_text(encoding="utf-8")
    assert _rows(page) == ["s1", "s2", "S3", "s10"]  # not lexical (s1, s10, s2)
    one = tmp_path / "one"
    write(one, sidecar("only", psnr=(30.0, 34.07)))
    res = build_report(one)
    assert res.gain_db_sd is None
    page = res.html.read_text(encoding="utf-8")
    assert "+4.07 dB" in page and "±" not in page
    r = CliRunner().invoke(app, ["report", str(one)])
    assert r.exit_code == 0 and "+4.07" in r.output and "±" not in r.output


def test_headers_have_units_and_definitions(tmp_path: Path) -> None:
    write(tmp_path, sidecar("a"))
    page = build_report(tmp_path).html.read_text(encoding="utf-8")
    heads = re.findall(r'<th scope="col" data-col="([a-z_0-9]+)"[^>]*><abbr title="([^"]+)">([^<]+)</abbr>', page)
    assert [h[0] for h in heads] == list(TABLE_COLUMNS)
    for key, title, _label in heads:
        assert len(title) > 15 and html.unescape(title) == COLUMN_INFO[key].definition
    assert '<span class="muted">dB</span>' in page


def _prov_sidecar(study: str, gain: float, psnr_lr: float, **extra: object) -> dict[str, object]:
    d = sidecar(study, psnr=(30.0, 30.0 + gain))
    d |= {"mrisr_version": "9.9.9", "checkpoint": {"path": "/w/espcn_x4.pt", "sha256": "ab" * 32},
          "scale": [4, 4, 1], "ensemble": 8, "degradation": "bicubic", "output_from": "network",
          "command": ["mrisr", "enhance", "in", "--out", "out"], "consistency": {"psnr_lr": psnr_lr}}  # fmt: skip
    return d | extra


def test_provenance_and_outliers(tmp_path: Path) -> None:
    for i in range(12):
        gain = -3.0 if i == 7 else 1.0 + 0.05 * (i % 3)
        write(tmp_path, _prov_sidecar(f"s{i}", gain, 20.0 if i == 4 else 45.0 + 0.2 * (i % 4)))
    res = build_report(tmp_path)
    assert res.n_outliers == 2
    page = res.html.read_text(encoding="utf-8")
    for text in ("9.9.9", "/w/espcn_x4.pt (sha256 " + "ab" * 32, "4×4×1", "mrisr enhance in --out out"):
        assert text in page
    rep = json.loads(res.json.read_text(encoding="utf-8"))
    flagged = {(o["study"], o["column"]) for o in rep["outliers"]}
    assert flagged == {("s7", "gain_db"), ("s4", "psnr_lr")}
    rows = {r["study"]: r for r in rep["studies"]}
    assert rows["s7"]["flags"].startswith("gain_db z=-") and rows["s0"]["flags"] is None
    assert re.search(r'<tr data-study="s7" data-status="done" data-flagged', page)
    assert 'class="out"' in page  # the scatter point of s7 is red
    s7 = (tmp_path / re.search(r'href="(report_studies/[^"]+)">s7<', page).group(1)).read_text()  # type: ignore[union-attr]
    assert "outlier: gain_db z=" in s7 and "mrisr enhance in --out out" in s7 and "ab" * 32 in s7


def test_hostile_sidecar_is_text_and_links_stay_inside(tmp_path: Path) -> None:
    root = tmp_path / "out"
    bad = sidecar("<script>alert(1)</script>", figure="javascript:alert(2)",
                  error=None) | {"output": {"path": "../../etc/passwd"}, "mosaic": "/etc/passwd",
                                 "consistency": {"map": "http://x.example/r.nii.gz"}}  # fmt: skip
    root.mkdir()
    (root / "x_sr.json").write_text(json.dumps(bad), encoding="utf-8")
    write(root, sidecar("f", status="failed", psnr=None, error='<img src=x onerror="alert(3)">'))
    (root / "deep_sr.json").write_text('{"a": ' * 100_000 + "1" + "}" * 100_000, encoding="utf-8")
    res = build_report(root)
    assert dict(res.failures)["deep"].startswith("unreadable sidecar")
    pages = [res.html, *sorted((root / "report_studies").glob("*.html"))]
    assert len(pages) == 4
    for p in pages:
        text = p.read_text(encoding="utf-8")
        assert "<script>alert" not in text and "<img src=x" not in text
        assert "javascript:" not in text and "etc/passwd" not in text and "x.example" not in text
        for link in re.findall(r'(?:href|src)="([^"]*)"', text):
            assert link.startswith(("data:image/png;base64,", "report_studies/", "../", "report.")) or re.fullmatch(
                r"[A-Za-z0-9_.-]+\.html", link
            ), link
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in res.html.read_text(encoding="utf-8")
    rep = json.loads(res.json.read_text(encoding="utf-8"))
    row = next(r for r in rep["studies"] if r["status"] == "done")
    assert row["output"] is None and row["figure"] is None and row["mosaic"] is None


def test_link_rules(tmp_path: Path) -> None:
    side = tmp_path / "sub" / "x_sr.json"
    side.parent.mkdir()
    (tmp_path / "sub" / "f.png").write_bytes(b"x")

    def rel(value: object) -> str | None:
        lk = sidecar_link(tmp_path, side, value, what="mosaic")
        return None if lk is None else lk.rel

    assert rel("f.png") == "sub/f.png" and rel("../sub/f.png") == "sub/f.png"
    for bad in ("../../x", "/etc/passwd", "javascript:x", "C:\\x", "a\\b", "f\0.png", ["f.png"], 3):
        assert rel(bad) is None, bad
    assert rel(None) is None and rel("") is None  # absent entries
    (tmp_path / "sub" / "out").symlink_to("/etc")
    assert rel("out/passwd") is None  # a link out of the folder
    lk = sidecar_link(tmp_path, side, "a b#c.png", what="figure")
    assert lk is not None and lk.href == "sub/a%20b%23c.png" and not lk.exists
    assert from_page(lk.href, depth=1) == "../sub/a%20b%23c.png"


def test_training_curves(tmp_path: Path) -> None:
    run = tmp_path / "train"
    run.mkdir()
    (run / "metrics.csv").write_text(
        "epoch,step,loss,lr,val_psnr_sr,val_psnr_bicubic,seconds\n"
        + "".join(f"{e},{e * 10},{1 / (e + 1):.4f},0.001,{30 + e},{29.5},{e}\n" for e in range(6)),
        encoding="utf-8",
    )
    res = build_report(tmp_path)  # a training folder alone: no sidecar is needed
    page = res.html.read_text(encoding="utf-8")
    assert "Training curves" in page and 'href="train/metrics.csv"' in page
    assert page.count("<polyline") == 3  # loss, validation PSNR of SR and of bicubic
    write(tmp_path, sidecar("a"))
    assert "Training curves" in build_report(tmp_path).html.read_text(encoding="utf-8")
    (run / "metrics.csv").write_text("a,b\n1,2\n", encoding="utf-8")  # not a training run
    assert "Training curves" not in build_report(tmp_path).html.read_text(encoding="utf-8")


def test_cohort_statistics() -> None:
    assert sorted(["s10", "s2", "s1", "a"], key=natural_key) == ["a", "s1", "s2", "s10"]
    assert robust_z([1.0, 2.0, 3.0]) is None  # too few to call anything an outlier
    med, scale = robust_z([1.0, 2.0, 3.0, 4.0, 100.0]) or (0, 0)
    assert med == 3.0 and scale == pytest.approx(1.4826)
    rows = [{"study": f"s{i}", "status": "done", "gain_db": 1.0, "psnr_lr": None} for i in range(6)]
    rows[2]["gain_db"] = 5.0  # MAD is 0: the mean absolute deviation stands in
    found = flag_outliers(rows, ["gain_db"])
    assert [f["study"] for f in found] == ["s2"] and rows[2]["flags"] and rows[0]["flags"] is None
