"""Enhanced (multi-frame) MR input: exact geometry from the functional groups, one stack only, and a
derived classic MR series written from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_helpers import PHILIPS_MPRAGE, enhanced_mr, needs_dciodvfy, new_errors, philips_header

from mrisr.errors import UnsupportedDataError
from mrisr.geometry import corner_world, refine_affine
from mrisr.io import read_volume
from mrisr.io.dicom import LPS_TO_RAS, read_dicom_path, write_dicom_series

# rows along a unit vector tilted in x/y, columns perpendicular to it (an oblique plane)
ROW = np.array([0.8, 0.6, 0.0])
COL = np.cross(np.array([0.0, 0.6, 0.8]), ROW)
COL /= np.linalg.norm(COL)
NORMAL = np.cross(ROW, COL)
SPACING = (0.6, 0.9)  # between rows, between columns


def _positions(n: int, step: float = 2.5) -> list[np.ndarray]:
    origin = np.array([-20.0, 35.0, 12.5])
    return [origin + k * step * NORMAL for k in range(n)]


@pytest.mark.parametrize("shared", [False, True], ids=["per-frame", "shared"])
def test_voxels_lie_at_the_positions_of_their_frames(tmp_path: Path, rng: np.random.Generator, shared: bool) -> None:
    positions = _positions(5)
    order = [3, 0, 4, 1, 2]  # frames stored out of spatial order
    slopes = [1.0, 0.5, 2.0, 1.5, 0.25]
    path, stored = enhanced_mr(
        tmp_path / "enh" / "mf.dcm",
        rng,
        orientation=[*ROW, *COL],
        positions=[positions[k] for k in order],
        pixel_spacing=SPACING,
        slopes=slopes,
        shared_geometry=shared,
    )
    vol = read_volume(path)
    assert vol.shape3 == (10, 12, 5)  # (columns, rows, frames)
    for f, k in enumerate(order):
        ras = vol.affine @ np.array([0.0, 0.0, float(k), 1.0])
        np.testing.assert_allclose(LPS_TO_RAS[:3, :3] @ ras[:3], positions[k], atol=1e-6)
        np.testing.assert_allclose(vol.data[:, :, k], stored[f].T * slopes[f], rtol=1e-6)
    # one step along i is one column (PixelSpacing[1]) along the row direction, in LPS
    step_i = LPS_TO_RAS[:3, :3] @ vol.affine[:3, 0]
    np.testing.assert_allclose(step_i, ROW * SPACING[1], atol=1e-9)
    np.testing.assert_allclose(LPS_TO_RAS[:3, :3] @ vol.affine[:3, 1], COL * SPACING[0], atol=1e-9)


def test_real_philips_header_with_empty_pixels_fails_as_constant(tmp_path: Path) -> None:
    path = tmp_path / "philips" / "mprage.dcm"
    path.parent.mkdir()
    philips_header().save_as(path, enforce_file_format=True)
    assert PHILIPS_MPRAGE.exists()
    with pytest.raises(UnsupportedDataError, match="constant image") as info:
        read_dicom_path(path)
    assert info.value.path == path


def test_real_philips_geometry_is_read(tmp_path: Path) -> None:
    """The Philips header's own per-frame positions and orientation, with pixels put in."""
    ds = philips_header()
    n = 4
    ds.PerFrameFunctionalGroupsSequence = ds.PerFrameFunctionalGroupsSequence[:n]
    ds.NumberOfFrames, ds.Rows, ds.Columns = n, 8, 8
    ds.PixelData = np.arange(n * 64, dtype="<u2").tobytes()
    path = tmp_path / "p" / "mf.dcm"
    path.parent.mkdir()
    ds.save_as(path, enforce_file_format=True)
    vol = read_dicom_path(path)
    frames = ds.PerFrameFunctionalGroupsSequence
    lps = LPS_TO_RAS @ vol.affine
    for k in range(n):
        ipp = [float(v) for v in frames[k].PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose((lps @ [0, 0, k, 1])[:3], ipp, atol=1e-4)
        assert vol.data[0, 0, k] == pytest.approx(64 * k * 2.10793650793650, rel=1e-6)  # slope 2.1079...


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("orientations", "2 slice orientations"),
        ("stacks", "2 stacks"),
        ("repeats", "4 frames at 2 positions"),
    ],
)
def test_several_stacks_or_repeated_positions_are_refused(
    tmp_path: Path, rng: np.random.Generator, kind: str, reason: str
) -> None:
    positions = _positions(4)
    other = [*COL, *ROW]
    kwargs: dict = {}
    if kind == "orientations":
        kwargs["orientations"] = [[*ROW, *COL]] * 2 + [other] * 2
    if kind == "stacks":
        kwargs["stacks"] = ["1", "1", "2", "2"]
    if kind == "repeats":
        positions = positions[:2] * 2
    path, _ = enhanced_mr(
        tmp_path / "mf" / "x.dcm", rng, orientation=[*ROW, *COL], positions=positions, pixel_spacing=SPACING, **kwargs
    )
    with pytest.raises(UnsupportedDataError, match=reason) as info:
        read_dicom_path(path)
    assert info.value.path == path


