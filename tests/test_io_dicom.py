"""DICOM series: grouping, reading real and synthetic series, writing, NIfTI→DICOM→NIfTI round trips."""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest

from mrisr.discovery import find_studies, group_dicom_series
from mrisr.errors import InconsistentGeometryError, UnreadableFileError, UnsupportedDataError
from mrisr.fsutil import TMP_MARK
from mrisr.geometry import corner_world
from mrisr.io import Volume, read_volume
from mrisr.io.dicom import read_dicom_path, read_dicom_series, write_dicom_series
from mrisr.io.nifti import read_nifti, write_nifti

GridMaker = Callable[[str], tuple[np.ndarray, np.ndarray]]
SeriesMaker = Callable[..., list[Path]]


def _pairs(folder: Path) -> list[tuple[Path, Path]]:
    return [(p, folder) for p in sorted(folder.rglob("*")) if p.is_file()]


def _dicom_volume(data: np.ndarray, affine: np.ndarray, dtype: object = np.int16) -> Volume:
    tags = {"PatientName": "Doe^Jane", "PatientID": "X42", "StudyInstanceUID": "1.2.3.99", "Modality": "MR"}
    tags |= {"SeriesDescription": "T1 sag", "SeriesNumber": "5", "SeriesInstanceUID": "1.2.3.99.5"}
    return Volume(data=data, affine=affine, dtype=np.dtype(dtype), fmt="dicom", meta={"tags": tags})


# ------------------------------------------------------------------------------------------------
# round trips
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grid", ["oblique", "lps", "sagittal", "left_handed", "two_d"])
def test_nifti_to_dicom_to_nifti_keeps_corners_and_values(
    grid: str, grid_volume: GridMaker, write_nifti_file: Callable[..., Path], tmp_path: Path
) -> None:
    data, affine = grid_volume(grid)
    src = read_nifti(write_nifti_file(f"{grid}.nii.gz", data, affine))
    series = write_dicom_series(src, tmp_path / "dicom")
    assert len(list(series.glob("*.dcm"))) == src.shape3[2]
    via_dicom = read_dicom_path(series)
    back = read_nifti(write_nifti(via_dicom, tmp_path / "back.nii.gz"))
    assert back.data.shape == src.data.shape
    np.testing.assert_allclose(corner_world(back.affine, back.shape3), corner_world(affine, src.shape3), atol=1e-4)
    np.testing.assert_array_equal(back.data, src.data)
    assert back.dtype == np.int16
    assert not [p for p in tmp_path.iterdir() if TMP_MARK in p.name]


def test_written_geometry_tags_are_lps_with_row_spacing_first(grid_volume: GridMaker, tmp_path: Path) -> None:
    data, affine = grid_volume("lps")  # RAS diag(-0.8, -0.7, 3.0), origin (50, 60, -20)
    write_dicom_series(_dicom_volume(data, affine), tmp_path / "s")
    slices = sorted((pydicom.dcmread(p) for p in (tmp_path / "s").iterdir()), key=lambda d: int(d.InstanceNumber))
    assert [int(d.InstanceNumber) for d in slices] == [1, 2, 3, 4]
    third = slices[2]
    np.testing.assert_allclose([float(v) for v in third.ImagePositionPatient], (-50.0, -60.0, -14.0))
    np.testing.assert_allclose([float(v) for v in third.ImageOrientationPatient], (1, 0, 0, 0, 1, 0))
    np.testing.assert_allclose([float(v) for v in third.PixelSpacing], (0.7, 0.8))  # rows (j), columns (i)
    assert float(third.SliceThickness) == pytest.approx(3.0)
    assert float(third.SpacingBetweenSlices) == pytest.approx(3.0)
    assert (int(third.Rows), int(third.Columns)) == (5, 6)
    np.testing.assert_array_equal(third.pixel_array, data[:, :, 2].T)


