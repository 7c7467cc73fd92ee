"""Compressed DICOM pixel data: the values every transfer syntax decodes to, a quiet run free of the
native decoder's chatter, and the error naming what to install when no decoder is."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_helpers import jpeg_lossless_series
from pydicom.uid import generate_uid

from mrisr.errors import UnsupportedDataError
from mrisr.io.dicom import pixels as dicom_pixels
from mrisr.io.dicom import read_dicom_path, read_dicom_series


@pytest.mark.parametrize(
    "name",
    ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_bigendian.dcm"],
)
def test_lossless_syntaxes_decode_to_the_uncompressed_values(pydicom_files: Path, tmp_path: Path, name: str) -> None:
    reference = read_dicom_path(pydicom_files / "MR_small.dcm")
    vol = read_dicom_path(pydicom_files / name)
    np.testing.assert_array_equal(vol.data, reference.data)


def test_12bit_jpeg_extended_decodes_to_pydicom_reference_values(pydicom_files: Path) -> None:
    vol = read_dicom_path(pydicom_files / "JPGExtended.dcm")
    assert vol.data.shape == (256, 1024, 1)  # (columns, rows, slices)
    # pydicom's reference values for this file (arr[row, column]: 244 at [420, 140], 95 at [230, 120])
    assert vol.data[140, 420, 0] == 244
    assert vol.data[120, 230, 0] == 95


@pytest.mark.parametrize("precision", [12, 16])
def test_jpeg_lossless_series_decodes_exactly(tmp_path: Path, rng: np.random.Generator, precision: int) -> None:
    volume = rng.integers(0, 2**precision, size=(9, 7, 3))
    volume[0, 0, 0], volume[4, 3, 1] = 0, 2**precision - 1
    vol = read_dicom_series(jpeg_lossless_series(tmp_path / "jll", volume, precision=precision))
    np.testing.assert_array_equal(vol.data, volume.transpose(1, 0, 2))


def _jpeg_extended_series(source: Path, folder: Path, n: int = 2) -> Path:
    """``n`` slices 3 mm apart, each holding the (12-bit JPEG Extended) pixel data of ``source``."""
    base = pydicom.dcmread(source)
    folder.mkdir(parents=True)
    series = generate_uid(entropy_srcs=[str(folder)])
    for k in range(n):
        ds = copy.deepcopy(base)
        uid = generate_uid(entropy_srcs=[str(folder), str(k)])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.SeriesInstanceUID, ds.InstanceNumber, ds.Modality = series, k + 1, "MR"
        ds.ImagePositionPatient = [0.0, 0.0, 3.0 * k]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.save_as(folder / f"IM{k}.dcm", enforce_file_format=True)
    return folder


def _run_mrisr(*args: str) -> subprocess.CompletedProcess[str]:
    """``mrisr ARGS`` in a fresh process (what native libraries write to descriptor 2 is caught too)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), *sys.path])}
    code = "import sys; from mrisr.cli import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


@pytest.mark.slow
def test_quiet_run_on_a_12bit_jpeg_series_prints_only_error_lines(pydicom_files: Path, tmp_path: Path) -> None:
    series = _jpeg_extended_series(pydicom_files / "JPGExtended.dcm", tmp_path / "in" / "jpeg")
    broken = tmp_path / "in" / "broken.nii.gz"
    broken.write_bytes(b"not gzip")  # a study that fails: its error line must still come through
    run = _run_mrisr("-q", "info", str(series), str(broken))
    assert run.returncode == 1, run.stderr
    lines = run.stderr.splitlines()  # GDCM printed "Unsupported JPEG data precision 12" per slice
    assert len(lines) == 1 and lines[0].startswith("error: broken"), run.stderr
    out = tmp_path / "out"
    run = _run_mrisr("-q", "enhance", str(series), "--out", str(out), "--scale", "2", "--device", "cpu", "--no-figure")
    assert (run.returncode, run.stdout, run.stderr) == (0, "", "")
    (sr,) = [p for p in out.iterdir() if p.is_dir()]
    assert read_dicom_path(sr).data.shape == (512, 2048, 2)


def test_missing_decoder_names_what_to_install(
    pydicom_files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "jpeg.dcm"
    shutil.copy(pydicom_files / "JPGExtended.dcm", path)
    monkeypatch.setattr(dicom_pixels, "decoder_available", lambda ds: False, raising=False)
    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # pydicom decodes, as without SimpleITK
    monkeypatch.setattr(
        pydicom.dataset.Dataset, "pixel_array", property(lambda self: (_ for _ in ()).throw(RuntimeError("no plugin")))
    )
    with pytest.raises(UnsupportedDataError, match=r"pip install 'mrisr\[dicom-codecs\]'.*pylibjpeg-libjpeg") as info:
        read_dicom_path(path)
    assert info.value.path == path
