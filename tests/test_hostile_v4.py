"""A fourth hostile campaign: cases a new user meets, each found misbehaving before its fix.

Outputs through links out of ``--out``, a user's file inside a series folder mrisr wrote, a user's
``dataset_description.json`` at a BIDS output folder, NRRD lengths in metres.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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


# --- A commit journal that names files other than the study's outputs ----------------------------


def test_a_planted_commit_journal_never_removes_or_moves_a_users_file(tmp_path: Path, net: Path) -> None:
    """``OUT/.a.mrisr-commit.json`` is carried out before study ``a`` runs; one naming a file of the
    user's inside OUT (or another study's output) removed or replaced it."""
    src = _nifti(tmp_path / "in" / "a.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    notes = out / "notes.txt"
    notes.write_text("mine")
    data = out / "data.nii.gz"
    data.write_text("my data")
    other = out / "b_sr.nii.gz"
    other.write_text("b")
    ops = [
        ["remove", str(notes)],
        ["move", str(data), str(other)],  # not a temporary of a's: would replace b's file by mine
        ["remove", str(out / "a_sr.nii.gz")],  # a's own output: allowed (nothing there yet)
    ]
    (out / ".a.mrisr-commit.json").write_text(json.dumps({"ops": ops}))
    assert _run([src], out, net) == 0
    assert notes.read_text() == "mine" and data.read_text() == "my data" and other.read_text() == "b"
    assert not (out / ".a.mrisr-commit.json").exists()
    assert nib.load(str(out / "a_sr.nii.gz")).shape == (12, 10, 2)


# --- A run of Siemens mosaics that lost one ------------------------------------------------------


def test_a_mosaic_series_missing_a_time_point_is_refused_naming_the_gap(tmp_path: Path) -> None:
    """Mosaics 1, 2 and 4 of a BOLD run were read as a 3-frame 4D study, every volume after the
    lost one at the wrong time; a classic series that lost a slice is refused the same way."""
    from dicom_helpers import siemens_mosaic

    from mrisr.errors import InconsistentGeometryError
    from mrisr.io import read_volume

    rng = np.random.default_rng(0)
    grid = {
        "row_dir": (1.0, 0.0, 0.0),
        "col_dir": (0.0, 1.0, 0.0),
        "first_position": (-30.0, 12.0, 40.0),
        "pixel_spacing": (2.0, 2.0),
        "slice_spacing": 3.0,
    }
    for instance in (1, 2, 4):
        tiles = rng.integers(100, 900, (4, 6, 5)).astype(np.uint16)
        siemens_mosaic(tmp_path / "bold" / f"f{instance}.dcm", tiles, instance=instance, **grid)
    with pytest.raises(InconsistentGeometryError, match=r"without InstanceNumber 3 \(between f2.dcm and f4.dcm\)"):
        read_volume(tmp_path / "bold")
    (tmp_path / "bold" / "f4.dcm").unlink()
    assert read_volume(tmp_path / "bold").data.shape == (5, 6, 4, 2)  # 1 and 2: nothing lost between


# --- New voxels under an unchanged MetaImage / NRRD header ---------------------------------------


def _mhd(folder: Path, values: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    values.astype("<i2").tofile(folder / "scan.raw")
    header = folder / "scan.mhd"
    header.write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 6 5 2\nElementSpacing = 2 2 3\n"
        "ElementType = MET_SHORT\nElementDataFile = scan.raw\n"
    )
    return header


def test_new_voxels_in_a_detached_data_file_are_not_taken_for_a_done_study(
    tmp_path: Path, net: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``scan.mhd`` + ``scan.raw``: the study hash covered the header alone, so a rerun after the
    voxels changed was skipped as done, the old output standing for the new data."""
    rng = np.random.default_rng(0)
    src = _mhd(tmp_path / "in", rng.integers(100, 900, (2, 5, 6)))
    out = tmp_path / "out"
    assert _run([src], out, net) == 0
    assert _run([src], out, net) == 0  # unchanged: skipped
    capsys.readouterr()
    _mhd(tmp_path / "in", rng.integers(100, 900, (2, 5, 6)))  # the same header, new voxels
    assert _run([src], out, net) == 1
    lines = _errors(capsys)
    assert len(lines) == 1 and "input: another file (sha256)" in lines[0], lines
    assert _run([src], out, net, "--overwrite") == 0


