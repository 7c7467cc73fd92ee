"""A user's own files are sacred (issue 27, item 1): ``mrisr enhance`` replaces or removes only what
its own sidecars say it wrote; anything else at a target path is a one-line refusal for that study
(a file may be replaced with ``--overwrite``; a folder it did not write never is)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from mrisr.checkpoint import save_checkpoint
from mrisr.cli import main
from mrisr.models import SRCNN, SRCNNConfig


@pytest.fixture()
def net(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    cfg = SRCNNConfig(residual=True)
    path = tmp_path / "net.pt"
    save_checkpoint(path, SRCNN(cfg), cfg.to_dict(), {"scale": [2, 2, 1], "degradation": "bicubic"})
    return path


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        data = rng.integers(100, 900, (6, 5, 2)).astype(np.int16)
        nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0])), str(folder / f"{name}.nii.gz"))
    return folder


def _run(inputs: Path, out: Path, net: Path, *extra: str) -> int:
    args = ["enhance", str(inputs), "--out", str(out), "--checkpoint", str(net), "--ensemble", "1", *extra]
    return main(["-q", *args])


def _user_file(path: Path, text: str = "mine") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_user_file_at_the_output_path_is_refused_and_kept(
    tmp_path: Path, inputs: Path, net: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    mine = _user_file(out / "a_sr.nii.gz")
    assert _run(inputs, out, net) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "a_sr.nii.gz" in lines[0] and "--overwrite" in lines[0], err
    assert mine.read_text() == "mine"  # untouched
    assert (out / "b_sr.nii.gz").is_file()  # the rest of the batch went on
    record = json.loads((out / "a_sr.json").read_text())
    assert record["status"] == "failed"
    # --overwrite replaces a file (documented), and the study is done.
    assert _run(inputs, out, net, "--overwrite") == 0
    assert nib.load(str(out / "a_sr.nii.gz")).shape == (12, 10, 2)


def test_user_json_at_the_sidecar_path_is_never_replaced_by_a_failure_record(
    tmp_path: Path, inputs: Path, net: Path
) -> None:
    out = tmp_path / "out"
    mine = _user_file(out / "a_sr.json", '{"note": "my own"}')
    assert _run(inputs, out, net) == 1
    assert mine.read_text() == '{"note": "my own"}'
    assert not (out / "a_sr.nii.gz").exists()


def test_files_beside_the_outputs_that_no_sidecar_names_are_not_removed(
    tmp_path: Path, inputs: Path, net: Path
) -> None:
    out = tmp_path / "out"
    # Names of outputs this run does not write (no --save-residual, NIfTI not DICOM).
    keep = [
        _user_file(out / "a_sr" / "notes.txt"),
        _user_file(out / "a_residual.nii.gz"),
        _user_file(out / "a_lr.nii.gz"),
    ]
    assert _run(inputs, out, net, "--no-figure") == 0
    for path in keep:
        assert path.read_text() == "mine", path
    assert (out / "a_sr.nii.gz").is_file()
    # A rerun in another format with --overwrite still removes only the files its record names.
    figure = _user_file(out / "a_compare.png")
    assert _run(inputs, out, net, "--no-figure", "--format", "dicom", "--overwrite") == 1  # a_sr/ is the user's
    assert (out / "a_sr" / "notes.txt").read_text() == "mine"
    assert figure.read_text() == "mine"
    assert (out / "a_sr.nii.gz").is_file()  # the failed overwrite leaves the done result


def test_own_outputs_of_another_format_are_replaced_on_overwrite(tmp_path: Path, inputs: Path, net: Path) -> None:
    out = tmp_path / "out"
    assert _run(inputs, out, net) == 0
    assert (out / "a_compare.png").is_file()
    mine = _user_file(out / "a_residual.nii.gz")
    assert _run(inputs, out, net, "--format", "dicom", "--no-figure", "--overwrite") == 0
    assert not (out / "a_sr.nii.gz").exists()  # its own NIfTI output, named by its sidecar: replaced
    assert not (out / "a_compare.png").exists()  # its own figure, no longer asked for
    assert (out / "a_sr").is_dir()
    assert mine.read_text() == "mine"
    record = json.loads((out / "a_sr.json").read_text())
    assert record["output"]["format"] == "dicom" and record["figure"] is None


def test_a_sidecar_of_another_study_or_a_foreign_json_owns_nothing(tmp_path: Path, inputs: Path, net: Path) -> None:
    out = tmp_path / "out"
    forged = {"study": "other", "status": "done", "mrisr_version": "0.1", "output": {"path": "a_sr.nii.gz"}}
    _user_file(out / "a_sr.json", json.dumps(forged))
    mine = _user_file(out / "a_sr.nii.gz")
    assert _run(inputs, out, net) == 1  # a record of another study does not make a_sr.nii.gz mrisr's
    assert mine.read_text() == "mine"
    assert json.loads((out / "a_sr.json").read_text()) == forged


def test_a_rerun_of_a_done_study_still_skips(tmp_path: Path, inputs: Path, net: Path) -> None:
    out = tmp_path / "out"
    assert _run(inputs, out, net) == 0
    before = (out / "a_sr.nii.gz").stat().st_mtime_ns
    assert _run(inputs, out, net) == 0
    assert (out / "a_sr.nii.gz").stat().st_mtime_ns == before
    # Its own output deleted by the user: simply made again (the record names it).
    (out / "a_sr.nii.gz").unlink()
    assert _run(inputs, out, net) == 0
    assert (out / "a_sr.nii.gz").is_file()


def test_report_replaces_only_its_own_files(
    tmp_path: Path, inputs: Path, net: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert _run(inputs, out, net, "--no-figure") == 0
    mine = _user_file(out / "report_studies" / "my_notes.txt")
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "report_studies" in err
    assert mine.read_text() == "mine" and not (out / "report.html").exists()
    mine.unlink()
    (out / "report_studies").rmdir()
    assert main(["report", str(out)]) == 0
    assert json.loads((out / "report.json").read_text())["files"]
    assert main(["report", str(out)]) == 0  # its own report is replaced
    (out / "report.json").write_text('{"mine": 1}')  # a JSON of the user's now owns nothing
    assert main(["report", str(out)]) == 2
    assert (out / "report.json").read_text() == '{"mine": 1}'


def test_a_full_disk_names_the_output_not_the_input(
    tmp_path: Path, inputs: Path, net: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import mrisr.enhance.studies as studies

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")  # as gzip's write raises it: no file name

    monkeypatch.setattr(studies, "write_volume", full)
    out = tmp_path / "out"
    assert _run(inputs, out, net, "--no-figure") == 1
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 2
    for name, line in zip(("a", "b"), lines, strict=True):
        assert str(out / f"{name}_sr.nii.gz") in line and "No space left on device" in line, line
        assert str(inputs / f"{name}.nii.gz") not in line
    assert not [p for p in out.iterdir() if p.name.endswith(".nii.gz") or ".mrisr-tmp-" in p.name]


def test_a_new_training_run_replaces_no_file_of_the_users(
    tmp_path: Path, inputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = ["--scale", "2", "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2", "--patch-size", "4"]
    tiny += ["--kernel-sizes", "3,1,3", "--filters", "2,2", "--device", "cpu", "--val-fraction", "0"]
    out = tmp_path / "run"
    mine = _user_file(out / "best.pt", "my weights")
    assert main(["train", str(inputs), "--out", str(out), *tiny]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "best.pt" in err
    assert mine.read_text() == "my weights" and not (out / "metrics.csv").exists()
    mine.unlink()
    # A split.json of mrisr's own (a run killed before its first checkpoint) does not block a new run.
    (out / "split.json").write_text(json.dumps({"seed": 0, "train": ["a"], "val": [], "validation": "none"}))
    assert main(["train", str(inputs), "--out", str(out), *tiny]) == 0
    assert (out / "best.pt").is_file() and json.loads((out / "split.json").read_text())["train"] == ["a", "b"]
