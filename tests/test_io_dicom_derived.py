"""The derived DICOM series: each output slice starts from its source slice; only what the new pixels
and grid change is replaced; dciodvfy finds no error that the input does not have."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_helpers import DCIODVFY, dciodvfy_errors, mr_small_series, needs_dciodvfy, new_errors
from pydicom.uid import ExplicitVRLittleEndian

from mrisr.geometry import corner_world, refine_affine
from mrisr.io import Volume
from mrisr.io.dicom import read_dicom_path, write_dicom_series
from mrisr.io.nifti import read_nifti

# Attributes the derived slice replaces; every other public attribute of the source must be kept.
REPLACED = {
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "InstanceNumber",
    "ImageType",
    "Rows",
    "Columns",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PixelSpacing",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "SliceThickness",
    "SpacingBetweenSlices",
    "SliceLocation",
    "WindowCenter",
    "WindowWidth",
    "RescaleSlope",
    "RescaleIntercept",
    "PixelData",
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "SpecificCharacterSet",
    "ImagesInAcquisition",
    # dropped, as documented: they describe the source instance
    "InstanceCreationDate",
    "InstanceCreationTime",
    "InstanceCreatorUID",
    "DataSetTrailingPadding",
}


def _refined(vol: Volume, factors: tuple[int, int, int], rng: np.random.Generator) -> Volume:
    """What enhance hands the writer: float values on the refined grid."""
    data = np.kron(np.asarray(vol.data, dtype=np.float32), np.ones(factors, dtype=np.float32))
    data += rng.random(data.shape, dtype=np.float32)
    return vol.with_data(data, refine_affine(vol.affine, factors))


def _headers(folder: Path) -> list[pydicom.Dataset]:
    return sorted((pydicom.dcmread(p) for p in folder.iterdir()), key=lambda d: int(d.InstanceNumber))


def test_in_plane_output_keeps_the_source_slice_and_its_thickness(
    pydicom_files: Path, tmp_path: Path, rng: np.random.Generator
) -> None:
    """A 5 mm series with 6 mm spacing comes back 5 mm thick (it came back 6 mm), with the source's
    acquisition tags (TR, TE, flip angle, sequence ...), a reference to each source slice and no
    private tags."""
    files = mr_small_series(pydicom_files / "MR_small.dcm", tmp_path / "in", rng, thickness=5.0, spacing=6.0)
    vol = read_dicom_path(tmp_path / "in")
    out = write_dicom_series(_refined(vol, (2, 2, 1), rng), tmp_path / "out")
    derived = _headers(out)
    sources = [pydicom.dcmread(f) for f in files]
    assert len(derived) == 4
    for src, ds in zip(sources, derived, strict=True):
        assert float(ds.SliceThickness) == 5.0
        assert float(ds.SpacingBetweenSlices) == pytest.approx(6.0)
        assert (int(ds.Rows), int(ds.Columns)) == (128, 128)
        np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], [0.15625, 0.15625])
        kept = {e.keyword for e in src if not e.tag.is_private and e.keyword not in REPLACED}
        assert {"RepetitionTime", "EchoTime", "ScanningSequence", "SequenceVariant", "PatientPosition"} <= kept
        for keyword in kept:
            assert ds.get(keyword) == src.get(keyword), keyword
        assert not [e for e in ds if e.tag.is_private]
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY", *list(src.ImageType)[2:3]]
        assert "super-resolution" in ds.DerivationDescription
        (ref,) = ds.SourceImageSequence
        assert (ref.ReferencedSOPInstanceUID, ref.ReferencedSOPClassUID) == (src.SOPInstanceUID, src.SOPClassUID)
        (series,) = ds.ReferencedSeriesSequence
        assert series.SeriesInstanceUID == src.SeriesInstanceUID
        assert series.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
        assert ds.SeriesInstanceUID != src.SeriesInstanceUID and ds.SOPInstanceUID != src.SOPInstanceUID
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert int(ds.BitsStored) == 16 and int(ds.HighBit) == 15


def test_window_is_recomputed_from_the_new_values(
    pydicom_files: Path, tmp_path: Path, rng: np.random.Generator
) -> None:
    mr_small_series(pydicom_files / "MR_small.dcm", tmp_path / "in", rng)
    vol = read_dicom_path(tmp_path / "in")
    sr = _refined(vol, (2, 2, 1), rng)
    sr = sr.with_data(np.asarray(sr.data) * 3.0 + 500.0, sr.affine)  # a range the source window misses
    ds = _headers(write_dicom_series(sr, tmp_path / "out"))[0]
    lo, hi = np.percentile(np.asarray(sr.data), [0.5, 99.5])
    assert float(ds.WindowCenter) == pytest.approx((lo + hi) / 2, rel=1e-3)
    assert float(ds.WindowWidth) == pytest.approx(hi - lo, rel=1e-3)


def test_through_plane_output_references_the_containing_source_slice(
    pydicom_files: Path, tmp_path: Path, rng: np.random.Generator
) -> None:
    files = mr_small_series(pydicom_files / "MR_small.dcm", tmp_path / "in", rng, n=3, thickness=5.0, spacing=6.0)
    vol = read_dicom_path(tmp_path / "in")
    sr = _refined(vol, (1, 1, 3), rng)
    derived = _headers(write_dicom_series(sr, tmp_path / "out"))
    uids = [pydicom.dcmread(f).SOPInstanceUID for f in files]
    assert [d.SourceImageSequence[0].ReferencedSOPInstanceUID for d in derived] == [u for u in uids for _ in range(3)]
    np.testing.assert_allclose([float(d.SliceThickness) for d in derived], 2.0)  # the new spacing
    np.testing.assert_allclose([float(d.SpacingBetweenSlices) for d in derived], 2.0)
    back = read_dicom_path(tmp_path / "out")
    np.testing.assert_allclose(corner_world(back.affine, back.shape3), corner_world(sr.affine, sr.shape3), atol=1e-3)


@pytest.mark.parametrize(
    ("slope", "intercept", "low", "high", "dtype"),
    [
        (1.0, 0.0, 0.0, 3000.0, np.int16),  # unscaled integers
        (1.0, 0.0, 0.0, 40.0, np.int16),  # unscaled, small range: rounding alone would be 45 dB
        (1e-4, 0.0, 0.0, 0.3, np.float32),
        (1e-3, -2.0, -2.0, 1.5, np.float32),
        (0.5, 0.0, 0.0, 900.0, np.float32),
        (3.0, 100.0, 100.0, 60000.0, np.float32),
        (1.0, 0.0, -1e5, 2e5, np.float32),  # float beyond int16
    ],
)
def test_written_values_reproduce_the_float_result(
    tmp_path: Path,
    rng: np.random.Generator,
    slope: float,
    intercept: float,
    low: float,
    high: float,
    dtype: type,
) -> None:
    """Stored values × RescaleSlope + RescaleIntercept, decoded with pydicom alone, reproduce the
    float SR result to ≥ 60 dB PSNR."""
    sr = rng.uniform(low, high, size=(16, 12, 3)).astype(np.float32)
    vol = Volume(data=sr, affine=np.diag([0.5, 0.5, 2.0, 1.0]), dtype=np.dtype(dtype), fmt="dicom")
    out = write_dicom_series(vol, tmp_path / "out")
    back = np.stack(
        [
            d.pixel_array.T.astype(np.float64) * float(d.get("RescaleSlope", 1)) + float(d.get("RescaleIntercept", 0))
            for d in _headers(out)
        ],
        axis=2,
    )
    mse = float(np.mean((back - sr.astype(np.float64)) ** 2))
    psnr = 10 * np.log10((high - low) ** 2 / mse)
    assert psnr >= 60.0


def test_rewriting_a_derived_series_is_byte_identical(
    pydicom_files: Path, tmp_path: Path, rng: np.random.Generator
) -> None:
    mr_small_series(pydicom_files / "MR_small.dcm", tmp_path / "in", rng, n=2)
    sr = _refined(read_dicom_path(tmp_path / "in"), (2, 2, 1), rng)
    a, b = write_dicom_series(sr, tmp_path / "a"), write_dicom_series(sr, tmp_path / "b")
    names = sorted(p.name for p in a.iterdir())
    assert names and all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def test_compressed_source_gives_uncompressed_output(pydicom_files: Path, tmp_path: Path) -> None:
    src = tmp_path / "in" / "MR_small_RLE.dcm"
    src.parent.mkdir()
    shutil.copy(pydicom_files / "MR_small_RLE.dcm", src)
    vol = read_dicom_path(src)
    ds = _headers(write_dicom_series(vol, tmp_path / "out"))[0]
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    np.testing.assert_array_equal(ds.pixel_array.T, np.asarray(vol.data)[:, :, 0])


@needs_dciodvfy
@pytest.mark.parametrize("factors", [(2, 2, 1), (1, 1, 2)])
def test_dciodvfy_finds_no_new_error_for_mr_small(pydicom_files: Path, tmp_path: Path, factors: tuple) -> None:
    src = tmp_path / "in" / "MR_small.dcm"
    src.parent.mkdir()
    shutil.copy(pydicom_files / "MR_small.dcm", src)
    vol = read_dicom_path(src)
    out = write_dicom_series(_refined(vol, factors, np.random.default_rng(0)), tmp_path / "out")
    assert new_errors(src, out) == set()


@needs_dciodvfy
@pytest.mark.parametrize("factors", [(2, 2, 1), (1, 1, 2)])
def test_dciodvfy_finds_no_new_error_for_a_series(
    pydicom_files: Path, tmp_path: Path, rng: np.random.Generator, factors: tuple
) -> None:
    files = mr_small_series(pydicom_files / "MR_small.dcm", tmp_path / "in", rng)
    out = write_dicom_series(_refined(read_dicom_path(tmp_path / "in"), factors, rng), tmp_path / "out")
    assert new_errors(files[0], out) == set()
    ct = pydicom_files / "dicomdirtests" / "98892001" / "CT5N"
    out_ct = write_dicom_series(_refined(read_dicom_path(ct), factors, rng), tmp_path / "ct")
    assert new_errors(sorted(ct.iterdir())[0], out_ct) == set()


def test_enhance_writes_a_derived_series_and_refuses_a_sheared_grid(
    pydicom_files: Path,
    tmp_path: Path,
    rng: np.random.Generator,
    write_nifti_file: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mrisr.cli import main

    files = mr_small_series(pydicom_files / "MR_small.dcm", tmp_path / "in", rng, n=3, thickness=5.0, spacing=6.0)
    out = tmp_path / "out"
    base = ["enhance", "--out", str(out), "--no-figure", "--device", "cpu", "--scale", "4", "--adapt-steps", "2"]
    assert main([*base, str(tmp_path / "in")]) == 0, capsys.readouterr().err
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    derived = _headers(folder)
    source = pydicom.dcmread(files[0])
    assert len(derived) == 3 and (int(derived[0].Rows), int(derived[0].Columns)) == (256, 256)
    assert float(derived[0].SliceThickness) == 5.0
    assert derived[0].RepetitionTime == source.RepetitionTime and derived[0].EchoTime == source.EchoTime
    assert derived[0].SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    if DCIODVFY is not None:
        assert new_errors(files[0], folder) == set()
    sheared = np.array([[1.0, 0.3, 0, 5.0], [0, 1.0, 0, -3.0], [0, 0, 2.0, 1.0], [0, 0, 0, 1]])
    nii = write_nifti_file("sheared.nii.gz", rng.integers(0, 500, (8, 8, 3)).astype(np.int16), sheared)
    capsys.readouterr()
    assert main([*base, str(nii), "--format", "dicom"]) != 0
    err = capsys.readouterr().err
    assert f"{nii}: sheared grid" in " ".join(err.split())
    assert not list(out.glob("sheared*_sr"))


def test_image_derived_from_lossy_pixels_says_so(pydicom_files: Path, tmp_path: Path) -> None:
    """JPEG extended (lossy) source without LossyImageCompression: the derived image carries '01'."""
    src = tmp_path / "in" / "JPEG-lossy.dcm"
    src.parent.mkdir()
    lossy = pydicom.dcmread(pydicom_files / "JPEG-lossy.dcm")
    assert lossy.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.51"  # JPEG extended: lossy
    del lossy.LossyImageCompression
    lossy.save_as(src)
    ds = _headers(write_dicom_series(read_dicom_path(src), tmp_path / "out"))[0]
    assert ds.LossyImageCompression == "01"
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


@needs_dciodvfy
def test_dciodvfy_finds_no_error_in_a_series_made_from_nifti(
    grid_volume: Callable[[str], tuple[np.ndarray, np.ndarray]],
    write_nifti_file: Callable[..., Path],
    tmp_path: Path,
) -> None:
    """A NIfTI written as DICOM: the MR attributes a NIfTI file cannot give are present (type 2,
    empty) or the standard's catch-all terms (ScanningSequence RM, SequenceVariant NONE, ImageType
    value 3 OTHER)."""
    data, affine = grid_volume("oblique")
    out = write_dicom_series(read_nifti(write_nifti_file("o.nii.gz", data, affine)), tmp_path / "out")
    first = sorted(out.iterdir())[0]
    assert dciodvfy_errors(first) == set()
    ds = pydicom.dcmread(first)
    assert (ds.ScanningSequence, ds.SequenceVariant) == ("RM", "NONE")
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "OTHER"]


@pytest.mark.parametrize(("high", "dtype"), [(3000.0, np.int16), (40.0, np.int16), (0.3, np.float32)])
def test_dicom_as_written_is_what_a_reader_gets_back(
    tmp_path: Path, rng: np.random.Generator, high: float, dtype: type
) -> None:
    """The values metrics of a DICOM output should be computed on: those the series holds."""
    from mrisr.io.dicom import dicom_as_written

    sr = rng.uniform(0.0, high, size=(16, 12, 3)).astype(np.float32)
    vol = Volume(data=sr, affine=np.diag([0.5, 0.5, 2.0, 1.0]), dtype=np.dtype(dtype), fmt="dicom")
    back = read_dicom_path(write_dicom_series(vol, tmp_path / "out"))
    expect = dicom_as_written(sr, dtype)
    np.testing.assert_allclose(np.asarray(back.data, dtype=np.float64), expect, rtol=1e-6, atol=1e-6)