def test_the_data_files_of_a_header_are_its_study_files(tmp_path: Path) -> None:
    from mrisr.io.itk import itk_data_files

    (tmp_path / "a.nhdr").write_text(_NRRD_HEAD + "data file: LIST\ns0.raw\ns1.raw\n")
    (tmp_path / "b.nhdr").write_text(_NRRD_HEAD + "data file: s%02d.raw 3 7 2\n")
    (tmp_path / "c.nrrd").write_bytes((_NRRD_HEAD + "\n").encode() + _VOXELS.tobytes())
    (tmp_path / "d.mhd").write_text("NDims = 3\nElementDataFile = LIST\nx0.raw\nx1.raw\n")
    assert [p.name for p in itk_data_files(tmp_path / "a.nhdr")] == ["s0.raw", "s1.raw"]
    assert [p.name for p in itk_data_files(tmp_path / "b.nhdr")] == ["s03.raw", "s05.raw", "s07.raw"]
    assert itk_data_files(tmp_path / "c.nrrd") == []
    assert [p.name for p in itk_data_files(tmp_path / "d.mhd")] == ["x0.raw", "x1.raw"]


# --- Corrupt NIfTI headers: one line each, no traceback, no made-up positions ---------------------


def _corrupt_nifti(path: Path, **fields: Any) -> Path:
    """A valid float32 8×9×4 NIfTI file whose header fields ``fields`` are then overwritten as they
    are (nibabel would fix or refuse them on saving)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(0).random((8, 9, 4)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    raw = bytearray(path.read_bytes())
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(bytes(raw[:348])), check=False)
    for key, value in fields.items():
        header[key] = value
    raw[:348] = header.binaryblock
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"dim": [3, 8, -9, 4, 1, 1, 1, 1]}, "negative dimension"),
        ({"srow_x": [np.nan, 0, 0, 0], "sform_code": 1}, "its sform places no voxel"),
        ({"srow_x": [0, 0, 0, 0], "srow_y": [0, 0, 0, 0], "srow_z": [0, 0, 0, 0], "sform_code": 1}, "sform places"),
    ],
    ids=["negative-dim", "nan-sform", "zero-sform"],
)
def test_a_corrupt_nifti_header_fails_its_study_in_one_line(
    tmp_path: Path, net: Path, capfd: pytest.CaptureFixture[str], fields: dict[str, Any], reason: str
) -> None:
    """A negative dimension gave a traceback (OverflowError from np.memmap); a NaN or all-zero
    sform was taken as it is (spacing ``nan`` or 0: every output voxel at a made-up place)."""
    bad = _corrupt_nifti(tmp_path / "in" / "bad.nii", **fields)
    good = _nifti(tmp_path / "in" / "good.nii.gz")
    out = tmp_path / "out"
    assert _run([bad, good], out, net) == 1
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: bad: {bad}: ") and reason in lines[0], err
    assert (out / "good_sr.nii.gz").is_file() and not (out / "bad_sr.nii.gz").exists()


def test_nibabels_header_messages_do_not_pass_quiet(tmp_path: Path) -> None:
    """nibabel prints its header checks through its own stderr handler (``data code 0 not supported;
    not attempting fix``), which ``-q`` did not silence: two lines more than the error. (A subprocess:
    pytest's log capture would hide that handler's output.)"""
    bad = _corrupt_nifti(tmp_path / "bad.nii", datatype=0)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = subprocess.run(
        [sys.executable, "-m", "mrisr.cli", "-q", "info", str(bad)], capture_output=True, text=True, env=env
    )
    assert run.returncode == 1
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert lines == [f"error: bad: {bad}: data code 0 not supported"], run.stderr


# --- Corrupt DICOM geometry and sizes --------------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "reason"),
    [
        ({"PixelSpacing": [0.0, 0.0]}, r"bad PixelSpacing \[0.0, 0.0\] \(must be positive\)"),
        ({"PixelSpacing": [-0.5, -0.5]}, r"bad PixelSpacing \[-0.5, -0.5\] \(must be positive\)"),
        ({"ImageOrientationPatient": [1, 0, 0, 1, 0, 0]}, "row and column directions are \\(nearly\\) parallel"),
    ],
    ids=["zero-spacing", "negative-spacing", "parallel-orientation"],
)
def test_dicom_geometry_that_places_no_grid_is_refused_naming_the_file(
    axial_series: Any, tags: dict[str, Any], reason: str
) -> None:
    """PixelSpacing 0 was read as a 0 mm grid, a negative one mirrored the image silently; rows
    parallel to columns were reported as 'several slices at the same position'."""
    from mrisr.errors import InconsistentGeometryError
    from mrisr.io.dicom import read_dicom_series

    files = axial_series("s", [0.0, 2.0, 4.0], tags=tags)
    with pytest.raises(InconsistentGeometryError, match=reason) as info:
        read_dicom_series(files)
    assert info.value.path == files[0]


def test_a_dicom_header_claiming_a_huge_image_is_refused_before_allocating(axial_series: Any) -> None:
    """Rows × Columns 60000 × 60000 over 40 bytes of pixel data: a MemoryError traceback (107 GiB
    asked for the volume) before the short pixel data were noticed."""
    import pydicom

    from mrisr.errors import UnreadableFileError
    from mrisr.io.dicom import read_dicom_series

    files = axial_series("s", [0.0, 2.0, 4.0, 6.0])
    for f in files:
        ds = pydicom.dcmread(f)
        ds.Rows = ds.Columns = 60000
        ds.save_as(f)
    with pytest.raises(UnreadableFileError, match=r"60000×60000×1\) at 16 bits need 7200000000"):
        read_dicom_series(files)


# --- A file where an output folder goes ------------------------------------------------------------


def test_a_file_where_the_bids_figures_folder_goes_fails_in_one_line_leaving_no_temporary(
    tmp_path: Path, net: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``OUT/sub-01/figures`` a file of the user's: the figure could not be written, then removing
    its temporary raised NotADirectoryError, which replaced the study's error (a traceback's words
    naming a temporary) and left the output's temporary behind."""
    raw = _bids(tmp_path / "raw")
    out = tmp_path / "out"
    mine = out / "sub-01" / "figures"
    mine.parent.mkdir(parents=True)
    mine.write_text("mine")
    args = ["enhance", str(raw), "--out", str(out), "--checkpoint", str(net), "--ensemble", "1"]
    assert main(["-q", *args]) == 1
    lines = _errors(capsys)
    assert lines == [f"error: sub-01_T1w: {mine}: a file that mrisr did not write stands where its output folder goes; "
                     "move it away"], lines  # fmt: skip
    assert mine.read_text() == "mine"
    assert not [p for p in out.rglob("*") if ".mrisr-tmp-" in p.name]
    assert main(["-q", *args, "--no-figure"]) == 0  # no figure asked for: the file is in no way


