"""What the CLI writes into a log file (no terminal): timestamped lines per study and per epoch, nothing
cut, --quiet/--verbose, global options after the command, error lines that name the study."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import write_dicom_slice

from mrisr.checkpoint import save_checkpoint
from mrisr.cli import hoist_global_flags, main
from mrisr.cli.console import available_cpus
from mrisr.models import SRCNN, SRCNNConfig

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
FAST = ["--device", "cpu", "--ensemble", "1", "--no-figure", "--no-adapt"]
LONG_ID = "sub-" + "verylongsubjectlabel" * 4 + "_T1w"  # 88 characters, past an 80-column cut


@pytest.fixture
def cohort(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(3)
    for name in ("a", LONG_ID):
        arr = (rng.random((8, 8, 3)) * 500).astype(np.int16)
        nib.save(nib.Nifti1Image(arr, np.diag([2.0, 2.0, 4.0, 1.0])), str(data / f"{name}.nii.gz"))
    nan = np.ones((8, 8, 3), np.float32)
    nan[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), str(data / "bad.nii.gz"))
    cfg = SRCNNConfig(kernel_sizes=(3, 1, 3), filters=(4, 4), residual=True)
    ckpt = save_checkpoint(tmp_path / "net.pt", SRCNN(cfg), cfg.to_dict(), {"scale": [4, 4, 1]})
    return data, ckpt


def test_enhance_without_a_terminal_writes_one_line_per_study_start_and_end(
    cohort: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, ckpt = cohort
    args = ["enhance", str(data), "--out", str(tmp_path / "o"), "--checkpoint", str(ckpt), *FAST, "--simulate"]
    assert main(args) == 1
    err = capsys.readouterr().err
    starts = re.findall(rf"^{STAMP} start (\S+) \(\d/3\) ", err, flags=re.M)
    assert Counter(starts) == Counter(["a", "bad", LONG_ID]), err
    done = re.findall(rf"^{STAMP} done (\S+) \d+\.\d s by network PSNR [+-]\d+\.\d\d dB over bicubic", err, flags=re.M)
    assert sorted(done) == sorted(["a", LONG_ID]), err
    assert re.search(rf"^{STAMP} failed bad \d+\.\d s: \S*bad\.nii\.gz: 1 NaN", err, flags=re.M), err
    assert re.search(r"^error: bad: \S*bad\.nii\.gz: 1 NaN", err, flags=re.M), err  # the id, then the file
    assert "…" not in err and f"│ {LONG_ID} " in err  # the summary table is not cut at 80 columns


def test_quiet_leaves_only_the_error_lines(
    cohort: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, ckpt = cohort
    args = ["enhance", str(data), "--out", str(tmp_path / "o"), "--checkpoint", str(ckpt), *FAST, "--quiet"]
    assert main(args) == 1
    out = capsys.readouterr()
    lines = out.err.splitlines()
    assert out.out == "" and len(lines) == 1 and lines[0].startswith("error: bad: "), out


def test_global_flags_after_the_command_and_h(capsys: pytest.CaptureFixture[str]) -> None:
    assert hoist_global_flags(["info", "x", "--debug", "-q", "--", "--verbose"]) == [
        "--debug", "-q", "info", "x", "--", "--verbose",
    ]  # fmt: skip
    assert main(["info", "-h"]) == 0
    assert "--exclude" in capsys.readouterr().out
    assert main(["info", "--help", "--debug"]) == 0  # --debug after the command is no usage error
    assert main(["info", "missing-folder", "--quiet", "--verbose"]) == 2


def test_help_is_not_cut_when_piped(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["enhance", "--help"]) == 0
    text = capsys.readouterr().out
    assert "…" not in text
    for option in ("--save-intermediates", "--no-save-intermediates", "--adapt-steps", "--threads", "--shard"):
        assert re.search(rf"(^|[\s,/]){option}([\s,/=]|$)", text, flags=re.M), option


def test_info_table_keeps_long_ids_and_paths_whole(
    cohort: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = cohort
    assert main(["info", str(data / f"{LONG_ID}.nii.gz")]) == 0
    text = capsys.readouterr().out
    assert LONG_ID in text and str(data / f"{LONG_ID}.nii.gz") in text and "…" not in text


def test_threads_default_to_the_slurm_allocation(
    cohort: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert available_cpus() == 1
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    import os

    assert available_cpus() == len(os.sched_getaffinity(0))
    data, ckpt = cohort
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
        main(["enhance", str(data / "a.nii.gz"), "--out", str(tmp_path / "o"), "--checkpoint", str(ckpt), *FAST])
        assert torch.get_num_threads() == 1
        main(["enhance", str(data / "a.nii.gz"), "--out", str(tmp_path / "p"), "--checkpoint", str(ckpt), *FAST,
              "--threads", "2"])  # fmt: skip
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_series_in_two_folders_is_named_by_its_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One SeriesInstanceUID in the sibling folders a/ and b/, given as ".": the error line names the
    study (not ``7_T2_axial_<hash>``) and both folders (not ``.``)."""
    top = tmp_path / "exam"
    rng = np.random.default_rng(0)
    for folder in ("a", "b"):
        for n, z in enumerate((0.0, 2.0, 4.0)):
            pixels = rng.integers(0, 100, (4, 5)).astype(np.int16)
            write_dicom_slice(top / folder / f"IM{n}.dcm", pixels, series_uid="1.2.3.9", position=(0, 0, z))
    monkeypatch.chdir(top)
    assert main(["enhance", ".", "--out", "out", *FAST, "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.match(r"error: exam_7_T2_axial_[0-9a-f]{8}: 6 files in a, b: ", err[0]), err


def test_train_writes_each_epoch_line_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        arr = (rng.random((16, 16, 8)) * 400).astype(np.int16)
        nib.save(nib.Nifti1Image(arr, np.eye(4)), str(data / f"sub{i}.nii.gz"))
    tiny = [
        "--scale", "2", "--epochs", "3", "--steps-per-epoch", "2", "--batch-size", "2", "--patch-size", "8",
        "--kernel-sizes", "3,1,3", "--filters", "4,4", "--device", "cpu", "--val-fraction", "0.34", "--threads", "1",
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "mrisr.cli", "train", str(data), "--out", str(tmp_path / "run"), *tiny],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    epochs = [line for line in done.stderr.splitlines() if " loss " in line]  # today each came twice
    assert [line.split()[2:4] for line in epochs] == [["epoch", "1.00"], ["epoch", "2.00"], ["epoch", "3.00"]], epochs
    assert all(re.match(rf"{STAMP} epoch \S+ step \d+/6 loss \S+ val PSNR", line) for line in epochs), epochs
