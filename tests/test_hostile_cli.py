"""Hostile inputs to the command line (issue 27): absurd numbers, values a sidecar should not hold,
one input named twice, control characters in names, names at the file-system limit, ``--out`` in
the input folder, and what killed or empty training runs leave behind.

Each case must end in one line naming the option or file and the reason (or be handled), never in
a traceback.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from mrisr.cli import main

AFFINE = np.diag([1.5, 1.2, 3.0, 1.0])


def _volume(path: Path, shape: tuple[int, ...] = (6, 5, 3), seed: int = 0) -> Path:
    data = (np.random.default_rng(seed).random(shape) * 800 + 100).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, AFFINE), str(path))
    return path


#: Fast enhance options for the tiny volumes (no adaptation, no figures, one view).
FAST = ["--scale", "2", "--no-adapt", "--no-figure", "--ensemble", "1", "--threads", "1"]


class _TooSlow(BaseException):
    """Raised by :func:`time_limit` (a BaseException: no ``except OSError`` or ``except Exception`` of
    the code under test takes it for one of its own errors)."""


@pytest.fixture
def time_limit() -> Iterator[None]:
    """Fail (instead of hanging) when the test body runs past 60 s."""

    def _raise(*_: Any) -> None:
        raise _TooSlow("did not finish in 60 s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


# --- absurd numbers on the command line ---------------------------------------------------------


@pytest.mark.parametrize("spacing", ["1e-310", "1,1,1e-320", "5e-324", "1e-9", "1e308", "inf", "0", "-1", "nan"])
def test_an_absurd_target_spacing_is_one_usage_line_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spacing: str
) -> None:
    src = _volume(tmp_path / "in" / "a.nii.gz")
    out = tmp_path / "out"
    code = main(["enhance", str(src), "--out", str(out), "--target-spacing", spacing])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error:") and "--target-spacing" in err[0], err
    assert not out.exists()


@pytest.mark.parametrize(
    ("option", "value"),
    [("--seed", str(2**80)), ("--seed", "-1"), ("--threads", str(10**20)), ("--threads", "100000")],
)
@pytest.mark.parametrize("command", ["enhance", "train"])
def test_out_of_range_seeds_and_threads_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, option: str, value: str
) -> None:
    src = _volume(tmp_path / "in" / "a.nii.gz")
    out = tmp_path / "out"
    code = main([command, str(src), "--out", str(out), option, value])
    err = capsys.readouterr().err
    assert code == 2, err
    assert option in err and "Traceback" not in err
    assert not out.exists()


# --- values a sidecar should not hold ------------------------------------------------------------


def _sidecar_text(folder: Path, name: str, psnr_sr: str, psnr_lr: str = "40.0") -> Path:
    """A done sidecar whose ``metrics.psnr_sr`` and ``consistency.psnr_lr`` are raw JSON texts."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}_sr.json"
    metrics = f'{{"psnr_sr": {psnr_sr}, "psnr_bicubic": 28.0, "ssim_sr": 0.9, "ssim_bicubic": 0.8}}'
    head = f'"study": "{name}", "status": "done", "error": null'
    path.write_text(f'{{{head}, "metrics": {metrics}, "consistency": {{"psnr_lr": {psnr_lr}}}}}')
    return path


