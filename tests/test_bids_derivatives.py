"""BIDS derivatives (issue 15): inherited metadata, fixed fields, figures, dataset_description, and
the BIDS validator on a derivative."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from mrisr import __version__
from mrisr.bids import adjust_metadata, inherited_metadata
from mrisr.checkpoint import save_checkpoint
from mrisr.cli import main
from mrisr.models import SRCNN, SRCNNConfig


def _write(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    """sub-01 with a T1w and a 4D bold whose metadata sit at the dataset, subject and file levels."""
    root = tmp_path / "ds"
    _write(root / "dataset_description.json", {"Name": "t", "BIDSVersion": "1.9.0", "Authors": ["A", "B"]})
    (root / "README").write_text("A test dataset.\n")
    (root / "participants.tsv").write_text("participant_id\nsub-01\n")
    _write(
        root / "task-rest_bold.json",
        {"RepetitionTime": 2.0, "TaskName": "rest", "EchoTime": 0.03, "SliceTiming": [0.0, 1.0, 0.5, 1.5]},
    )
    _write(root / "task-other_bold.json", {"RepetitionTime": 9.0, "TaskName": "other"})  # another task
    _write(root / "sub-01" / "sub-01_task-rest_bold.json", {"EchoTime": 0.035})  # nearer: wins
    _write(root / "sub-01" / "sub-01_acq-x_task-rest_bold.json", {"EchoTime": 0.5})  # acq-x: not ours
    _write(
        root / "sub-01" / "func" / "sub-01_task-rest_bold.json",
        {"PhaseEncodingDirection": "j-", "EffectiveEchoSpacing": 0.0005, "ReconMatrixPE": 16},
    )
    _write(root / "T1w.json", {"MagneticFieldStrength": 3, "EchoTime": 0.0025})
    rng = np.random.default_rng(0)
    aff = np.diag([2.0, 2.0, 3.0, 1.0])
    t1 = nib.Nifti1Image((rng.random((16, 16, 4)) * 800 + 50).astype(np.int16), aff)
    (root / "sub-01" / "anat").mkdir(parents=True)
    nib.save(t1, str(root / "sub-01" / "anat" / "sub-01_T1w.nii.gz"))
    bold = nib.Nifti1Image((rng.random((16, 16, 4, 3)) * 800 + 50).astype(np.int16), aff)
    bold.header.set_xyzt_units("mm", "sec")
    bold.header.set_zooms((2.0, 2.0, 3.0, 2.0))
    nib.save(bold, str(root / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz"))
    return root


@pytest.fixture()
def net(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    cfg = SRCNNConfig(residual=True)
    return save_checkpoint(tmp_path / "n.pt", SRCNN(cfg), cfg.to_dict(), {"scale": [4, 4, 1]})


def test_inheritance_merges_levels_nearest_wins(dataset: Path) -> None:
    meta = inherited_metadata(dataset / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz", dataset)
    assert meta == {
        "RepetitionTime": 2.0,
        "TaskName": "rest",
        "EchoTime": 0.035,
        "SliceTiming": [0.0, 1.0, 0.5, 1.5],
        "PhaseEncodingDirection": "j-",
        "EffectiveEchoSpacing": 0.0005,
        "ReconMatrixPE": 16,
    }
    t1 = inherited_metadata(dataset / "sub-01" / "anat" / "sub-01_T1w.nii.gz", dataset)
    assert t1 == {"MagneticFieldStrength": 3, "EchoTime": 0.0025}


def test_grid_change_fixes_slice_timing_and_phase_encoding_fields() -> None:
    meta = {"SliceTiming": [0, 1, 0.5, 1.5], "PhaseEncodingDirection": "j-", "ReconMatrixPE": 16}
    meta["EffectiveEchoSpacing"] = 0.0005
    in_plane = adjust_metadata(meta, (16, 16, 4), (64, 64, 4), (False, False, True))
    assert in_plane["SliceTiming"] == [0, 1, 0.5, 1.5]  # the same slices
    assert in_plane["ReconMatrixPE"] == 64
    # The total readout time EES * (N - 1) is kept.
    assert in_plane["EffectiveEchoSpacing"] * 63 == pytest.approx(0.0005 * 15)
    through = adjust_metadata(meta, (16, 16, 4), (16, 16, 8), (True, True, False))
    assert "SliceTiming" not in through and through["ReconMatrixPE"] == 16
    sagittal = {"SliceTiming": [0, 1], "SliceEncodingDirection": "i"}
    assert "SliceTiming" in adjust_metadata(sagittal, (2, 8, 8), (2, 32, 32), (True, False, False))
    assert "SliceTiming" not in adjust_metadata(sagittal, (2, 8, 8), (8, 8, 8), (False, True, True))


def test_derivative_sidecars_hold_the_inherited_metadata_and_figures_sit_in_figures(
    tmp_path: Path, dataset: Path, net: Path
) -> None:
    out = tmp_path / "deriv"
    assert main(["enhance", str(dataset), "--out", str(out), "--checkpoint", str(net), "--ensemble", "1"]) == 0
    bold = json.loads((out / "sub-01" / "func" / "sub-01_task-rest_desc-sr_bold.json").read_text())
    assert bold["RepetitionTime"] == 2.0 and bold["EchoTime"] == 0.035 and bold["TaskName"] == "rest"
    assert bold["SliceTiming"] == [0.0, 1.0, 0.5, 1.5]  # in-plane: the slices are the acquired ones
    assert bold["ReconMatrixPE"] == 64
    assert bold["Sources"] == ["bids:raw:sub-01/func/sub-01_task-rest_bold.nii.gz"]
    assert bold["status"] == "done" and bold["request"]["format"] == "nifti"  # mrisr's own fields
    assert bold["figure"] == "../figures/sub-01_task-rest_desc-srcompare_bold.png"
    assert (out / "sub-01" / "figures" / "sub-01_task-rest_desc-srcompare_bold.png").is_file()
    assert (out / "sub-01" / "figures" / "sub-01_desc-srcompare_T1w.png").is_file()
    assert not list((out / "sub-01" / "func").glob("*.png"))
    t1 = json.loads((out / "sub-01" / "anat" / "sub-01_desc-sr_T1w.json").read_text())
    assert t1["MagneticFieldStrength"] == 3 and "SliceTiming" not in t1
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"
    assert desc["GeneratedBy"][0] == {"Name": "mrisr", "Version": __version__, "Description": "SRCNN super-resolution"}
    assert desc["SourceDatasets"] == [{"URL": dataset.resolve().as_uri()}]
    assert desc["DatasetLinks"] == {"raw": dataset.resolve().as_uri()}
    # The dataset's own README and participants.tsv are not studies.
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["dataset_description.json", "sub-01"]
    assert main(["report", str(out)]) == 0
    assert "srcompare" in (out / "report.html").read_text()  # the report finds the moved figures


def _validator() -> list[str] | None:
    """The BIDS validator (the schema-based one, from PyPI's bids-validator-deno), or None."""
    exe = shutil.which("bids-validator-deno") or str(Path(sys.executable).with_name("bids-validator-deno"))
    return [exe] if Path(exe).exists() else None


@pytest.mark.slow
def test_bids_validator_finds_no_error_in_a_derivative(tmp_path: Path, dataset: Path, net: Path) -> None:
    cmd = _validator()
    if cmd is None:
        pytest.skip("bids-validator-deno is not installed (pip install bids-validator-deno)")
    out = tmp_path / "deriv"
    assert main(["enhance", str(dataset), "--out", str(out), "--checkpoint", str(net), "--ensemble", "1"]) == 0
    assert main(["report", str(out)]) == 0
    run = subprocess.run([*cmd, "--json", str(out)], capture_output=True, text=True, timeout=300)
    issues = json.loads(run.stdout)["issues"]["issues"]
    errors = [(i["code"], i.get("location"), i.get("subCode")) for i in issues if i.get("severity") == "error"]
    assert errors == [], errors
    assert run.returncode == 0
    # Control: the validator does see a broken derivative.
    (out / "sub-01" / "anat" / "sub-01_desc-sr_T1w.json").unlink()
    (out / "sub-01" / "anat" / "notbids.txt").write_text("x")
    bad = subprocess.run([*cmd, "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0


def test_unreadable_or_hostile_metadata_is_skipped_with_a_warning(
    dataset: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (dataset / "sub-01" / "anat" / "sub-01_T1w.json").write_text("[" * 200_000 + "]" * 200_000)
    (dataset / "sub-01" / "sub-01_T1w.json").write_text("{not json")
    meta = inherited_metadata(dataset / "sub-01" / "anat" / "sub-01_T1w.nii.gz", dataset)
    assert meta == {"MagneticFieldStrength": 3, "EchoTime": 0.0025}  # the dataset level still counts
    assert sum("not read as BIDS metadata" in r.getMessage() for r in caplog.records) == 2