def test_written_series_is_a_new_derived_series_of_the_same_patient(grid_volume: GridMaker, tmp_path: Path) -> None:
    data, affine = grid_volume("oblique")
    write_dicom_series(_dicom_volume(data, affine), tmp_path / "s")
    headers = [pydicom.dcmread(p) for p in sorted((tmp_path / "s").iterdir())]
    assert len({d.SOPInstanceUID for d in headers}) == 4
    assert {d.SeriesInstanceUID for d in headers} != {"1.2.3.99.5"}
    assert len({d.SeriesInstanceUID for d in headers}) == 1
    first = headers[0]
    assert str(first.PatientName) == "Doe^Jane"
    assert first.PatientID == "X42"
    assert first.StudyInstanceUID == "1.2.3.99"
    assert list(first.ImageType) == ["DERIVED", "SECONDARY", "OTHER"]  # MR images need a value 3
    assert first.SeriesDescription == "T1 sag SR"
    assert int(first.SeriesNumber) == 1005
    write_dicom_series(_dicom_volume(data, affine), tmp_path / "t", series_description_suffix=" x2", series_number=77)
    other = pydicom.dcmread(sorted((tmp_path / "t").iterdir())[0])
    assert (other.SeriesDescription, int(other.SeriesNumber)) == ("T1 sag x2", 77)


def test_float_data_are_stored_scaled_in_physical_units(grid_volume: GridMaker, tmp_path: Path) -> None:
    _, affine = grid_volume("oblique")
    data = np.linspace(-3.25, 1234.5, 6 * 5 * 4).reshape(6, 5, 4).astype(np.float32)
    write_dicom_series(_dicom_volume(data, affine, np.float32), tmp_path / "s")
    ds = pydicom.dcmread(sorted((tmp_path / "s").iterdir())[0])
    assert ds.PixelRepresentation == 1 and ds.BitsAllocated == 16
    slope = float(ds.RescaleSlope)
    assert 0 < slope < 0.05
    back = read_dicom_path(tmp_path / "s")
    assert back.dtype == np.float32
    np.testing.assert_allclose(back.data, data, atol=slope / 2 + 1e-4)


def test_uint16_beyond_int16_range_is_stored_exactly(grid_volume: GridMaker, tmp_path: Path) -> None:
    _, affine = grid_volume("lps")
    data = np.arange(6 * 5 * 4, dtype=np.uint16).reshape(6, 5, 4) * 500
    assert data.max() > 32767
    back = read_dicom_path(write_dicom_series(_dicom_volume(data, affine, np.uint16), tmp_path / "s"))
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back.data, data)


def test_write_replaces_existing_series_and_refuses_4d(grid_volume: GridMaker, tmp_path: Path) -> None:
    data, affine = grid_volume("lps")
    out = tmp_path / "s"
    write_dicom_series(_dicom_volume(data, affine), out)
    write_dicom_series(_dicom_volume(data[:, :, :2], affine), out)
    assert len(list(out.iterdir())) == 2
    data4, affine4 = grid_volume("four_d")
    with pytest.raises(UnsupportedDataError, match="3D"):
        write_dicom_series(_dicom_volume(data4, affine4), tmp_path / "four")
    nan = data.astype(np.float32)
    nan[0, 0, 0] = np.nan
    with pytest.raises(UnsupportedDataError, match="NaN"):
        write_dicom_series(_dicom_volume(nan, affine, np.float32), tmp_path / "nan")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


# ------------------------------------------------------------------------------------------------
# real files shipped with pydicom
# ------------------------------------------------------------------------------------------------


def test_mr_small_is_a_volume_of_depth_one(pydicom_files: Path, tmp_path: Path) -> None:
    # a copy: pydicom's folder holds re-encodings of the same slice with the same SeriesInstanceUID
    path = tmp_path / "MR_small.dcm"
    shutil.copy(pydicom_files / "MR_small.dcm", path)
    ds = pydicom.dcmread(path)
    vol = read_dicom_path(path)
    assert vol.data.shape == (64, 64, 1)
    assert vol.dtype == np.int16
    np.testing.assert_array_equal(vol.data[:, :, 0], ds.pixel_array.T)
    # LPS position (-83.9063, -91.2, 6.6406), rows along +x (L), columns along +y (P), 0.3125 mm
    # pixels, SliceThickness 0.8 mm; in RAS the x and y signs flip.
    expected = np.array(
        [[-0.3125, 0, 0, 83.9063], [0, -0.3125, 0, 91.2], [0, 0, 0.8, 6.6406], [0, 0, 0, 1]],
    )
    np.testing.assert_allclose(vol.affine, expected, atol=1e-6)
    assert vol.meta["tags"]["PatientName"] == str(ds.PatientName)
    assert vol.meta["tags"]["Modality"] == "MR"


