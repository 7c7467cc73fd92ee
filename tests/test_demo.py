"""`mrisr demo`: the embedded default job runs offline and ends with a report."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import pytest

from mrisr.cli import main


@pytest.mark.slow
def test_demo_runs_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.html'}" in printed
    sim = json.loads((out / "simulate" / "mni152_t1_slab_sr.json").read_text())
    assert sim["simulate"] and sim["metrics"]["psnr_sr"] > sim["metrics"]["psnr_bicubic"] + 1.0
    epi = json.loads((out / "enhance" / "example4d_sr.json").read_text())
    assert epi["status"] == "done" and epi["output"]["shape"] == [512, 384, 24, 2]
    assert nib.load(out / "enhance" / "example4d_sr.nii.gz").shape == (512, 384, 24, 2)
    rows = (out / "report.csv").read_text().strip().splitlines()
    assert len(rows) == 3
    assert (out / "report.html").stat().st_size > 50_000


@pytest.mark.slow
def test_demo_redoes_its_own_results_but_replaces_no_file_of_the_users(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    mine = out / "enhance" / "example4d_sr.nii.gz"
    mine.parent.mkdir(parents=True)
    mine.write_text("mine")
    assert main(["demo", "--out", str(out), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] and str(mine) in err
    assert mine.read_text() == "mine"
    first = (out / "simulate" / "mni152_t1_slab_sr.json").stat().st_mtime_ns
    mine.unlink()
    # A rerun redoes its own results (no "done with another request", no --overwrite); -q prints
    # nothing but errors.
    assert main(["-q", "demo", "--out", str(out), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "error:" not in captured.err
    assert (out / "simulate" / "mni152_t1_slab_sr.json").stat().st_mtime_ns != first
    assert nib.load(str(mine)).shape == (512, 384, 24, 2)
