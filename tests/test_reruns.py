"""Reruns (issue 15): the recorded request covers what changes the outputs; --overwrite replaces the
outputs of either format so that one sidecar describes what stands; a killed --overwrite leaves the
old or the new complete result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from mrisr.checkpoint import save_checkpoint
from mrisr.cli import main
from mrisr.fsutil import TMP_MARK
from mrisr.models import SRCNN, SRCNNConfig
from mrisr.outputs import commit_journal, finish_commit


@pytest.fixture()
def net(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    cfg = SRCNNConfig(residual=True)
    model = SRCNN(cfg)
    path = tmp_path / "net.pt"
    save_checkpoint(path, model, cfg.to_dict(), {"scale": [4, 4, 1], "degradation": "bicubic"})
    return path


@pytest.fixture()
def study(tmp_path: Path) -> Path:
    data = np.random.default_rng(0).integers(100, 900, (6, 5, 3)).astype(np.int16)
    path = tmp_path / "in" / "s.nii.gz"
    path.parent.mkdir()
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0])), str(path))
    return path


def _args(study: Path, out: Path, net: Path, *extra: str) -> list[str]:
    return ["enhance", str(study), "--out", str(out), "--checkpoint", str(net), "--ensemble", "1", *extra]


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if TMP_MARK in p.name or p.name.endswith(".mrisr-commit.json"))


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--dtype", "float32"], 'dtype: null → "float32"'),
        (["--format", "dicom"], 'format: "nifti" → "dicom"'),
        (["--simulate"], "simulate: false → true"),
        (["--scale", "2"], "scale: [4,4,1] → [2,2,1]"),
        (["--ensemble", "2"], "ensemble: 1 → 2"),
        (["--no-figure"], "figure: true → false"),
        (["--degradation", "box"], 'degradation: "bicubic" → "box"'),
    ],
)
def test_rerun_with_another_request_is_refused_naming_what_differs(
    tmp_path: Path, study: Path, net: Path, capsys: pytest.CaptureFixture[str], extra: list[str], named: str
) -> None:
    out = tmp_path / "out"
    assert main(_args(study, out, net)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    args = _args(study, out, net, *extra)
    if "--ensemble" in extra:
        args.remove("1")
        args.remove("--ensemble")
    assert main(args) == 1
    err = capsys.readouterr().err
    # One error line (the per-study log line and the summary table say it again, whole).
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:") and "another request" in ln]
    assert named in line and "--overwrite" in line, line
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # nothing touched
    assert not (out / "s_sr").exists()


def _standing(out: Path) -> set[str]:
    return {p.name for p in out.iterdir() if not p.name.startswith(".")}


def test_overwrite_in_another_format_replaces_the_old_output(tmp_path: Path, study: Path, net: Path) -> None:
    out = tmp_path / "out"
    assert main(_args(study, out, net)) == 0
    assert _standing(out) == {"s_sr.nii.gz", "s_sr.json", "s_compare.png", "s_mosaic.png"}
    assert main(_args(study, out, net, "--format", "dicom", "--overwrite", "--no-figure")) == 0
    assert _standing(out) == {"s_sr", "s_sr.json"}  # the old NIfTI and figure are gone
    side = json.loads((out / "s_sr.json").read_text())
    assert side["output"]["format"] == "dicom" and side["request"]["format"] == "dicom" and side["figure"] is None
    assert main(_args(study, out, net, "--format", "dicom", "--no-figure")) == 0  # the same request: skipped
    assert json.loads((out / "s_sr.json").read_text()) == side
    assert main(_args(study, out, net, "--overwrite", "--dtype", "float32")) == 0
    assert _standing(out) == {"s_sr.nii.gz", "s_sr.json", "s_compare.png", "s_mosaic.png"}  # the DICOM folder is gone
    assert nib.load(out / "s_sr.nii.gz").get_data_dtype() == np.float32
    assert _leftovers(out) == []


def test_overwrite_of_a_bids_study_in_another_format_leaves_one_sidecar(tmp_path: Path, net: Path) -> None:
    root = tmp_path / "ds"
    anat = root / "sub-01" / "anat"
    anat.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.9.0"}')
    data = np.random.default_rng(1).integers(100, 900, (6, 5, 3)).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0])), str(anat / "sub-01_T1w.nii.gz"))
    out = tmp_path / "out"
    base = ["enhance", str(root), "--out", str(out), "--checkpoint", str(net), "--ensemble", "1", "--no-figure"]
    assert main(base) == 0
    derived = out / "sub-01" / "anat" / "sub-01_desc-sr_T1w.nii.gz"
    assert derived.exists()
    assert main([*base, "--format", "dicom"]) == 1  # refused: the BIDS sidecar names another format
    assert main([*base, "--format", "dicom", "--overwrite"]) == 0
    sidecars = [p for p in out.rglob("*.json") if p.name != "dataset_description.json"]
    assert len(sidecars) == 1 and json.loads(sidecars[0].read_text())["output"]["format"] == "dicom"
    assert not derived.exists() and not derived.with_name("sub-01_desc-sr_T1w.json").exists()


_KILL_AT = """
import os, signal, sys
import mrisr.outputs as o
kind, n = sys.argv[1], int(sys.argv[2])
count = {"move": 0, "write": 0, "remove": 0}

