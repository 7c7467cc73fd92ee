"""NIfTI reading and writing: exact round trips, scaling, 4D step, bad files."""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrisr.errors import UnreadableFileError
from mrisr.fsutil import TMP_MARK
from mrisr.geometry import corner_world
from mrisr.io import Volume, read_volume
from mrisr.io.nifti import read_nifti, write_nifti

GridMaker = Callable[[str], tuple[np.ndarray, np.ndarray]]


@pytest.mark.parametrize("grid", ["oblique", "lps", "sagittal", "left_handed", "four_d", "two_d"])
def test_read_gives_file_index_order_and_affine(
    grid: str, grid_volume: GridMaker, write_nifti_file: Callable[..., Path]
) -> None:
    data, affine = grid_volume(grid)
    path = write_nifti_file(f"{grid}.nii.gz", data, affine)
    vol = read_nifti(path)
    expected = data[:, :, None] if data.ndim == 2 else data
    assert vol.data.shape == expected.shape
    np.testing.assert_array_equal(vol.data, expected)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-5)
    assert vol.dtype == np.int16
    assert vol.fmt == "nifti"


@pytest.mark.parametrize("grid", ["oblique", "lps", "sagittal", "left_handed", "four_d", "two_d"])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_round_trip_keeps_corners_and_values(
    grid: str, suffix: str, grid_volume: GridMaker, write_nifti_file: Callable[..., Path], tmp_path: Path
) -> None:
    data, affine = grid_volume(grid)
    src = read_nifti(write_nifti_file(f"in_{grid}.nii.gz", data, affine))
    out = write_nifti(src, tmp_path / f"out_{grid}{suffix}")
    back = read_nifti(out)
    np.testing.assert_allclose(corner_world(back.affine, back.shape3), corner_world(affine, src.shape3), atol=1e-4)
    np.testing.assert_array_equal(back.data, src.data)
    assert back.dtype == np.int16
    assert not [p for p in tmp_path.iterdir() if TMP_MARK in p.name]


def test_four_d_keeps_time_step(grid_volume: GridMaker, write_nifti_file: Callable[..., Path], tmp_path: Path) -> None:
    data, affine = grid_volume("four_d")
    src = read_nifti(write_nifti_file("fmri.nii.gz", data, affine, time_step=2.5))
    assert src.n_frames == 3
    np.testing.assert_array_equal(src.frame(1), data[..., 1])
    back = nib.load(str(write_nifti(src, tmp_path / "out.nii.gz")))
    assert back.header.get_zooms()[3] == pytest.approx(2.5)
    assert back.header.get_xyzt_units() == ("mm", "sec")


def test_scaled_integers_come_back_in_physical_units(tmp_path: Path, rng: np.random.Generator) -> None:
    raw = rng.integers(0, 1000, size=(4, 3, 2)).astype(np.int16)
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(0.5, -10.0)
    nib.save(img, str(tmp_path / "scaled.nii"))
    vol = read_nifti(tmp_path / "scaled.nii")
    np.testing.assert_allclose(vol.data, raw * 0.5 - 10.0)
    back = read_nifti(write_nifti(vol, tmp_path / "again.nii"))
    new_slope = back.meta["header"].get_slope_inter()[0]
    assert back.dtype == np.int16
    assert new_slope is not None and new_slope < 0.05
    np.testing.assert_allclose(back.data, raw * 0.5 - 10.0, atol=new_slope / 2 + 1e-6)
    assert not np.array_equal(back.data, np.rint(back.data))  # the half units survived


