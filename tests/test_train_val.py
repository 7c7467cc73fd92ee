"""``mrisr train --val``: named validation studies validate and never train."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from train_helpers import tiny_config, tiny_volume, write_studies

from mrisr.checkpoint import load_checkpoint
from mrisr.cli import main
from mrisr.training import TrainConfig, train


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """``corpus/{a,b}.nii.gz`` to train on and ``corpus/val/held.nii.gz`` to validate on."""
    return write_studies(tmp_path / "corpus", ("a", "b", "val/held"))


def _cfg(**kw: object) -> TrainConfig:
    return tiny_config(**kw)


def test_val_folder_inside_the_data_validates_and_never_trains(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train([corpus], out, _cfg(val_fraction=0.5), val_data=[corpus / "val"])
    split = json.loads((out / "split.json").read_text())
    assert split["train"] == ["a", "b"] and len(split["val"]) == 1 and split["validation"] == "studies"
    best = load_checkpoint(out / "best.pt")
    assert sorted(d["file"] for d in best.meta["training_data"]) == ["a.nii.gz", "b.nii.gz"]
    row = (out / "metrics.csv").read_text().splitlines()[1].split(",")
    assert row[3] and float(row[3]) > 0  # val_psnr_sr was measured (on the named study)


def test_cli_val_option_and_its_errors(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny = ["--scale", "2", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2", "--patch-size", "8",
            "--kernel-sizes", "3,1,3", "--filters", "4,4", "--device", "cpu"]  # fmt: skip
    out = tmp_path / "run"
    assert main(["train", str(corpus), "--val", str(corpus / "val" / "held.nii.gz"), "--out", str(out), *tiny]) == 0
    assert json.loads((out / "split.json").read_text())["train"] == ["a", "b"]
    # The same run resumed with other validation studies is refused, the run left as it was.
    other = tmp_path / "other"
    other.mkdir()
    nib.save(nib.Nifti1Image(tiny_volume(7), np.eye(4)), other / "held2.nii.gz")
    before = (out / "last.pt").read_bytes()
    assert main(["train", str(corpus), "--val", str(other), "--out", str(out), "--resume", *tiny]) != 0
    assert (out / "last.pt").read_bytes() == before
    # A --val folder without studies: one line naming it, and no --out left behind.
    empty = tmp_path / "empty"
    empty.mkdir()
    capsys.readouterr()
    assert main(["train", str(corpus), "--val", str(empty), "--out", str(tmp_path / "none"), *tiny]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(empty) in err[0] and "--val" in err[0]
    assert not (tmp_path / "none").exists()


def test_val_that_holds_every_study_or_shares_an_id_is_refused(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="outside --val"):
        train([corpus / "val"], tmp_path / "r1", _cfg(), val_data=[corpus / "val"])
    twin = tmp_path / "twin"
    twin.mkdir()
    nib.save(nib.Nifti1Image(tiny_volume(5), np.eye(4)), twin / "a.nii.gz")
    with pytest.raises(ValueError, match="'a'"):
        train([corpus / "a.nii.gz", corpus / "b.nii.gz"], tmp_path / "r2", _cfg(), val_data=[twin])
