"""A fourth hostile campaign: cases a new user meets, each found misbehaving before its fix.

Outputs through links out of ``--out``, a user's file inside a series folder mrisr wrote, a user's
``dataset_description.json`` at a BIDS output folder, NRRD lengths in metres.
"""

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


def _nifti(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).integers(100, 900, (6, 5, 2)).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0])), str(path))
    return path


def _bids(root: Path) -> Path:
    _nifti(root / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    (root / "dataset_description.json").write_text(json.dumps({"Name": "raw", "BIDSVersion": "1.8.0"}))
    return root


def _run(inputs: list[Path], out: Path, net: Path, *extra: str) -> int:
    args = ["enhance", *map(str, inputs), "--out", str(out), "--checkpoint", str(net), "--ensemble", "1"]
    return main(["-q", *args, "--no-figure", *extra])


def _errors(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# --- Outputs through a link out of --out --------------------------------------------------------


def test_a_bids_subject_folder_linked_out_of_out_is_refused_not_reported_done(
    tmp_path: Path, net: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``OUT/sub-01`` a link to a folder elsewhere: the commit ignored every step out of OUT, so the
    study was reported done (exit 0) with no output, its temporaries left in the other folder."""
    raw = _bids(tmp_path / "raw")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub-01").symlink_to(elsewhere)
    assert _run([raw], out, net) == 1
    lines = _errors(capsys)
    assert len(lines) == 1 and f"{out / 'sub-01'}: leads out of the output folder" in lines[0], lines
    assert _tree(elsewhere) == []  # nothing written there: no output, no temporary, no failure record


def test_an_output_path_under_out_reached_through_a_link_inside_out_is_written(tmp_path: Path, net: Path) -> None:
    """A link that stays inside OUT is fine (control of the test above)."""
    raw = _bids(tmp_path / "raw")
    out = tmp_path / "out"
    (out / "real").mkdir(parents=True)
    (out / "sub-01").symlink_to(out / "real")
    assert _run([raw], out, net) == 0
    assert nib.load(str(out / "real" / "anat" / "sub-01_desc-sr_T1w.nii.gz")).shape == (12, 10, 2)


# --- A user's file inside the DICOM series folder that mrisr wrote -------------------------------


@pytest.mark.parametrize("second", ["dicom", "nifti"])
def test_a_users_file_inside_an_owned_series_folder_is_never_deleted(
    tmp_path: Path, net: Path, capsys: pytest.CaptureFixture[str], second: str
) -> None:
    """``--overwrite`` (same format: the folder replaced; another format: the folder removed) deleted
    ``a_sr/notes.txt`` with the series: the sidecar names the folder, not what the user put in it."""
    src = _nifti(tmp_path / "in" / "a.nii.gz")
    out = tmp_path / "out"
    assert _run([src], out, net, "--format", "dicom") == 0
    notes = out / "a_sr" / "notes.txt"
    notes.write_text("mine")
    slices = sorted(p.name for p in (out / "a_sr").glob("IM*.dcm"))
    capsys.readouterr()
    assert _run([src], out, net, "--format", second, "--overwrite") == 1
    lines = _errors(capsys)
    assert len(lines) == 1 and str(notes) in lines[0] and "move it away" in lines[0], lines
    assert notes.read_text() == "mine"
    assert sorted(p.name for p in (out / "a_sr").glob("IM*.dcm")) == slices  # the old result stands
    assert json.loads((out / "a_sr.json").read_text())["status"] == "done"
    notes.unlink()  # moved away: the rerun goes through
    assert _run([src], out, net, "--format", second, "--overwrite") == 0
    assert (out / "a_sr").is_dir() == (second == "dicom")


# --- A user's dataset_description.json / .bidsignore in a BIDS output folder ---------------------


@pytest.mark.parametrize(
    "text",
    [
        json.dumps({"Name": "my raw data", "BIDSVersion": "1.8.0", "DatasetType": "raw"}),
        json.dumps({"Name": "my raw data", "BIDSVersion": "1.8.0"}),  # BIDS: no DatasetType is raw
        "not json at all\n",
        "[1, 2]",
    ],
    ids=["raw", "raw-by-default", "not-json", "not-an-object"],
)
def test_a_users_dataset_description_at_out_is_never_rewritten(
    tmp_path: Path, net: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    """``--out`` a user's BIDS raw dataset (or any folder with such a file): the description was
    turned into a derivative's (a raw one) or replaced by a new one (one that was not JSON)."""
    raw = _bids(tmp_path / "raw")
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "dataset_description.json"
    mine.write_text(text)
    assert _run([raw], out, net) == 1
    lines = _errors(capsys)
    assert len(lines) == 1 and str(mine) in lines[0] and "another --out" in lines[0], lines
    assert mine.read_text() == text
    assert not (out / "sub-01" / "anat" / "sub-01_desc-sr_T1w.nii.gz").exists()


def test_a_derivative_description_is_completed_and_an_unreadable_bidsignore_kept(tmp_path: Path, net: Path) -> None:
    raw = _bids(tmp_path / "raw")
    out = tmp_path / "out"
    out.mkdir()
    theirs = {"Name": "other", "BIDSVersion": "1.8.0", "DatasetType": "derivative", "GeneratedBy": [{"Name": "x"}]}
    (out / "dataset_description.json").write_text(json.dumps(theirs))
    ignore = out / ".bidsignore"
    ignore.write_bytes(b"\xff\xfe mine\n")
    assert _run([raw], out, net) == 0
    desc = json.loads((out / "dataset_description.json").read_text())
    assert [g["Name"] for g in desc["GeneratedBy"]] == ["mrisr", "x"] and desc["Name"] == "other"
    assert ignore.read_bytes() == b"\xff\xfe mine\n"


# --- NRRD lengths in metres (ITK ignores the NRRD unit fields) and detached headers ---------------

_NRRD_HEAD = "NRRD0004\ntype: short\ndimension: 3\nsizes: 4 3 2\nendian: little\nencoding: raw\n"
_VOXELS = np.arange(24, dtype="<i2").reshape(2, 3, 4)  # (k, j, i): the file's order, i fastest


def _nrrd(path: Path, fields: str, *, detached: bool = False, blank_line: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if detached:
        (path.parent / "voxels.raw").write_bytes(_VOXELS.tobytes())
        path.write_text(_NRRD_HEAD + fields + "data file: voxels.raw\n" + ("\n" if blank_line else ""))
    else:
        path.write_bytes((_NRRD_HEAD + fields + "\n").encode() + _VOXELS.tobytes())
    return path


_LPS_MM = (
    "space: left-posterior-superior\nspace directions: (0.9,0,0) (0,0.8,0.1) (0,0,2.5)\nspace origin: (10,-20,30)\n"
)
_LPS_MM_RAS = np.array([[-0.9, 0, 0, -10], [0, -0.8, 0, 20], [0, 0.1, 2.5, 30], [0, 0, 0, 1]])


@pytest.mark.parametrize(
    ("fields", "detached"),
    [
        (
            _LPS_MM.replace("0.9,", "0.0009,")
            .replace("0.8,0.1", "0.0008,0.0001")
            .replace("2.5)", "0.0025)")
            .replace("(10,-20,30)", "(0.01,-0.02,0.03)")
            + 'space units: "m" "m" "m"\n',
            False,
        ),
        (
            _LPS_MM.replace("0.9,", "0.09,")
            .replace("0.8,0.1", "0.08,0.01")
            .replace("2.5)", "0.25)")
            .replace("(10,-20,30)", "(1,-2,3)")
            + 'space units: "cm" "cm" "cm"\n',
            True,
        ),
        (
            _LPS_MM.replace("0.9,", "900,")
            .replace("0.8,0.1", "800,100")
            .replace("2.5)", "2500)")
            .replace("(10,-20,30)", "(10000,-20000,30000)")
            + 'space units: "\u00b5m" "um" "micron"\n',
            True,
        ),
        (_LPS_MM + 'space units: "mm" "mm" "mm"\n', True),
    ],
    ids=["metres", "centimetres-detached", "micrometres-detached", "mm-detached"],
)
def test_nrrd_space_units_are_converted_to_mm(tmp_path: Path, fields: str, detached: bool) -> None:
    """ITK ignores ``space units``: a NRRD file in metres was read 1000 times too small (a 0.0009 mm
    voxel). A detached header (``.nhdr``) ending without a blank line was not parsed at all."""
    from mrisr.io import read_volume
    from mrisr.io.itk import read_itk_grid

    path = _nrrd(tmp_path / ("a.nhdr" if detached else "a.nrrd"), fields, detached=detached, blank_line=False)
    vol = read_volume(path)
    np.testing.assert_allclose(vol.affine, _LPS_MM_RAS, atol=1e-9)
    np.testing.assert_array_equal(vol.data, _VOXELS.transpose(2, 1, 0))
    np.testing.assert_allclose(read_itk_grid(path)[0], _LPS_MM_RAS, atol=1e-9)


def test_nrrd_axis_units_without_a_space_are_converted_and_unknown_units_refused(tmp_path: Path) -> None:
    from mrisr.errors import UnsupportedDataError
    from mrisr.io import read_volume

    vol = read_volume(_nrrd(tmp_path / "cm.nrrd", 'spacings: 0.1 0.1 0.3\nunits: "cm" "cm" "cm"\n'))
    np.testing.assert_allclose(vol.spacing, (1.0, 1.0, 3.0), atol=1e-9)
    with pytest.raises(UnsupportedDataError, match="furlong"):
        read_volume(_nrrd(tmp_path / "f.nrrd", _LPS_MM + 'space units: "furlong" "mm" "mm"\n'))


def test_a_detached_nrrd_header_is_checked_before_reading_and_multi_file_data_still_read(tmp_path: Path) -> None:
    from mrisr.errors import UnreadableFileError
    from mrisr.io import read_volume

    short = _nrrd(tmp_path / "short" / "a.nhdr", _LPS_MM, detached=True, blank_line=False)
    (short.parent / "voxels.raw").write_bytes(_VOXELS.tobytes()[:10])
    with pytest.raises(
        UnreadableFileError, match=r"truncated file \(its header promises 48 bytes of voxels, it holds 10"
    ):
        read_volume(short)
    folder = tmp_path / "slices"
    folder.mkdir()
    for k in range(2):
        (folder / f"s{k}.raw").write_bytes(_VOXELS[k].tobytes())
    listed = folder / "list.nhdr"
    listed.write_text(_NRRD_HEAD + _LPS_MM + "data file: LIST\ns0.raw\ns1.raw\n")
    pattern = folder / "pattern.nhdr"
    pattern.write_text(_NRRD_HEAD + _LPS_MM + "data file: s%d.raw 0 1 1\n")
    for path in (listed, pattern):
        np.testing.assert_array_equal(read_volume(path).data, _VOXELS.transpose(2, 1, 0))


def test_enhanced_metre_nrrd_lies_at_the_same_world_points_in_mm(tmp_path: Path, net: Path) -> None:
    fields = (
        "space: left-posterior-superior\nspace directions: (0.002,0,0) (0,0.002,0) (0,0,0.003)\n"
        'space origin: (0.01,-0.02,0.03)\nspace units: "m" "m" "m"\n'
    )
    src = _nrrd(tmp_path / "in" / "m.nrrd", fields)
    out = tmp_path / "out"
    assert _run([src], out, net) == 0
    img = nib.load(str(out / "m_sr.nii.gz"))
    expected = np.array([[-2.0, 0, 0, -10], [0, -2.0, 0, 20], [0, 0, 3.0, 30], [0, 0, 0, 1]])
    step = np.diag([0.5, 0.5, 1.0, 1.0])
    step[:2, 3] = -0.25  # fine voxel 0's centre at coarse index -0.25 (docs/geometry.md)
    np.testing.assert_allclose(img.affine, expected @ step, atol=1e-5)
    assert img.shape == (8, 6, 2)


# --- The sidecar describes what stands on disk ---------------------------------------------------


@pytest.mark.parametrize("extra", [(), ("--dtype", "float32")], ids=["float-input", "dtype-float32"])
def test_a_dicom_outputs_sidecar_names_the_type_its_slices_hold(
    tmp_path: Path, net: Path, extra: tuple[str, ...]
) -> None:
    """A float32 study written as DICOM (int16 slices with a rescale) had ``output.dtype`` float32."""
    import pydicom

    src = tmp_path / "in" / "f.nii.gz"
    src.parent.mkdir()
    data = np.random.default_rng(1).random((6, 5, 2)).astype(np.float32) * 100
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0])), str(src))
    out = tmp_path / "out"
    assert _run([src], out, net, "--format", "dicom", *extra) == 0
    record = json.loads((out / "f_sr.json").read_text())
    first = pydicom.dcmread(sorted((out / "f_sr").glob("IM*.dcm"))[0])
    assert first.pixel_array.dtype == np.int16 and first.PixelRepresentation == 1
    assert record["output"]["dtype"] == "int16"