def test_ct_series_applies_rescale_and_follows_instance_order(pydicom_files: Path) -> None:
    folder = pydicom_files / "dicomdirtests" / "98892001" / "CT5N"
    vol = read_dicom_path(folder)
    assert vol.data.shape == (16, 16, 5)
    assert vol.dtype == np.int16  # slope 1, intercept -1024: integers
    by_instance = sorted((pydicom.dcmread(p) for p in folder.iterdir()), key=lambda d: int(d.InstanceNumber))
    for k, ds in enumerate(by_instance):
        np.testing.assert_array_equal(vol.data[:, :, k], ds.pixel_array.T.astype(np.int32) - 1024)
    # instances 6..10 run from z=8.7625 down to z=-1.2375 in 2.5 mm steps
    np.testing.assert_allclose(vol.affine[:3, 2], (0, 0, -2.5), atol=1e-6)
    np.testing.assert_allclose(vol.affine[:3, 3], (72.199997, 143.0, 8.7625), atol=1e-5)


def test_projection_series_with_mixed_orientation_is_refused(pydicom_files: Path) -> None:
    folder = pydicom_files / "dicomdirtests" / "98892003" / "MR700"
    studies = group_dicom_series(_pairs(folder))
    assert len(studies) == 1 and len(studies[0].files) == 7
    with pytest.raises(InconsistentGeometryError, match="mixed slice orientation") as info:
        studies[0].load()
    assert info.value.path == folder


