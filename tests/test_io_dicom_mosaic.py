"""Siemens mosaic input: tiles unpacked into a volume with the slices' real geometry, a series of
mosaics as 4D, mosaics that cannot be unpacked refused in one line, a classic derived series written."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from dicom_helpers import needs_dciodvfy, new_errors, siemens_mosaic

from mrisr.errors import InconsistentGeometryError, UnsupportedDataError
from mrisr.io import read_volume
from mrisr.io.dicom import LPS_TO_RAS, read_dicom_path, write_dicom_series
from mrisr.io.dicom.read import read_dicom_grid

ROW = np.array([0.8, 0.6, 0.0])  # oblique: rows along x/y
COL = np.cross(np.array([0.0, 0.6, 0.8]), ROW)
COL /= np.linalg.norm(COL)
SPACING = (0.7, 0.9)  # between rows, between columns (mm)
FIRST = np.array([-30.0, 12.0, 40.0])  # LPS centre of tile 0's first pixel
GAP = 2.5  # mm between slices


def _tiles(rng: np.random.Generator, n: int, shape: tuple[int, int] = (6, 5)) -> np.ndarray:
    """``n`` tiles of distinct values (each voxel can be found again by its value)."""
    return rng.permutation(np.arange(1, n * shape[0] * shape[1] + 1)).reshape(n, *shape).astype(np.uint16) + 100


def _mosaic(path: Path, tiles: np.ndarray, **kwargs: Any) -> Path:
    """A mosaic of ``tiles`` on the test grid (``kwargs`` override it, see ``siemens_mosaic``)."""
    grid: dict[str, Any] = {
        "row_dir": ROW,
        "col_dir": COL,
        "first_position": FIRST,
        "pixel_spacing": SPACING,
        "slice_spacing": GAP,
    }
    return siemens_mosaic(path, tiles, **(grid | kwargs))


def _world_ras(t: int, r: int, c: int, sign: float = 1.0) -> np.ndarray:
    lps = FIRST + c * SPACING[1] * ROW + r * SPACING[0] * COL + t * GAP * sign * np.cross(ROW, COL)
    return (LPS_TO_RAS @ np.append(lps, 1.0))[:3]


@pytest.mark.parametrize(
    ("n", "sign"), [(4, 1.0), (3, 1.0), (4, -1.0)], ids=["2x2", "one-blank-tile", "normal-flipped"]
)
def test_mosaic_tiles_are_slices_at_their_real_positions(
    tmp_path: Path, rng: np.random.Generator, n: int, sign: float
) -> None:
    tiles = _tiles(rng, n)
    path = _mosaic(
        tmp_path / "epi" / "mosaic.dcm",
        tiles,
        normal_sign=sign,
    )
    vol = read_dicom_path(path.parent)
    assert vol.data.shape == (5, 6, n)  # (columns, rows, slices) of a tile, not the 12 × 10 mosaic
    np.testing.assert_allclose(vol.spacing, (SPACING[1], SPACING[0], GAP), atol=1e-6)
    assert sorted(vol.data.reshape(-1).tolist()) == sorted(tiles.reshape(-1).tolist())  # no blank tile read
    inv = np.linalg.inv(vol.affine)
    for t, r, c in [(0, 0, 0), (n - 1, 5, 4), (1, 2, 3), (n - 1, 0, 4)]:
        world = _world_ras(t, r, c, sign)
        ijk = np.rint((inv @ np.append(world, 1.0))[:3]).astype(int)
        np.testing.assert_allclose(vol.affine @ np.append(ijk, 1.0), np.append(world, 1.0), atol=1e-4)
        assert vol.data[tuple(ijk)] == tiles[t, r, c], (t, r, c)
    affine, shape, _ = read_dicom_grid([path])  # the header-only grid (mrisr info, --target-spacing)
    assert shape == (5, 6, n)
    np.testing.assert_allclose(affine, vol.affine, atol=1e-9)


def test_a_series_of_mosaics_is_4d_in_instance_order(tmp_path: Path, rng: np.random.Generator) -> None:
    volumes = [_tiles(rng, 4) for _ in range(3)]
    for t, instance in enumerate([2, 3, 1]):  # written out of order
        _mosaic(
            tmp_path / "bold" / f"f{t}.dcm",
            volumes[instance - 1],
            instance=instance,
        )
    vol = read_volume(tmp_path / "bold")
    assert vol.data.shape == (5, 6, 4, 3)
    ijk = np.rint(np.linalg.inv(vol.affine) @ np.append(_world_ras(2, 4, 1), 1.0))[:3].astype(int)
    assert [int(vol.data[(*ijk, t)]) for t in range(3)] == [int(v[2, 4, 1]) for v in volumes]


def test_mosaics_on_different_grids_are_refused(tmp_path: Path, rng: np.random.Generator) -> None:
    for t, first in enumerate([FIRST, FIRST + 3.0]):
        _mosaic(
            tmp_path / "moved" / f"f{t}.dcm",
            _tiles(rng, 4),
            first_position=first,
            instance=t + 1,
        )
    with pytest.raises(InconsistentGeometryError, match="different grids"):
        read_volume(tmp_path / "moved")


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"csa": False}, "without a CSA image header"),
        ({"n_in_csa": 5}, "cannot hold 5 slices as 3×3 equal tiles"),
        ({"n_in_csa": 0}, "without a valid NumberOfImagesInMosaic"),
        ({"n_in_csa": 30000}, "claims 30000 slices"),
    ],
    ids=["no-csa", "count-vs-size", "zero-count", "huge-count"],
)
def test_a_mosaic_that_cannot_be_unpacked_is_refused_naming_the_file(
    tmp_path: Path, rng: np.random.Generator, kwargs: dict[str, object], reason: str
) -> None:
    path = _mosaic(
        tmp_path / "bad" / "mosaic.dcm",
        _tiles(rng, 4),
        **kwargs,
    )
    with pytest.raises(UnsupportedDataError, match=reason) as info:
        read_dicom_path(path)
    assert info.value.path == path
    assert "\n" not in str(info.value)


def test_derived_series_of_a_mosaic_is_classic_one_file_per_slice(tmp_path: Path, rng: np.random.Generator) -> None:
    tiles = _tiles(rng, 4)
    path = _mosaic(
        tmp_path / "epi" / "mosaic.dcm",
        tiles,
    )
    vol = read_dicom_path(path)
    out = write_dicom_series(vol, tmp_path / "derived")
    files = sorted(out.iterdir())
    assert len(files) == 4
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert (header.Rows, header.Columns) == (6, 5)
    assert "MOSAIC" not in [str(v) for v in header.ImageType]
    assert (0x0029, 0x1010) not in header  # the CSA header describes the mosaic, not these slices
    back = read_dicom_path(out)
    np.testing.assert_array_equal(back.data, vol.data)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-4)


# Real Siemens mosaics (not shipped: heudiconv's test data and Debian dicom3tools' examples), checked
# against dcm2niix 1.0.20220720 voxel by voxel (same values at the same world positions; dcm2niix
# flips j). Put the files in the folder named by MRISR_MOSAIC_DIR to run this test.
REAL_MOSAICS = {  # file: (shape, first three rows of the RAS affine)
    "axasc35.dcm": (
        (64, 64, 35),
        [-3.25, 0.0, 0.0, 104.0, 0.0, -3.231, -0.3888, 144.8681, 0.0, -0.351, 3.5789, -62.6852],
    ),
    "0051.dcm": (
        (72, 72, 20),
        [-2.9941, 0.0, -0.3767, 111.3659, 0.0, -3.0, 0.0, 138.5085, -0.1884, 0.0, 5.9882, -43.5686],
    ),
    "b0dwi_for_fmap+00001.dcm": (
        (150, 152, 81),
        [-1.4998, -0.0223, 0.0145, 122.4525, 0.0229, -1.498, 0.0745, 129.6347, 0.0134, 0.0747, 1.4981, -46.4975],
    ),
}


@pytest.mark.parametrize("name", sorted(REAL_MOSAICS))
def test_real_mosaics_match_dcm2niix_geometry(name: str) -> None:
    folder = os.environ.get("MRISR_MOSAIC_DIR")
    path = Path(folder) / name if folder else None
    if path is None or not path.is_file():
        pytest.skip(f"{name} not available (set MRISR_MOSAIC_DIR)")
    vol = read_dicom_path(path)
    shape, affine = REAL_MOSAICS[name]
    assert vol.data.shape == shape
    np.testing.assert_allclose(vol.affine[:3].ravel(), affine, atol=1e-3)


def test_info_and_enhance_see_the_volume_not_the_mosaic(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    from mrisr.cli import main

    path = _mosaic(
        tmp_path / "in" / "epi" / "mosaic.dcm",
        _tiles(rng, 4, (12, 10)),
    )
    assert main(["info", "--json", str(path.parent)]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["shape"] == [10, 12, 4]
    out = tmp_path / "out"
    assert (
        main(["-q", "enhance", str(path.parent), "--out", str(out), "--scale", "2", "--device", "cpu", "--no-figure"])
        == 0
    )
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    assert len(list(folder.iterdir())) == 4  # one classic file per slice
    sr = read_dicom_path(folder)
    assert sr.data.shape == (20, 24, 4)
    np.testing.assert_allclose(sr.spacing, (SPACING[1] / 2, SPACING[0] / 2, GAP), atol=1e-5)


@needs_dciodvfy
def test_derived_series_of_a_mosaic_has_no_new_dciodvfy_errors(tmp_path: Path, rng: np.random.Generator) -> None:
    path = _mosaic(tmp_path / "epi" / "mosaic.dcm", _tiles(rng, 4))
    out = write_dicom_series(read_dicom_path(path), tmp_path / "derived")
    assert new_errors(path, out) == set()


def test_a_mosaic_with_parallel_rows_and_columns_is_refused(tmp_path: Path, rng: np.random.Generator) -> None:
    path = _mosaic(tmp_path / "flat" / "mosaic.dcm", _tiles(rng, 4), col_dir=ROW, normal_sign=1.0)
    with pytest.raises(UnsupportedDataError, match="bad ImageOrientationPatient"):
        read_dicom_path(path)
