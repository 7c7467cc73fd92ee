"""MONOCHROME1 input: values are stored × slope + intercept (never inverted) in both readers, and a
derived series says MONOCHROME1 so that it displays as its source did."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_helpers import enhanced_mr, needs_dciodvfy, new_errors

from mrisr.io.dicom import pixels as dicom_pixels
from mrisr.io.dicom import read_dicom_path, read_dicom_series, write_dicom_series

SeriesMaker = Callable[..., list[Path]]


def _monochrome1(
    files: list[Path], rng: np.random.Generator, *, bits: int, signed: bool, slope: float, inter: float
) -> np.ndarray:
    """Rewrite ``files`` as MONOCHROME1 slices holding stored values 100..900; returns them
    ``(rows, columns, slices)``."""
    stored = []
    for path in files:
        ds = pydicom.dcmread(path)
        values = rng.integers(100, 901, size=(int(ds.Rows), int(ds.Columns)))
        values[0, 0], values[-1, -1] = 100, 900
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, int(signed)
        ds.RescaleSlope, ds.RescaleIntercept = slope, inter
        ds.PixelData = values.astype("<i2" if signed else "<u2").tobytes()
        ds.save_as(path, enforce_file_format=True)
        stored.append(values)
    return np.stack(stored, axis=-1)


@pytest.mark.parametrize(
    ("bits", "signed", "slope", "inter"),
    [(16, False, 1.0, 0.0), (12, False, 2.0, -50.0), (16, True, 0.5, 10.0)],
    ids=["u16", "u12-rescaled", "s16-rescaled"],
)
@pytest.mark.parametrize("decoder", ["pydicom", "gdcm-undone"])
def test_single_frame_monochrome1_keeps_physical_values_and_writes_monochrome1(
    axial_series: SeriesMaker,
    rng: np.random.Generator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    bits: int,
    signed: bool,
    slope: float,
    inter: float,
    decoder: str,
) -> None:
    files = axial_series("m1", [0.0, 2.0, 4.0])
    stored = _monochrome1(files, rng, bits=bits, signed=signed, slope=slope, inter=inter)
    if decoder == "gdcm-undone":  # as when pydicom has no plugin for the transfer syntax

        def no_codec(*args: object, **kwargs: object) -> np.ndarray:
            raise dicom_pixels._NoDecoderError("no plugin")

        monkeypatch.setattr(dicom_pixels, "_read_pixels_pydicom", no_codec)
    vol = read_dicom_series(files)
    expected = stored.transpose(1, 0, 2) * slope + inter  # (columns, rows, slices)
    np.testing.assert_allclose(vol.data, expected, atol=1e-4)
    assert float(vol.data.min()) == pytest.approx(100 * slope + inter)
    assert float(vol.data.max()) == pytest.approx(900 * slope + inter)

    out = write_dicom_series(vol, tmp_path / "derived")
    written = sorted(out.iterdir())
    assert {str(pydicom.dcmread(f, stop_before_pixels=True).PhotometricInterpretation) for f in written} == {
        "MONOCHROME1"
    }
    monkeypatch.undo()
    back = read_dicom_path(out)
    np.testing.assert_allclose(back.data, expected, atol=0.01)  # half a slope of the written scaling


def test_enhanced_mr_monochrome1_matches_the_single_frame_rule(tmp_path: Path, rng: np.random.Generator) -> None:
    normal = np.array([0.0, 0.0, 1.0])
    positions = [np.array([-20.0, 35.0, 12.5]) + k * 2.0 * normal for k in range(3)]
    path, stored = enhanced_mr(
        tmp_path / "enh" / "mf.dcm",
        rng,
        orientation=[1, 0, 0, 0, 1, 0],
        positions=positions,
        pixel_spacing=(0.6, 0.9),
        slopes=[2.0, 2.0, 2.0],
    )
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(path, enforce_file_format=True)
    vol = read_dicom_path(path)
    np.testing.assert_allclose(vol.data, stored.transpose(2, 1, 0) * 2.0, atol=1e-4)
    out = write_dicom_series(vol, tmp_path / "derived")
    header = pydicom.dcmread(sorted(out.iterdir())[0], stop_before_pixels=True)
    assert header.PhotometricInterpretation == "MONOCHROME1"
    np.testing.assert_allclose(read_dicom_path(out).data, vol.data, atol=1e-3)


def test_monochrome2_input_stays_monochrome2(axial_series: SeriesMaker, tmp_path: Path) -> None:
    vol = read_dicom_series(axial_series("m2", [0.0, 2.0]))
    out = write_dicom_series(vol, tmp_path / "derived")
    assert pydicom.dcmread(sorted(out.iterdir())[0]).PhotometricInterpretation == "MONOCHROME2"


@needs_dciodvfy
def test_monochrome1_derived_series_has_no_new_dciodvfy_errors(
    axial_series: SeriesMaker, rng: np.random.Generator, tmp_path: Path
) -> None:
    files = axial_series("m1v", [0.0, 2.0, 4.0])
    _monochrome1(files, rng, bits=12, signed=False, slope=1.0, inter=0.0)
    out = write_dicom_series(read_dicom_series(files), tmp_path / "derived")
    assert new_errors(files[0], out) == set()