def test_grouping_skips_non_images_dicomdir_and_other_files(
    pydicom_files: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = pydicom_files / "dicomdirtests"
    shutil.copytree(src / "98892003" / "MR2", tmp_path / "MR2")
    shutil.copy(src / "DICOMDIR", tmp_path / "DICOMDIR")
    shutil.copy(pydicom_files / "rtstruct.dcm", tmp_path / "MR2" / "rtstruct.dcm")
    (tmp_path / "MR2" / "notes.txt").write_text("not dicom\n")
    (tmp_path / "MR2" / "empty.dcm").touch()
    with caplog.at_level(logging.INFO, logger="mrisr.io.dicom"):
        studies = group_dicom_series(_pairs(tmp_path))
    assert len(studies) == 3  # one localizer and two three-plane pilots, grouped by SeriesInstanceUID
    assert sorted(len(s.files) for s in studies) == [1, 3, 3]
    assert all(s.path == tmp_path / "MR2" and s.fmt == "dicom" for s in studies)
    assert {s.description for s in studies} == {"FAST LOCALIZER", "T/S/C RF FAST PILOT"}
    listed = {f.name for s in studies for f in s.files}
    assert not listed & {"DICOMDIR", "rtstruct.dcm", "notes.txt", "empty.dcm"}
    log = caplog.text
    assert "rtstruct.dcm: no pixel data (RT Structure Set Storage)" in log
    assert "DICOMDIR: DICOMDIR" in log
    assert "notes.txt: not a DICOM file" in log
    assert "empty.dcm: not a DICOM file" in log


def test_truncated_dicom_names_the_file(pydicom_files: Path, tmp_path: Path) -> None:
    bad = tmp_path / "MR_truncated.dcm"
    shutil.copy(pydicom_files / "MR_truncated.dcm", bad)
    with pytest.raises(UnreadableFileError) as info:
        read_dicom_path(bad)
    assert info.value.path == bad


# ------------------------------------------------------------------------------------------------
# synthetic series
# ------------------------------------------------------------------------------------------------


def test_synthetic_series_geometry_and_order(axial_series: SeriesMaker, tmp_path: Path) -> None:
    files = axial_series("ax", [6.0, 0.0, 4.0, 2.0])  # written out of order
    vol = read_dicom_series(list(reversed(files)))
    assert vol.data.shape == (5, 4, 4)  # (columns, rows, slices)
    expected = np.array([[-0.8, 0, 0, 10.0], [0, -0.5, 0, -20.0], [0, 0, 2.0, 0.0], [0, 0, 0, 1]])
    np.testing.assert_allclose(vol.affine, expected, atol=1e-9)
    for k, f in enumerate([files[1], files[3], files[2], files[0]]):
        np.testing.assert_array_equal(vol.data[:, :, k], pydicom.dcmread(f).pixel_array.T)


def test_two_interleaved_series_in_one_folder_are_two_studies(axial_series: SeriesMaker, tmp_path: Path) -> None:
    a = axial_series("mixed", [0.0, 2.0, 4.0], uid="1.2.3.1", names=["f0", "f2", "f4"])
    b = axial_series("mixed", [1.0, 3.0, 5.0], uid="1.2.3.2", names=["f1", "f3", "f5"])
    studies = group_dicom_series(_pairs(tmp_path / "mixed"))
    assert len(studies) == 2
    assert {s.series_uid: s.files for s in studies} == {"1.2.3.1": tuple(a), "1.2.3.2": tuple(b)}
    assert len({s.id for s in studies}) == 2
    vols = [s.load() for s in studies]
    assert all(v.shape3 == (5, 4, 3) and v.spacing[2] == pytest.approx(2.0) for v in vols)
    with pytest.raises(UnsupportedDataError, match="2 DICOM image series"):
        read_dicom_path(tmp_path / "mixed")
    with pytest.raises(UnsupportedDataError, match="2 series"):
        read_dicom_series(a + b)
    one = read_dicom_path(b[1])  # one file: that file alone, as `mrisr enhance FILE` reads it
    assert one.shape3 == (5, 4, 1)
    np.testing.assert_allclose(one.affine[2, 3], 3.0)


@pytest.mark.parametrize(
    ("z", "expect"),
    [
        (
            [0.0, 2.0, 4.0, 8.0, 10.0],
            r"missing slice\?.*\(-10\.000, 20\.000, 4\.000\) to \(-10\.000, 20\.000, 8\.000\)",
        ),
        ([0.0, 2.0, 4.0, 5.5, 7.5, 9.5], r"uneven slice spacing.*4\.000\) to .*5\.500\): 1\.500 mm"),
        ([0.0, 2.0, 2.0, 4.0], r"same position"),
    ],
)
def test_irregular_slice_positions_are_refused(
    axial_series: SeriesMaker, tmp_path: Path, z: list[float], expect: str
) -> None:
    files = axial_series("gap", z)
    with pytest.raises(InconsistentGeometryError, match=expect) as info:
        read_dicom_series(files)
    assert info.value.path == tmp_path / "gap"


def test_mixed_slice_sizes_are_refused(axial_series: SeriesMaker, tmp_path: Path) -> None:
    files = axial_series("sizes", [0.0, 2.0], uid="1.9")
    files += axial_series("sizes", [4.0], uid="1.9", names=["big.dcm"], shape=(6, 5))
    with pytest.raises(InconsistentGeometryError, match="mixed slice sizes"):
        read_dicom_series(files)


def test_hostile_tags_give_a_safe_study_id(axial_series: SeriesMaker, tmp_path: Path) -> None:
    tags = {"PatientName": "../../etc/passwd", "SeriesDescription": "a/b\\c/../../x", "SeriesNumber": "3"}
    axial_series("..evil", [0.0, 2.0], tags=tags)
    (study,) = group_dicom_series(_pairs(tmp_path / "..evil"))
    assert "/" not in study.id and "\\" not in study.id and ".." not in study.id
    assert not study.id.startswith(".")
    assert study.description == "a/b\\c/../../x"
    vol = study.load()
    out = write_dicom_series(vol, tmp_path / "out")
    # a backslash separates DICOM values: the written bytes are the input's, plus the suffix
    written = pydicom.dcmread(sorted(out.iterdir())[0])["SeriesDescription"].value
    assert "\\".join(written) == "a/b\\c/../../x SR"


def test_load_volume_reads_a_dicom_folder(axial_series: SeriesMaker, tmp_path: Path) -> None:
    axial_series("ax", [0.0, 2.0, 4.0])
    vol = read_volume(tmp_path / "ax")
    assert vol.fmt == "dicom" and vol.shape3 == (5, 4, 3)


def test_read_volume_of_one_dicom_file_reads_what_the_cli_reads(axial_series: SeriesMaker, tmp_path: Path) -> None:
    files = axial_series("ax", [0.0, 2.0, 4.0])
    vol = read_volume(files[1])
    (study,) = find_studies([files[1]])  # what `mrisr enhance FILE` processes
    via_cli = study.load()
    assert vol.shape3 == via_cli.shape3 == (5, 4, 1)  # the file alone, not its folder's series
    np.testing.assert_array_equal(vol.data, via_cli.data)
    np.testing.assert_array_equal(vol.affine, via_cli.affine)
    np.testing.assert_array_equal(vol.data[:, :, 0], pydicom.dcmread(files[1]).pixel_array.T)
    np.testing.assert_allclose(vol.affine[2, 3], 2.0)
    control = read_volume(tmp_path / "ax")  # the folder: the whole series
    assert control.shape3 == (5, 4, 3)
    np.testing.assert_array_equal(control.data[:, :, 1], vol.data[:, :, 0])


def test_io_imports_nothing_of_studies(axial_series: SeriesMaker, tmp_path: Path) -> None:
    import subprocess

    axial_series("ax", [0.0, 2.0, 4.0])
    code = (
        "import sys; from mrisr.io import read_volume; import mrisr.io.dicom, mrisr.io.nifti, mrisr.io.walk; "
        f"v = read_volume({str(tmp_path / 'ax')!r}); assert v.shape3 == (5, 4, 3); "
        "print(sorted(m for m in sys.modules if m.startswith('mrisr.') and not m.startswith('mrisr.io')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "mrisr.discovery" not in out and "mrisr.io" not in out, out
    assert "mrisr.errors" in out  # control: the list is of the mrisr modules loaded


def test_non_dicom_file_in_an_explicit_file_list(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\x00" * 10)
    with pytest.raises(UnreadableFileError, match="not a DICOM file") as info:
        read_dicom_series([junk])
    assert info.value.path == junk


def test_pixels_without_simpleitk_match(
    pydicom_files: Path, monkeypatch: pytest.MonkeyPatch, axial_series: SeriesMaker
) -> None:
    folder = pydicom_files / "dicomdirtests" / "98892001" / "CT5N"
    files = axial_series("ax", [0.0, 2.0, 4.0])
    with_sitk = [read_dicom_path(folder), read_dicom_series(files)]
    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # import SimpleITK now raises ImportError
    without = [read_dicom_path(folder), read_dicom_series(files)]
    for a, b in zip(with_sitk, without, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a.data, b.data)
        np.testing.assert_array_equal(a.affine, b.affine)


def test_volume_without_tags_gets_required_empty_tags(grid_volume: GridMaker, tmp_path: Path) -> None:
    data, affine = grid_volume("oblique")
    vol = Volume(data=data, affine=affine, dtype=np.int16, fmt="nifti")
    ds = pydicom.dcmread(sorted(write_dicom_series(vol, tmp_path / "s").iterdir())[0])
    assert ds.PatientName == "" and ds.PatientID == ""
    assert ds.Modality == "MR" and ds.SOPClassUID == pydicom.uid.MRImageStorage
    assert int(ds.SeriesNumber) == 1000
    assert ds.SeriesDescription == "mrisr SR"


def test_dicom_with_truncated_header(pydicom_files: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cut = tmp_path / "cut.dcm"
    cut.write_bytes((pydicom_files / "MR_small.dcm").read_bytes()[:300])  # preamble, meta, a few tags
    with pytest.raises(UnreadableFileError, match="truncated or corrupt DICOM header") as info:
        read_dicom_series([cut])
    assert info.value.path == cut
    with caplog.at_level(logging.WARNING, logger="mrisr.io.dicom"):
        assert group_dicom_series([(cut, tmp_path)]) == []
    assert "cut.dcm: truncated or corrupt DICOM header" in caplog.text


def test_single_non_image_file_names_the_file(pydicom_files: Path) -> None:
    path = pydicom_files / "rtstruct.dcm"
    with pytest.raises(UnsupportedDataError, match="no pixel data") as info:
        read_dicom_series([path])
    assert info.value.path == path
    with pytest.raises(UnsupportedDataError, match="no pixel data"):
        read_dicom_path(path)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
def test_every_pydicom_test_file_loads_or_fails_with_a_named_mrisr_error(pydicom_files: Path) -> None:
    from mrisr.discovery import find_studies
    from mrisr.errors import MrisrError

    studies = find_studies([pydicom_files.parent])  # test_files and charset_files
    assert len(studies) > 20
    loaded = 0
    for study in studies:
        try:
            vol = study.load()
        except MrisrError as exc:
            assert exc.path is not None
            continue
        loaded += 1
        assert np.isfinite(vol.affine).all() and vol.data.size > 0
    assert loaded >= 10


def test_writing_the_same_result_again_gives_the_same_files(tmp_path: Path) -> None:
    """UIDs come from what is written: a resumed or repeated run writes byte-identical files, and
    other values get other UIDs."""
    data = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3)
    affine = np.diag([0.8, 0.5, 2.0, 1.0])
    first = write_dicom_series(_dicom_volume(data, affine), tmp_path / "a")
    again = write_dicom_series(_dicom_volume(data, affine), tmp_path / "b")
    names = sorted(p.name for p in first.iterdir())
    assert len(names) == 3 and names == sorted(p.name for p in again.iterdir())
    assert all((first / n).read_bytes() == (again / n).read_bytes() for n in names)
    other = write_dicom_series(_dicom_volume(data + 1, affine), tmp_path / "c")
    uids = [{pydicom.dcmread(f).SeriesInstanceUID for f in folder.iterdir()} for folder in (first, other)]
    assert len(uids[0]) == 1 and uids[0] != uids[1]
    sops = {pydicom.dcmread(f).SOPInstanceUID for f in first.iterdir()}
    assert len(sops) == 3


# ------------------------------------------------------------------------------------------------
# hostile inputs: short pixel data, grids DICOM cannot hold
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["short element", "file cut"])
@pytest.mark.parametrize("simpleitk", [True, False], ids=["simpleitk", "pydicom"])
def test_short_pixel_data_is_refused_naming_the_file(
    axial_series: SeriesMaker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str, simpleitk: bool
) -> None:
    """SimpleITK fills the missing tail of short pixel data with uninitialised memory (the study came
    out 'done', different on every run): the length is checked before any decoder."""
    files = axial_series("short", [0.0, 2.0, 4.0], shape=(40, 50))
    bad = files[1]
    if how == "short element":
        ds = pydicom.dcmread(bad)
        ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
        ds.save_as(bad, enforce_file_format=True)
    else:
        bad.write_bytes(bad.read_bytes()[:-1000])
    if not simpleitk:
        monkeypatch.setitem(sys.modules, "SimpleITK", None)
    with pytest.raises(UnreadableFileError, match=r"pixel data hold \d+ bytes.*need 4000") as info:
        read_dicom_series(files)
    assert info.value.path == bad


def test_sheared_grid_is_refused_naming_the_study(tmp_path: Path, write_nifti_file: Callable[..., Path]) -> None:
    """DICOM rows and columns are perpendicular: a grid sheared in-plane was written with a
    non-orthogonal ImageOrientationPatient (row·column 0.285) that SimpleITK/GDCM replace by identity."""
    affine = np.array([[1.0, 0.3, 0, 5.0], [0, 1.0, 0, -3.0], [0, 0, 2.0, 1.0], [0, 0, 0, 1]])
    data = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)
    src = read_nifti(write_nifti_file("sheared.nii.gz", data, affine))
    with pytest.raises(UnsupportedDataError, match=r"sheared grid: voxel rows and columns meet at 73\.30°") as info:
        write_dicom_series(src, tmp_path / "out")
    assert info.value.path == src.path
    assert not (tmp_path / "out").exists()


def test_slice_axis_off_the_normal_is_kept(tmp_path: Path) -> None:
    """A slice axis tilted off the slice normal (as a tilted gantry) is what per-slice positions
    hold: written and read back to the same world coordinates."""
    affine = np.array([[0.8, 0, 0.4, 5.0], [0, 0.7, 0, -3.0], [0, 0, 2.0, 1.0], [0, 0, 0, 1]])
    data = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)
    back = read_dicom_path(write_dicom_series(_dicom_volume(data, affine), tmp_path / "s"))
    np.testing.assert_allclose(back.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(back.data, data)


def test_deflated_dataset_passes_the_pixel_length_check(pydicom_files: Path, tmp_path: Path) -> None:
    """In a deflated dataset the pixel data offset is one into the inflated stream, not the file:
    the length check must not take the (smaller) compressed file for a cut one."""
    path = tmp_path / "image_dfl.dcm"
    shutil.copy(pydicom_files / "image_dfl.dcm", path)
    vol = read_dicom_path(path)
    assert vol.shape3 == (512, 512, 1)
    np.testing.assert_array_equal(vol.data[:, :, 0], pydicom.dcmread(path).pixel_array.T)


@pytest.mark.parametrize("slope", ["abc", "nan", "0"])
def test_unreadable_rescale_is_refused_naming_the_file(axial_series: SeriesMaker, slope: str) -> None:
    """A RescaleSlope that is no number was taken for 1 (values silently unscaled)."""
    files = axial_series("rescale", [0.0, 2.0, 4.0], tags={"RescaleSlope": "9.87654321"})
    raw = files[2].read_bytes()
    assert raw.count(b"9.87654321") == 1
    files[2].write_bytes(raw.replace(b"9.87654321", slope.encode().ljust(10)))  # pydicom refuses to write it
    with pytest.raises(UnreadableFileError, match="bad RescaleSlope") as info:
        read_dicom_series(files)
    assert info.value.path == files[2]


def test_a_tag_value_its_vr_refuses_is_carried_as_the_scanner_wrote_it(
    axial_series: SeriesMaker, tmp_path: Path
) -> None:
    """A DS that is no number (pydicom keeps it as text) neither stops the derived series nor is
    changed in it."""
    files = axial_series("junk", [0.0, 2.0], tags={"PatientWeight": "71.123456"})
    for f in files:
        f.write_bytes(f.read_bytes().replace(b"71.123456", b"seventy  "))
    vol = read_dicom_series(files)
    ds = pydicom.dcmread(sorted(write_dicom_series(vol, tmp_path / "out").iterdir())[0])
    assert ds["PatientWeight"].value == "seventy" and ds.PatientID == "P001"


def test_missing_pixel_spacing_is_warned_once_per_series(
    axial_series: SeriesMaker, caplog: pytest.LogCaptureFixture
) -> None:
    files = axial_series("nospacing", [0.0, 2.0, 4.0, 6.0])
    for path in files:
        ds = pydicom.dcmread(path)
        del ds.PixelSpacing
        ds.save_as(path, enforce_file_format=True)
    with caplog.at_level(logging.WARNING, logger="mrisr"):
        vol = read_dicom_series(files)
    np.testing.assert_allclose(vol.spacing, (1.0, 1.0, 2.0))
    lines = [r.getMessage() for r in caplog.records if "PixelSpacing" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "4 of 4 slices" in lines[0]