@pytest.mark.parametrize(
    "value", ["1e308", "-1e308", "1e400", "-1e400", "Infinity", "NaN", '"Infinity"', '"abc"', "true", "1" + "0" * 400]
)
def test_report_shows_an_implausible_metric_as_missing_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, value: str
) -> None:
    out = tmp_path / "out"
    _sidecar_text(out, "bad", value)
    _sidecar_text(out, "ok1", "30.5")
    _sidecar_text(out, "ok2", "31.0")
    with caplog.at_level(logging.WARNING, logger="mrisr.report"):
        code = main(["report", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err
    rows = {r["study"]: r for r in json.loads((out / "report.json").read_text())["studies"]}
    assert rows["bad"]["psnr_sr"] is None and rows["bad"]["gain_db"] is None
    assert rows["bad"]["psnr_bicubic"] == 28.0  # the rest of the study is kept
    assert rows["ok2"]["gain_db"] == pytest.approx(3.0)
    summary = json.loads((out / "report.json").read_text())["summary"]
    assert summary["gain_db_mean"] == pytest.approx(2.75) and summary["with_metrics"] == 2
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("bad_sr.json" in m and "psnr_sr" in m for m in warned), warned


def test_report_of_nearly_equal_values_ends(tmp_path: Path, time_limit: None) -> None:
    """Values one float step apart once made the chart's tick loop add a step that changed nothing."""
    from mrisr.report import build_report

    out = tmp_path / "out"
    _sidecar_text(out, "a", "30.0", psnr_lr="30.0")
    _sidecar_text(out, "b", repr(math.nextafter(30.0, 99.0)), psnr_lr=repr(math.nextafter(30.0, 99.0)))
    _sidecar_text(out, "c", "1e11", psnr_lr="30.0")
    _sidecar_text(out, "d", repr(math.nextafter(1e11, 1e12)), psnr_lr="30.0")
    res = build_report(out)
    assert res.n_done == 4 and res.html.is_file()


def test_chart_ticks_of_values_a_float_step_apart(time_limit: None) -> None:
    from mrisr.report.charts import histograms, scatter

    v = math.nextafter(30.0, 99.0)
    ticks = histograms([("a", [30.0, v])], xlabel="x").xticks
    assert 2 <= len(ticks) <= 12 and len({t.label for t in ticks}) == len(ticks)
    chart = scatter([1e17, 1e17], [1e17, 1e17], ["a", "b"], ["", ""], ["", ""], xlabel="x", ylabel="y")
    assert 2 <= len(chart.xticks) <= 12 and all(math.isfinite(p.x) for p in chart.points)
    # control: an ordinary axis keeps its round ticks
    labels = [t.label for t in histograms([("a", [0.0, 0.5, 1.0])], xlabel="x").xticks]
    assert labels == ["0.00", "0.20", "0.40", "0.60", "0.80", "1.00"]


# --- one input named twice -----------------------------------------------------------------------


def _series(folder: Path, n: int = 4, *, uid: str = "1.2.826.0.1.3680043.8.498.1") -> list[Path]:
    from conftest import write_dicom_slice

    rng = np.random.default_rng(3)
    return [
        write_dicom_slice(
            folder / f"IM{k:03d}.dcm",
            rng.integers(0, 900, (4, 5)).astype(np.int16),
            series_uid=uid,
            position=(-10.0, 20.0, 2.0 * k),
            instance=k + 1,
        )
        for k in range(n)
    ]


def test_a_nifti_named_relative_and_absolute_is_one_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mrisr.discovery import find_studies

    _volume(tmp_path / "in" / "a.nii.gz")
    monkeypatch.chdir(tmp_path)
    spellings = ["in/a.nii.gz", str(tmp_path / "in" / "a.nii.gz"), "in/../in/a.nii.gz", "in"]
    studies = find_studies(spellings)
    assert [(s.id, str(s.path)) for s in studies] == [("a", "in/a.nii.gz")]
    assert main(["enhance", *spellings, "--out", "out", *FAST]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in Path("out").iterdir()) == ["a_sr.json", "a_sr.nii.gz"]


def test_a_dicom_series_named_relative_and_absolute_is_one_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mrisr.discovery import find_studies

    _series(tmp_path / "dcm" / "ser")
    monkeypatch.chdir(tmp_path)
    studies = find_studies(["dcm/ser", str(tmp_path / "dcm" / "ser")])
    assert len(studies) == 1 and len(studies[0].files) == 4 and studies[0].problem is None
    code = main(["enhance", "dcm/ser", str(tmp_path / "dcm" / "ser"), "--out", "out", *FAST])
    err = capsys.readouterr().err
    assert code == 0, err
    assert len(list(Path("out").glob("*_sr.json"))) == 1


def test_a_series_in_two_folders_one_named_relative_one_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mrisr.discovery import find_studies

    files = _series(tmp_path / "dcm" / "all")
    for f in files[:2]:
        (tmp_path / "dcm" / "a").mkdir(exist_ok=True)
        f.rename(tmp_path / "dcm" / "a" / f.name)
    for f in files[2:]:
        (tmp_path / "dcm" / "b").mkdir(exist_ok=True)
        f.rename(tmp_path / "dcm" / "b" / f.name)
    monkeypatch.chdir(tmp_path)
    studies = find_studies(["dcm/a", str(tmp_path / "dcm" / "b")])
    assert len(studies) == 1 and len(studies[0].files) == 4 and studies[0].problem is None
    assert studies[0].load().shape3[2] == 4


# --- control characters in names -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["bad\nname.nii.gz", "bad\rname.nii.gz", "esc\x1b[31mred.nii.gz", "sep\u2028x.nii.gz"])
@pytest.mark.parametrize("command", ["enhance", "info"])
def test_a_bad_file_with_a_control_character_in_its_name_is_one_error_line_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, command: str
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / name).write_bytes(b"garbage")
    _volume(src / "good.nii.gz")
    args = [command, str(src)] + (["--out", str(tmp_path / "out"), *FAST] if command == "enhance" else [])
    code = main(args)
    err = capsys.readouterr().err
    assert code == 1, err
    lines = err.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, lines
    assert "not a gzip file" in errors[0], errors  # the reason, after the name
    assert repr(name)[1:-1] in errors[0], errors  # the name, its control character escaped
    assert all(c == "\t" or c.isprintable() for line in lines for c in line), lines  # nothing raw anywhere
    if command == "enhance":
        (sidecar,) = [p for p in (tmp_path / "out").glob("*_sr.json") if p.name != "good_sr.json"]
        assert json.loads(sidecar.read_text())["error"] == errors[0].split(": ", 2)[2]


def test_printable_escapes_only_what_breaks_a_line() -> None:
    from mrisr.errors import printable

    assert printable("a\nb\tc\x1bd\u2028e\udcff") == "a\\nb\\tc\\x1bd\\u2028e\\udcff"
    assert printable("sub-01/ünï 中 [x]\\n.nii.gz") == "sub-01/ünï 中 [x]\\n.nii.gz"  # control: unchanged


def test_log_records_are_one_line_each() -> None:
    from mrisr.cli.console import OneLineFormatter

    fmt = OneLineFormatter("%(levelname)s %(name)s: %(message)s")
    record = logging.LogRecord("mrisr.x", logging.WARNING, __file__, 1, "%s: odd", ("in/a\nb.nii",), None)
    assert fmt.format(record) == "WARNING mrisr.x: in/a\\nb.nii: odd"


# --- names at the file-system limit -------------------------------------------------------------


def _dead_pid() -> int:
    import subprocess
    import sys

    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)