def test_enhanced_input_gives_a_classic_derived_series(tmp_path: Path, rng: np.random.Generator) -> None:
    path, _ = enhanced_mr(
        tmp_path / "enh" / "mf.dcm", rng, orientation=[*ROW, *COL], positions=_positions(3), pixel_spacing=SPACING
    )
    vol = read_dicom_path(path)
    sr = vol.with_data(np.kron(np.asarray(vol.data), np.ones((2, 2, 1))), refine_affine(vol.affine, (2, 2, 1)))
    out = write_dicom_series(sr, tmp_path / "out")
    headers = sorted((pydicom.dcmread(p) for p in out.iterdir()), key=lambda d: int(d.InstanceNumber))
    source = pydicom.dcmread(path)
    assert len(headers) == 3
    for k, ds in enumerate(headers):
        assert ds.SOPClassUID == pydicom.uid.MRImageStorage
        assert "NumberOfFrames" not in ds and "PerFrameFunctionalGroupsSequence" not in ds
        (ref,) = ds.SourceImageSequence
        assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert int(ref.ReferencedFrameNumber) == k + 1
        assert float(ds.RepetitionTime) == pytest.approx(7.56930017471313)  # from the timing functional group
        assert float(ds.EchoTime) == pytest.approx(3.513)  # EffectiveEchoTime of the MR Echo group
        assert ds.ScanningSequence == "GR"  # EchoPulseSequence GRADIENT
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    back = read_dicom_path(out)
    np.testing.assert_allclose(corner_world(back.affine, back.shape3), corner_world(sr.affine, sr.shape3), atol=1e-4)


@needs_dciodvfy
@pytest.mark.parametrize("factors", [(2, 2, 1), (1, 1, 2)])
def test_dciodvfy_finds_no_new_error_for_an_enhanced_input(
    tmp_path: Path, rng: np.random.Generator, factors: tuple[int, int, int]
) -> None:
    """An Enhanced MR object with the real Philips header's attributes: the derived classic MR series
    has no error that dciodvfy does not find in the input."""
    ds = philips_header()
    n = 4
    ds.PerFrameFunctionalGroupsSequence = ds.PerFrameFunctionalGroupsSequence[:n]
    ds.NumberOfFrames, ds.Rows, ds.Columns = n, 12, 10
    ds.PixelData = rng.integers(0, 4000, size=(n, 12, 10)).astype("<u2").tobytes()
    path = tmp_path / "in" / "mf.dcm"
    path.parent.mkdir()
    ds.save_as(path, enforce_file_format=True)
    vol = read_dicom_path(path)
    data = np.kron(np.asarray(vol.data, dtype=np.float32), np.ones(factors, dtype=np.float32))
    out = write_dicom_series(vol.with_data(data, refine_affine(vol.affine, factors)), tmp_path / "out")
    assert new_errors(path, out) == set()


def test_orientation_noise_below_the_tolerance_is_one_stack(tmp_path: Path, rng: np.random.Generator) -> None:
    """Per-frame orientations differing by noise (2e-6) that straddles a rounding boundary
    (0.800049 / 0.800051) are one stack, as they are for classic slices."""
    noisy = [[*(ROW + d), *COL] for d in (4.9e-5, 5.1e-5, 4.9e-5, 5.1e-5)]
    path, _ = enhanced_mr(
        tmp_path / "mf" / "n.dcm",
        rng,
        orientation=noisy[0],
        orientations=noisy,
        positions=_positions(4),
        pixel_spacing=SPACING,
    )
    assert read_dicom_path(path).shape3 == (10, 12, 4)
