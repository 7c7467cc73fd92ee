"""Shared test fixtures: tiny seeded volumes with known affines, NIfTI and DICOM file makers.

Every grid here is small (at most 6×5×4 voxels, 3 frames) so that tests run in milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def _rotation(axis: Sequence[float], degrees: float) -> np.ndarray:
    a = np.asarray(axis, dtype=float)
    a /= np.linalg.norm(a)
    t = np.deg2rad(degrees)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * (k @ k)


def _affine(linear: np.ndarray, origin: Sequence[float]) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = linear
    a[:3, 3] = origin
    return a


GRIDS: dict[str, tuple[tuple[int, ...], np.ndarray]] = {
    # voxel axes rotated 30° about (1, 2, 3), anisotropic voxels 0.9 × 1.1 × 2.5 mm
    "oblique": ((6, 5, 4), _affine(_rotation((1, 2, 3), 30) @ np.diag([0.9, 1.1, 2.5]), (-12.3, 40.1, 7.7))),
    # i to the Left, j to the Posterior (how DICOM stores an axial slice)
    "lps": ((6, 5, 4), _affine(np.diag([-0.8, -0.7, 3.0]), (50.0, 60.0, -20.0))),
    # i: posterior→anterior, j: superior→inferior, k: left→right
    "sagittal": ((6, 5, 4), _affine(np.array([[0, 0, 4.0], [1.2, 0, 0], [0, -1.3, 0]]), (-8.0, -30.0, 45.0))),
    # left-handed (radiological) grid: i to the Left, j anterior, k superior
    "left_handed": ((6, 5, 4), _affine(np.diag([-1.0, 1.5, 2.0]), (3.0, -4.0, 5.0))),
    "four_d": ((6, 5, 4, 3), _affine(_rotation((0, 0, 1), 20) @ np.diag([1.0, 1.0, 2.0]), (1.0, 2.0, 3.0))),
    "two_d": ((6, 5), _affine(np.diag([0.5, 0.6, 1.0]), (-1.5, 2.5, 0.0))),
}
"""name → (array shape, 4×4 RAS affine in mm) of the synthetic test grids."""

THREE_D_GRIDS = ("oblique", "lps", "sagittal", "left_handed")


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator (same numbers in every test run)."""
    return np.random.default_rng(20240601)


def random_int16(rng: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
    """Distinct-ish int16 values spanning negatives, so that a flip or transpose changes the array."""
    return rng.integers(-1200, 3000, size=tuple(shape)).astype(np.int16)


@pytest.fixture
def grid_volume(rng: np.random.Generator) -> Callable[[str], tuple[np.ndarray, np.ndarray]]:
    """Factory: ``grid_volume(name)`` → (int16 data, affine) for a grid of :data:`GRIDS`."""

    def make(name: str) -> tuple[np.ndarray, np.ndarray]:
        shape, affine = GRIDS[name]
        return random_int16(rng, shape), affine.copy()

    return make


@pytest.fixture
def write_nifti_file(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``write_nifti_file(name, data, affine, *, time_step=None)`` → path of a .nii.gz written
    with nibabel (sform and qform set, code 1), independent of :mod:`mrisr.io.nifti`."""

    def write(name: str, data: np.ndarray, affine: np.ndarray, *, time_step: float | None = None) -> Path:
        img = nib.Nifti1Image(data, affine)
        img.set_sform(affine, code=1)
        img.set_qform(affine, code=1)
        if time_step is not None:
            zooms = list(img.header.get_zooms())
            zooms[3] = time_step
            img.header.set_zooms(zooms)
            img.header.set_xyzt_units("mm", "sec")
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(img, str(path))
        return path

    return write


@pytest.fixture(scope="session")
def pydicom_files() -> Path:
    """The folder of the test files shipped with pydicom (``pydicom/data/test_files``)."""
    from pydicom.data import get_testdata_file

    mr_small = get_testdata_file("MR_small.dcm")
    assert mr_small is not None
    return Path(mr_small).parent


def write_dicom_slice(
    path: Path,
    pixels: np.ndarray,
    *,
    series_uid: str,
    position: Sequence[float],
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    pixel_spacing: Sequence[float] = (1.0, 1.0),
    instance: int = 1,
    tags: dict[str, str] | None = None,
) -> Path:
    """Write one uncompressed MR slice with pydicom; ``pixels`` is ``(rows, columns)`` int16."""
    meta = FileMetaDataset()
    sop_uid = generate_uid()
    meta.MediaStorageSOPClassUID = pydicom.uid.MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = pydicom.uid.MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.Modality = "MR"
    ds.PatientName = "Test^Patient"
    ds.PatientID = "P001"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 7
    ds.SeriesDescription = "T2 axial"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [float(v) for v in pixel_spacing]
    ds.SliceThickness = 2.0
    for kw, value in (tags or {}).items():
        setattr(ds, kw, value)
    arr = np.ascontiguousarray(pixels, dtype="<i2")
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.PixelData = arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


@pytest.fixture
def axial_series(tmp_path: Path, rng: np.random.Generator) -> Callable[..., list[Path]]:
    """Factory: ``axial_series(folder, z_positions, *, uid=None, names=None, shape=(4, 5), tags=None)``
    writes one axial slice of ``shape`` (rows, columns) per LPS z position (0.5 mm between rows, 0.8 mm
    between columns, first pixel at x=-10, y=20, file names ``IM000.dcm``... unless ``names``) and
    returns the files."""

    def make(
        folder: str | Path,
        z_positions: Sequence[float],
        *,
        uid: str | None = None,
        names: Sequence[str] | None = None,
        shape: tuple[int, int] = (4, 5),
        tags: dict[str, str] | None = None,
    ) -> list[Path]:
        series_uid = uid or generate_uid()
        out = tmp_path / folder
        file_names = list(names) if names is not None else [f"IM{n:03d}.dcm" for n in range(len(z_positions))]
        return [
            write_dicom_slice(
                out / file_names[n],
                random_int16(rng, shape),
                series_uid=series_uid,
                position=(-10.0, 20.0, z),
                pixel_spacing=(0.5, 0.8),
                instance=n + 1,
                tags=tags,
            )
            for n, z in enumerate(z_positions)
        ]

    return make