def hook(name, real):
    def call(*args, **kwargs):
        count[name] += 1
        if name == kind and count[name] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return call

o._move = hook("move", o._move)
o.write_json_atomic = hook("write", o.write_json_atomic)
o.remove_path = hook("remove", o.remove_path)
from mrisr.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("point", [("write", 1), ("write", 2), ("move", 1), ("remove", 1), ("remove", 2), ("move", 2)])
def test_killed_overwrite_leaves_the_old_or_the_new_complete_result(
    tmp_path: Path, study: Path, net: Path, point: tuple[str, int]
) -> None:
    """SIGKILL before writing the staged sidecar, the journal (the commit point), the new output's
    rename, the old NIfTI's and the old figure's removal, the sidecar's rename: the old result stands
    untouched, or the journal completes the new one."""
    out = tmp_path / "out"
    assert main(_args(study, out, net)) == 0
    old_side = (out / "s_sr.json").read_text()
    old_nii = (out / "s_sr.nii.gz").read_bytes()
    new = _args(study, out, net, "--format", "dicom", "--overwrite", "--no-figure")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = subprocess.run(
        [sys.executable, "-c", _KILL_AT, point[0], str(point[1]), *new], env=env, capture_output=True, timeout=300
    )
    assert run.returncode == -9, run.stderr[-2000:]
    journal = commit_journal(out, "s")
    if not journal.exists():  # killed before the commit point: the old result, complete and untouched
        assert point[0] == "write"
        assert (out / "s_sr.json").read_text() == old_side and (out / "s_sr.nii.gz").read_bytes() == old_nii
        assert _standing(out) == {"s_sr.nii.gz", "s_sr.json", "s_compare.png", "s_mosaic.png"}
        assert main(new) == 0
    else:  # committed: the next run of the study (whatever it asks) completes it first
        assert main(_args(study, out, net, "--format", "dicom", "--no-figure")) == 0  # then skips it
    side = json.loads((out / "s_sr.json").read_text())
    assert side["output"]["format"] == "dicom" and side["status"] == "done"
    assert _standing(out) == {"s_sr", "s_sr.json"}
    assert len(list((out / "s_sr").iterdir())) == 3  # one file per slice
    assert _leftovers(out) == []


def test_a_hostile_journal_touches_nothing_outside_the_output_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    journal = commit_journal(out, "s")
    journal.write_text(json.dumps({"ops": [["remove", str(victim)], ["move", str(victim), str(out / "x")], "junk"]}))
    assert finish_commit(journal, out)
    assert victim.read_text() == "keep" and not (out / "x").exists() and not journal.exists()


def test_failed_overwrite_leaves_the_old_done_result(
    tmp_path: Path, study: Path, net: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(_args(study, out, net, "--no-figure")) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    study.write_bytes(study.read_bytes()[:200])  # the input is now truncated
    capsys.readouterr()
    assert main(_args(study, out, net, "--no-figure", "--overwrite", "--dtype", "float32")) == 1
    assert "truncated" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # sidecar and output as they were