def _name_of_bytes(unit: str, n: int, ext: str) -> str:
    """A name of exactly ``n`` bytes in UTF-8: ``unit`` repeated, ASCII padding, then ``ext``."""
    room = n - len(ext.encode())
    body = unit * (room // len(unit.encode()))
    body += "p" * (room - len(body.encode()))
    name = body + ext
    assert len(name.encode()) == n
    return name


LONG_UNITS = ["x", "é", "中", "🧠", "aé中🧠"]


@pytest.mark.parametrize("unit", LONG_UNITS)
@pytest.mark.parametrize("ext", [".nii.gz", ".json", ""])
def test_temporaries_of_a_255_byte_name_fit_and_are_found(tmp_path: Path, unit: str, ext: str) -> None:
    from mrisr.fsutil import remove_temporaries, temp_sibling, write_json_atomic, write_text_atomic

    NAME_MAX = 255  # ext4, XFS, Btrfs, NFS

    final = tmp_path / _name_of_bytes(unit, NAME_MAX, ext)
    tmp = temp_sibling(final)
    nested = temp_sibling(tmp)  # the atomic write of a staged file
    assert len(tmp.name.encode()) <= NAME_MAX and len(nested.name.encode()) <= NAME_MAX
    assert tmp.name.startswith(".") and nested.name.startswith("..")
    if ext:
        assert tmp.name.endswith(ext) and nested.name.endswith(ext)  # writers choose the format by it
    write_text_atomic(final, "whole")  # would fail with ENAMETOOLONG on the temporary name
    write_json_atomic(tmp, {"staged": 1})  # the temporary of a temporary
    assert final.read_text() == "whole" and json.loads(tmp.read_text()) == {"staged": 1}
    # what a killed writer leaves: both levels, by a dead process of this host
    dead = _dead_pid()
    left = [Path(str(p).replace(f"-{os.getpid()}-", f"-{dead}-")) for p in (temp_sibling(final), nested)]
    other = tmp_path / (final.name[:-10] + "0123456789")  # another long name with the same start
    assert other.name != final.name
    theirs = temp_sibling(other)
    for p in [*left, theirs]:
        p.write_text("partial")
    tmp.unlink()
    live = temp_sibling(final)
    live.write_text("a writer at work")
    removed = remove_temporaries(final, all_of_them=False)
    assert sorted(removed) == sorted(left)
    assert live.exists() and theirs.exists() and final.exists()
    assert sorted(remove_temporaries(final)) == [live]  # under the lock: every temporary of final
    assert theirs.exists()


def test_a_long_name_temporary_of_the_full_form_is_still_removed(tmp_path: Path) -> None:
    """Earlier versions wrote ``.<name>.mrisr-tmp-...`` whenever it fit (up to 255 bytes)."""
    import hashlib
    import socket

    from mrisr.fsutil import TMP_MARK, remove_temporaries

    final = tmp_path / _name_of_bytes("y", 200, ".json")
    tag = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
    old = tmp_path / f".{final.name}{TMP_MARK}{_dead_pid()}-{tag}-0badc0de.json"
    assert len(old.name.encode()) <= 255
    old.write_text("partial")
    assert remove_temporaries(final, all_of_them=False) == [old]


@pytest.mark.parametrize("unit", ["x", "é中🧠"])
def test_a_bids_input_whose_derivative_name_is_255_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], unit: str
) -> None:
    data = tmp_path / "bids"
    data.mkdir()
    (data / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.9.0"}')
    # the derivative adds "_desc-sr" (8 bytes) before the suffix
    acq = _name_of_bytes(unit, 255 - len("sub-01_acq-_desc-sr_T1w.nii.gz"), "")
    src = _volume(data / "sub-01" / "anat" / f"sub-01_acq-{acq}_T1w.nii.gz")
    out = tmp_path / "out"
    code = main(["enhance", str(data), "--out", str(out), *FAST])
    assert code == 0, capsys.readouterr().err
    made = out / "sub-01" / "anat" / src.name.replace("_T1w", "_desc-sr_T1w")
    assert len(made.name.encode()) == 255 and made.is_file()
    assert not [p.name for p in made.parent.iterdir() if ".mrisr-tmp-" in p.name]
    assert main(["enhance", str(data), "--out", str(out), *FAST]) == 0  # a rerun finds the sidecar
    assert "skipped" in capsys.readouterr().err


# --- --out in the input folder ------------------------------------------------------------------


def _images(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.nii.gz"))


def test_out_equal_to_the_input_folder_works_and_a_rerun_skips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    _volume(data / "a.nii.gz")
    args = ["enhance", str(data), "--out", str(data), *FAST, "--ensemble", "2", "--save-uncertainty"]
    assert main(args) == 0, capsys.readouterr().err
    made = ["a.nii.gz", "a_sr.nii.gz", "a_uncertainty.nii.gz"]
    assert _images(data) == made
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "skipped a " in err and "a_sr" not in err.replace("a_sr.nii.gz", ""), err  # no study a_sr
    assert main([*args, "--overwrite"]) == 0  # redone: still only the input is a study
    assert _images(data) == made


def test_out_inside_the_input_folder_holding_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An --out inside an input was skipped whole: the studies in it were silently left out."""
    data = tmp_path / "data"
    _volume(data / "a.nii.gz")
    _volume(data / "sub" / "b.nii.gz", seed=1)
    args = ["enhance", str(data), "--out", str(data / "sub"), *FAST]
    assert main(args) == 0, capsys.readouterr().err
    assert _images(data) == ["a.nii.gz", "sub/a_sr.nii.gz", "sub/b.nii.gz", "sub/b_sr.nii.gz"]
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "skipped a " in err and "skipped b " in err and "_sr_sr" not in err, err
    assert _images(data) == ["a.nii.gz", "sub/a_sr.nii.gz", "sub/b.nii.gz", "sub/b_sr.nii.gz"]


def test_out_equal_to_a_dicom_series_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "ser"
    _series(data)
    args = ["enhance", str(data), "--out", str(data), *FAST]
    assert main(args) == 0, capsys.readouterr().err
    (series,) = [p for p in data.iterdir() if p.is_dir()]
    assert series.name.endswith("_sr") and len(list(series.iterdir())) == 4  # in-plane x2: 4 slices
    capsys.readouterr()
    assert main(args) == 0
    assert "skipped" in capsys.readouterr().err
    assert [p.name for p in data.iterdir() if p.is_dir()] == [series.name]  # no series of the series


@pytest.mark.parametrize("where", ["", "sub-01", "sub-01/anat"])
def test_out_among_a_bids_datasets_raw_data_is_refused_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    data = tmp_path / "bids"
    data.mkdir()
    description = '{"Name": "raw", "BIDSVersion": "1.9.0"}'
    (data / "dataset_description.json").write_text(description)
    _volume(data / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    code = main(["enhance", str(data), "--out", str(data / where), *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and "BIDS dataset" in err[0] and "derivatives" in err[0], err
    assert (data / "dataset_description.json").read_text() == description  # not made a derivative's
    assert _images(data) == ["sub-01/anat/sub-01_T1w.nii.gz"]
    # control: the derivatives folder inside the dataset is fine
    assert main(["enhance", str(data), "--out", str(data / "derivatives" / "mrisr"), *FAST]) == 0


def test_outputs_named_by_a_killed_runs_commit_journal_are_not_studies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed between moving an output in and its sidecar: the journal names the output."""
    from mrisr.discovery import find_studies

    data = tmp_path / "data"
    _volume(data / "a.nii.gz")
    _volume(data / "a_sr.nii.gz", seed=2)
    assert [s.id for s in find_studies([data], outputs=[data])] == ["a", "a_sr"]  # control: no record
    monkeypatch.chdir(tmp_path)  # the writer ran elsewhere: its paths are relative to its own folder
    ops = [["move", "elsewhere/data/.a_sr.nii.gz.mrisr-tmp-1-x-y.nii.gz", "elsewhere/data/a_sr.nii.gz"]]
    (data / ".a.mrisr-commit.json").write_text(json.dumps({"ops": ops}))
    assert [s.id for s in find_studies(["data"], outputs=["data"])] == ["a"]


# --- what training leaves behind ------------------------------------------------------------------

TINY_RUN = [
    "--scale", "2", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2", "--patch-size", "8",
    "--kernel-sizes", "3,1,3", "--filters", "4,4", "--device", "cpu", "--threads", "1",
]  # fmt: skip


@pytest.fixture
def train_data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for i in range(3):
        _volume(root / f"sub{i}.nii.gz", shape=(16, 16, 8), seed=i)
    return root


def test_resume_removes_the_checkpoint_temporaries_of_a_killed_run(
    train_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mrisr.fsutil import temp_sibling

    out = tmp_path / "run"
    assert main(["train", str(train_data), "--out", str(out), *TINY_RUN, "--max-steps", "1"]) == 0, (
        capsys.readouterr().err
    )
    dead = _dead_pid()
    # what SIGKILL during torch.save leaves: a full temporary checkpoint beside last.pt (and best.pt)
    left = [Path(str(temp_sibling(out / n)).replace(f"-{os.getpid()}-", f"-{dead}-")) for n in ("last.pt", "best.pt")]
    for p in left:
        p.write_bytes((out / "last.pt").read_bytes())
    live = temp_sibling(out / "metrics.csv")  # a live writer's (this process): left alone
    live.write_text("step\n")
    assert main(["train", str(train_data), "--out", str(out), *TINY_RUN, "--resume"]) == 0, capsys.readouterr().err
    assert [p.name for p in left if p.exists()] == []
    assert live.exists()
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "best.pt",
        "curves.png",
        "last.pt",
        "metrics.csv",
        "split.json",
    ]


@pytest.mark.parametrize("depth", [1, 3])
def test_train_on_an_empty_folder_leaves_no_out_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], depth: int
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path.joinpath(*[f"o{k}" for k in range(depth)])
    code = main(["train", str(empty), "--out", str(out), *TINY_RUN])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no NIfTI or DICOM study" in err[0], err
    assert not (tmp_path / "o0").exists()
    # an --out that existed stays, as it was
    (tmp_path / "mine").mkdir()
    assert main(["train", str(empty), "--out", str(tmp_path / "mine"), *TINY_RUN]) == 2
    assert (tmp_path / "mine").is_dir()


def test_the_library_train_on_an_empty_folder_creates_no_out_folder(tmp_path: Path) -> None:
    from mrisr.models import SRCNNConfig
    from mrisr.training import TrainConfig, train

    (tmp_path / "empty").mkdir()
    cfg = TrainConfig(scale=2, epochs=1, steps_per_epoch=1, batch_size=2, patch_size=8, device="cpu",
                      model=SRCNNConfig(kernel_sizes=(3, 1, 3), filters=(4, 4)))  # fmt: skip
    with pytest.raises(FileNotFoundError):
        train([tmp_path / "empty"], tmp_path / "out", cfg)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("option", "value"), [("--lr", "inf"), ("--lr", "1e400"), ("--noise-std", "inf")])
def test_train_refuses_an_infinite_rate_or_noise(
    train_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    """An infinite learning rate trained NaN weights into a "best" checkpoint (exit 0)."""
    out = tmp_path / "run"
    code = main(["train", str(train_data), "--out", str(out), *TINY_RUN, option, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and option.lstrip("-").replace("-", "_") in err[0], err
    assert not out.exists()


def test_records_in_a_hostile_output_folder_neither_block_nor_loop(tmp_path: Path, time_limit: None) -> None:
    """The records are read from a folder that is also an input: a FIFO named like a sidecar, a
    folder link loop and a journal naming a path with a NUL byte are passed over."""
    from mrisr.discovery import find_studies

    data = tmp_path / "data"
    _volume(data / "a.nii.gz")
    os.mkfifo(data / "x_sr.json")
    (data / "loop").symlink_to(data, target_is_directory=True)
    (data / ".a.mrisr-commit.json").write_text(json.dumps({"ops": [["move", "t", "a\u0000_sr.nii.gz"]]}))
    studies = find_studies([data], outputs=[data])
    assert [s.id for s in studies if s.problem is None] == ["a"]