def test_real_values_in_an_integer_type_get_a_scaling_not_rounding_or_clipping(tmp_path: Path) -> None:
    values = np.array([[[1.4, 1.6, -40000.0, 70000.0]]])
    vol = Volume(data=values, affine=np.eye(4), dtype=np.int16, fmt="nifti")
    back = read_nifti(write_nifti(vol, tmp_path / "cast.nii.gz"))
    slope = back.meta["header"].get_slope_inter()[0]
    assert back.dtype == np.int16 and slope == pytest.approx(110000 / 65535, rel=2e-3)
    np.testing.assert_allclose(back.data.ravel(), values.ravel(), atol=slope / 2 + 1e-3)
    # Whole numbers that fit the type are stored as they are, unscaled.
    whole = Volume(data=np.array([[[1.0, -7.0, 300.0]]]), affine=np.eye(4), dtype=np.int16, fmt="nifti")
    img = nib.load(str(write_nifti(whole, tmp_path / "whole.nii.gz")))
    assert img.dataobj.slope == 1.0 and img.dataobj.inter == 0.0
    np.testing.assert_array_equal(np.asarray(img.dataobj.get_unscaled()).ravel(), [1, -7, 300])


def _psnr(test: np.ndarray, ref: np.ndarray) -> float:
    mse = float(np.mean((test.astype(np.float64) - ref.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(float(np.ptp(ref)) ** 2 / mse)


@pytest.mark.parametrize(
    ("dtype", "slope", "inter"),
    [
        (np.int16, 1.0, 0.0),
        (np.uint8, 1.0, 0.0),
        (np.int16, 1e-4, 0.0),
        (np.int16, 1e-3, 0.0),
        (np.int16, 1e-3, -2.0),
        (np.uint16, 0.5, 0.0),
        (np.int16, 0.5, 100.0),
        (np.int16, 3.0, 0.0),
        (np.int16, 3.0, -1024.0),
        (np.float32, 1.0, 0.0),
        (np.float64, 1.0, 0.0),
    ],
)
def test_written_values_keep_a_real_result_to_60_db(
    tmp_path: Path, rng: np.random.Generator, dtype: type, slope: float, inter: float
) -> None:
    """A real-valued result (what SR gives) written in the input's type, read back scaled."""
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    top = min(info.max, 1000) if info is not None else 1000
    raw = rng.integers(0, top, size=(12, 10, 4)).astype(dtype)
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(slope, inter)
    nib.save(img, str(tmp_path / "in.nii.gz"))
    vol = read_nifti(tmp_path / "in.nii.gz")
    result = vol.data.astype(np.float64) + rng.normal(0, 0.3 * slope, vol.data.shape)  # between stored steps
    out = write_nifti(vol.with_data(result, vol.affine), tmp_path / "out.nii.gz")
    back = nib.load(str(out))
    assert back.get_data_dtype() == (np.int16 if dtype == np.uint8 else dtype)
    assert _psnr(back.get_fdata(), result) >= 60.0
    assert len(np.unique(back.get_fdata())) > 0.9 * result.size  # not quantised onto a few levels


def test_load_volume_dispatches_on_suffix(grid_volume: GridMaker, write_nifti_file: Callable[..., Path]) -> None:
    data, affine = grid_volume("lps")
    vol = read_volume(write_nifti_file("x.NII.GZ", data, affine))
    np.testing.assert_array_equal(vol.data, data)


def test_truncated_gzip_is_reported_as_truncated(
    grid_volume: GridMaker, write_nifti_file: Callable[..., Path], tmp_path: Path
) -> None:
    data, affine = grid_volume("oblique")
    full = write_nifti_file("full.nii.gz", data, affine).read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(full[: len(full) // 2])
    with pytest.raises(UnreadableFileError, match="truncated") as info:
        read_nifti(cut)
    assert info.value.path == cut


def test_zero_byte_file_is_reported_as_empty(tmp_path: Path) -> None:
    empty = tmp_path / "empty.nii.gz"
    empty.touch()
    with pytest.raises(UnreadableFileError, match="empty") as info:
        read_nifti(empty)
    assert str(empty) in str(info.value)


def test_nii_gz_that_is_not_gzip(grid_volume: GridMaker, write_nifti_file: Callable[..., Path], tmp_path: Path) -> None:
    data, affine = grid_volume("oblique")
    plain = write_nifti_file("plain.nii", data, affine)
    fake = tmp_path / "fake.nii.gz"
    fake.write_bytes(plain.read_bytes())
    with pytest.raises(UnreadableFileError, match="gzip") as info:
        read_nifti(fake)
    assert info.value.path == fake


def test_text_file_named_nii_is_unreadable(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.nii"
    bogus.write_text("this is not an image\n" * 30)
    with pytest.raises(UnreadableFileError) as info:
        read_nifti(bogus)
    assert info.value.path == bogus


def test_truncated_uncompressed_nifti(
    grid_volume: GridMaker, write_nifti_file: Callable[..., Path], tmp_path: Path
) -> None:
    data, affine = grid_volume("oblique")
    full = gzip.decompress(write_nifti_file("full.nii.gz", data, affine).read_bytes())
    cut = tmp_path / "cut.nii"
    cut.write_bytes(full[:400])
    with pytest.raises(UnreadableFileError) as info:
        read_nifti(cut)
    assert info.value.path == cut


def _plain_nifti_bytes(data: np.ndarray) -> bytes:
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0]))
    img.header.set_data_offset(352)
    return bytes(img.header.binaryblock) + b"\0" * 4 + data.tobytes(order="F")


def test_multi_member_gzip_as_bgzip_writes_is_read_fully(tmp_path: Path, rng: np.random.Generator) -> None:
    data = rng.integers(0, 1000, (20, 16, 8)).astype(np.int16)
    raw = _plain_nifti_bytes(data)
    path = tmp_path / "bgzip.nii.gz"
    path.write_bytes(b"".join(gzip.compress(raw[i : i + 1500]) for i in range(0, len(raw), 1500)))
    np.testing.assert_array_equal(read_nifti(path).data, data)
    np.testing.assert_array_equal(np.asarray(nib.load(path).dataobj), data)  # nibabel agrees


def test_gzip_with_trailing_zero_padding_is_read_fully(tmp_path: Path, rng: np.random.Generator) -> None:
    data = rng.integers(0, 1000, (12, 10, 6)).astype(np.int16)
    path = tmp_path / "padded.nii.gz"
    path.write_bytes(gzip.compress(_plain_nifti_bytes(data)) + b"\0" * 4096)
    np.testing.assert_array_equal(read_nifti(path).data, data)
    np.testing.assert_array_equal(np.asarray(nib.load(path).dataobj), data)


def test_short_multi_member_gzip_is_still_truncated(tmp_path: Path, rng: np.random.Generator) -> None:
    raw = _plain_nifti_bytes(rng.integers(0, 1000, (12, 10, 6)).astype(np.int16))
    path = tmp_path / "short.nii.gz"
    path.write_bytes(gzip.compress(raw[:600]) + gzip.compress(raw[600:900]) + b"\0" * 64)
    with pytest.raises(UnreadableFileError, match="truncated"):
        read_nifti(path)


_HUGE_HEADER_SCRIPT = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from mrisr.errors import UnreadableFileError
from mrisr.io.nifti import read_nifti
try:
    read_nifti(sys.argv[1])
except UnreadableFileError as exc:
    print(exc.reason)
"""


@pytest.mark.parametrize("shape", [(1000, 1000, 1000), (600, 600, 600), (200, 200, 200)])
def test_tiny_gz_promising_gigabytes_is_refused_before_allocating(tmp_path: Path, shape: tuple[int, ...]) -> None:
    """Header of 1000³ (8 GB), 600³ (1.7 GB) or 200³ float64 in a file of about a kilobyte: refused as
    truncated without the allocation (the child may map at most 3 GiB)."""
    import subprocess
    import sys

    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.float64)
    hdr.set_data_shape(shape)
    hdr.set_data_offset(352)
    path = tmp_path / "bomb.nii.gz"
    path.write_bytes(gzip.compress(bytes(hdr.binaryblock) + b"\0" * 4 + np.arange(100.0).tobytes()))
    assert path.stat().st_size < 2000
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = subprocess.run(
        [sys.executable, "-c", _HUGE_HEADER_SCRIPT, str(path)], capture_output=True, text=True, env=env, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "truncated" in run.stdout and "promises" in run.stdout


# -- spatial units (issue 27 item 4): the contract is mm, whatever xyzt_units says ------------------

#: An oblique grid of 0.5 × 0.6 × 2 units per voxel, origin off zero.
_UNIT_AFFINE = np.array(
    [
        [0.0, 0.0, 2.0, 0.01],
        [0.5 * np.cos(0.3), -0.6 * np.sin(0.3), 0.0, -0.02],
        [0.5 * np.sin(0.3), 0.6 * np.cos(0.3), 0.0, 0.03],
        [0, 0, 0, 1],
    ]
)


def _unit_file(path: Path, unit: str, *, time: str = "sec", shape: tuple[int, ...] = (6, 5, 4)) -> Path:
    data = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    img = nib.Nifti1Image(data, _UNIT_AFFINE)
    img.header.set_qform(_UNIT_AFFINE, code=1)  # both codes set: each must be converted
    img.header.set_xyzt_units(unit, time)
    if len(shape) == 4:
        img.header.set_zooms((*img.header.get_zooms()[:3], 2.5))
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize(("unit", "mm"), [("meter", 1000.0), ("micron", 0.001), ("mm", 1.0), ("unknown", 1.0)])
def test_spatial_unit_is_converted_to_mm_on_reading(tmp_path: Path, unit: str, mm: float) -> None:
    vol = read_nifti(_unit_file(tmp_path / "u.nii.gz", unit, time="msec"))
    expected = np.diag([mm, mm, mm, 1.0]) @ _UNIT_AFFINE
    np.testing.assert_allclose(vol.affine, expected, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(vol.spacing, np.array([0.5, 0.6, 2.0]) * mm, rtol=1e-6)
    assert vol.meta["header"].get_xyzt_units() == ("mm", "msec")  # time unit kept, never read as a length


@pytest.mark.parametrize("unit", ["meter", "micron"])
def test_output_of_a_metre_or_micrometre_input_says_mm_at_the_same_physical_points(tmp_path: Path, unit: str) -> None:
    from mrisr.geometry import refine_affine

    mm = {"meter": 1000.0, "micron": 0.001}[unit]
    vol = read_nifti(_unit_file(tmp_path / "u.nii.gz", unit))
    fine = refine_affine(vol.affine, (2, 2, 1))
    out = write_nifti(vol.with_data(np.zeros((12, 10, 4), np.float32), fine), tmp_path / "o.nii.gz")
    back = nib.load(str(out))
    assert back.header.get_xyzt_units() == ("mm", "sec")
    assert int(back.header["qform_code"]) == 1 and int(back.header["sform_code"]) == 2
    np.testing.assert_allclose(back.header.get_qform(), back.header.get_sform(), rtol=1e-5, atol=1e-6 * mm)
    # Output voxel i along a refined axis has its centre at input index (i + 0.5) / 2 - 0.5.
    ijk = np.array([[0, 0, 0, 1], [5, 3, 2, 1], [11, 9, 3, 1]], dtype=float).T
    in_ijk = ijk.copy()
    in_ijk[:2] = (ijk[:2] + 0.5) / 2 - 0.5
    physical_mm = (_UNIT_AFFINE @ in_ijk)[:3] * mm  # where the input file puts them, in mm
    np.testing.assert_allclose((back.affine @ ijk)[:3], physical_mm, rtol=1e-5, atol=1e-6 * mm)
    np.testing.assert_allclose(back.header.get_zooms(), np.array([0.25, 0.3, 2.0]) * mm, rtol=1e-5)


def test_four_d_metre_input_keeps_its_time_step_and_unit(tmp_path: Path) -> None:
    vol = read_nifti(_unit_file(tmp_path / "u.nii.gz", "meter", time="msec", shape=(4, 3, 2, 3)))
    assert vol.n_frames == 3
    np.testing.assert_allclose(vol.spacing, [500.0, 600.0, 2000.0], rtol=1e-6)
    back = nib.load(str(write_nifti(vol, tmp_path / "o.nii.gz")))
    assert back.header.get_xyzt_units() == ("mm", "msec")
    np.testing.assert_allclose(back.header.get_zooms(), [500.0, 600.0, 2000.0, 2.5], rtol=1e-6)
    np.testing.assert_allclose(back.affine, np.diag([1000.0, 1000.0, 1000.0, 1.0]) @ _UNIT_AFFINE, rtol=1e-6)


def test_dicom_of_a_metre_input_has_its_pixel_spacing_in_mm(tmp_path: Path) -> None:
    import pydicom

    from mrisr.io.dicom import write_dicom_series

    shape = (6, 5, 3)
    img = nib.Nifti1Image(np.arange(90, dtype=np.int16).reshape(shape), np.diag([0.0005, 0.0007, 0.003, 1.0]))
    img.header.set_xyzt_units("meter", "sec")
    nib.save(img, str(tmp_path / "m.nii.gz"))
    folder = write_dicom_series(read_nifti(tmp_path / "m.nii.gz"), tmp_path / "dcm")
    ds = pydicom.dcmread(sorted(folder.iterdir())[0])
    # PixelSpacing is (between rows = along j, between columns = along i), in mm.
    np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], [0.7, 0.5], rtol=1e-5)
    assert float(ds.SpacingBetweenSlices) == pytest.approx(3.0, rel=1e-5)


def test_target_spacing_of_a_micrometre_input_picks_factors_from_mm(tmp_path: Path) -> None:
    from mrisr.discovery import find_studies
    from mrisr.enhance.spacing import plan_target_spacing

    img = nib.Nifti1Image(np.ones((8, 8, 4), np.int16), np.diag([2000.0, 2000.0, 3000.0, 1.0]))
    img.header.set_xyzt_units("micron", "sec")
    nib.save(img, str(tmp_path / "um.nii.gz"))
    groups, unreadable = plan_target_spacing(find_studies([tmp_path / "um.nii.gz"]), (1.0, 1.0, 3.0))
    assert not unreadable
    assert [g for g, _ in groups] == [(2, 2, 1)]


# -- NIfTI-2 when NIfTI-1 cannot hold the grid (issue 27 item 9) -------------------------------------


@pytest.mark.parametrize("source", ["nifti2", "nifti1", "none"])
def test_an_axis_over_32767_voxels_is_written_as_nifti2(tmp_path: Path, source: str) -> None:
    affine = np.array([[0.0, 0.0, 1.5, -3.0], [0.25, 0.0, 0.0, 7.0], [0.0, -0.8, 0.0, 11.0], [0, 0, 0, 1]])
    small = np.arange(12, dtype=np.float32).reshape(12, 1, 1)
    if source == "none":
        vol = Volume(data=small, affine=affine, dtype=np.float32, fmt="dicom")
    else:
        kind = nib.Nifti2Image if source == "nifti2" else nib.Nifti1Image
        img = kind(small, affine)
        img.header.set_xyzt_units("mm", "sec")
        img.header["descrip"] = b"kept"
        nib.save(img, str(tmp_path / "in.nii"))
        vol = read_nifti(tmp_path / "in.nii")
    values = np.linspace(-5.0, 5.0, 40000, dtype=np.float32).reshape(40000, 1, 1)
    out = write_nifti(vol.with_data(values, affine), tmp_path / "long.nii.gz", dtype=np.float32)
    back = nib.load(str(out))
    assert isinstance(back, nib.Nifti2Image) and back.shape == (40000, 1, 1)
    np.testing.assert_allclose(back.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(back.dataobj), values)
    assert back.header.get_xyzt_units()[0] == "mm"
    if source != "none":
        assert back.header["descrip"].tobytes().startswith(b"kept")
    again = read_nifti(out)
    np.testing.assert_allclose(again.affine, affine, atol=1e-6)
    # The control: a grid NIfTI-1 holds stays NIfTI-1, whatever the input's kind.
    short = nib.load(str(write_nifti(vol.with_data(values[:32767], affine), tmp_path / "short.nii.gz")))
    assert type(short) is nib.Nifti1Image
