"""``mrisr info``: JSON and table output, failed studies, exit codes, a light import."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrisr.cli import main

GridMaker = Callable[[str], tuple[np.ndarray, np.ndarray]]


def test_json_lists_every_study_with_its_grid(
    grid_volume: GridMaker,
    write_nifti_file: Callable[..., Path],
    axial_series: Callable[..., list[Path]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, affine = grid_volume("four_d")
    write_nifti_file("data/fmri.nii.gz", data, affine, time_step=2.0)
    axial_series("data/dicom/ax", [0.0, 3.0, 6.0])
    assert main(["info", "--json", str(tmp_path / "data")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [s["format"] for s in out] == ["dicom", "nifti"]  # sorted by id: "ax_7_..." < "fmri"
    dcm, nii = out
    assert nii["id"] == "fmri"
    assert nii["path"] == str(tmp_path / "data" / "fmri.nii.gz")
    assert nii["shape"] == [6, 5, 4, 3]
    assert nii["frames"] == 3
    assert nii["dtype"] == "int16"
    np.testing.assert_allclose(nii["affine"], affine, atol=1e-5)
    np.testing.assert_allclose(nii["spacing"], [1.0, 1.0, 2.0], atol=1e-6)
    assert dcm["id"].startswith("ax_7_T2_axial_")
    assert dcm["shape"] == [5, 4, 3] and dcm["frames"] == 1
    np.testing.assert_allclose(dcm["spacing"], [0.8, 0.5, 3.0])
    np.testing.assert_allclose(dcm["affine"][0], [-0.8, 0, 0, 10.0])  # LPS x=-10 is RAS x=+10


def test_failed_study_is_an_error_line_and_exit_1(
    grid_volume: GridMaker,
    write_nifti_file: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, affine = grid_volume("oblique")
    good = write_nifti_file("batch/good.nii.gz", data, affine)
    bad = tmp_path / "batch" / "bad.nii.gz"
    bad.write_bytes(good.read_bytes()[:100])
    assert main(["info", "--json", str(tmp_path / "batch")]) == 1
    captured = capsys.readouterr()
    assert [(s["id"], "error" in s) for s in json.loads(captured.out)] == [("bad", True), ("good", False)]
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: bad: {bad}: ")  # the study id, then the file


def test_table_shows_id_shape_and_spacing(
    grid_volume: GridMaker,
    write_nifti_file: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, affine = grid_volume("lps")
    path = write_nifti_file("t1.nii.gz", data, affine)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "t1" in out
    assert "6 × 5 × 4" in out
    assert "0.8 × 0.7 × 3" in out
    assert "1 study" in out


def test_missing_input_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(tmp_path / "nope")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_folder_without_studies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "readme.txt").write_text("nothing here\n")
    assert main(["info", str(tmp_path)]) == 2
    assert "no NIfTI or DICOM studies" in capsys.readouterr().err


def test_help_does_not_import_heavy_packages() -> None:
    code = (
        "import sys; from mrisr.cli import main; main(['info', '--help']); "
        "print(sorted(m for m in ('torch', 'monai', 'SimpleITK') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "--json" in result.stdout
    assert result.stdout.strip().endswith("[]")


def test_info_json_lists_unreadable_studies_and_excludes_folders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    (data / "out").mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.ones((4, 4, 2), np.int16), np.eye(4)), str(data / "good.nii.gz"))
    nib.save(nib.Nifti1Image(np.ones((4, 4, 2), np.int16), np.eye(4)), str(data / "out" / "good_sr.nii.gz"))
    (data / "bad.nii.gz").write_bytes(b"not gzip")
    assert main(["info", str(data), "--json", "--exclude", str(data / "out")]) == 1
    captured = capsys.readouterr()
    rows = {r["id"]: r for r in json.loads(captured.out)}
    assert sorted(rows) == ["bad", "good"]
    assert "gzip" in rows["bad"]["error"] and "shape" not in rows["bad"]
    assert rows["good"]["shape"] == [4, 4, 2] and "error" not in rows["good"]
    assert captured.err.startswith("error:") and "bad.nii.gz" in captured.err