def test_a_staged_temporary_that_cannot_be_removed_does_not_hide_the_error(tmp_path: Path) -> None:
    from mrisr.outputs import Staging

    staging = Staging()
    blocked = tmp_path / "file"
    blocked.write_text("x")
    first = staging.path(blocked / "a.png")  # its folder is a file: removing it raises NotADirectoryError
    second = staging.path(tmp_path / "b.nii.gz")
    second.write_text("staged")
    staging.discard()
    assert not second.exists() and not first.exists()


# --- FIFOs where mrisr reads its own records -------------------------------------------------------


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mrisr.cli", "-q", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


@pytest.mark.parametrize("name", ["a_sr.json", ".a.mrisr-commit.json", ".a.lock"])
def test_a_fifo_at_a_record_path_is_never_read(tmp_path: Path, net: Path, name: str) -> None:
    """A FIFO at the sidecar's, the commit journal's or the lock's path: mrisr opened it to read its
    record and blocked forever (SIGTERM waits for the study; the run never ended)."""
    src = _nifti(tmp_path / "in" / "a.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    fifo = out / name
    os.mkfifo(fifo)
    run = _cli("enhance", str(src), "--out", str(out), "--checkpoint", str(net), "--ensemble", "1", "--no-figure")
    assert run.returncode == {"a_sr.json": 1, ".a.mrisr-commit.json": 0, ".a.lock": 4}[name], run.stderr
    if name == ".a.mrisr-commit.json":  # mrisr's own hidden name: the study's commit replaces it
        assert nib.load(str(out / "a_sr.nii.gz")).shape == (12, 10, 2)
    else:
        assert fifo.is_fifo() and str(fifo) in run.stderr  # left as it is


def test_a_fifo_as_the_bids_description_is_never_read(tmp_path: Path, net: Path) -> None:
    raw = _bids(tmp_path / "raw")
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "dataset_description.json")
    run = _cli("enhance", str(raw), "--out", str(out), "--checkpoint", str(net), "--ensemble", "1", "--no-figure")
    assert run.returncode == 1 and "not a regular file" in run.stderr, run.stderr


@pytest.mark.parametrize("space", ["scanner-xyz", "3D-left-handed", "3D-right-handed"])
def test_a_nrrd_space_without_patient_axes_is_named_orientation_unknown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, space: str
) -> None:
    """ITK reads any NRRD space as left-posterior-superior, silently: a ``3D-left-handed`` file is
    then mirrored against whatever its axes meant. As a NIfTI file with codes 0, it is read, with a
    warning that its orientation is unknown."""
    from mrisr.io import read_volume

    fields = _LPS_MM.replace("left-posterior-superior", space)
    with caplog.at_level("WARNING", logger="mrisr.io.itk"):
        read_volume(_nrrd(tmp_path / "a.nrrd", fields))
    assert f"NRRD space '{space.lower()}' names no patient axes: orientation unknown" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="mrisr.io.itk"):
        read_volume(_nrrd(tmp_path / "b.nrrd", _LPS_MM))
    assert "orientation unknown" not in caplog.text
