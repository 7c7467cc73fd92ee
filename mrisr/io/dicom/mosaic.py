"""Siemens mosaic images: one classic single-frame header per slice tiled in the mosaic.

A Siemens mosaic (ImageType holding ``MOSAIC``: EPI, fMRI, DWI, ASL) stores a whole 3D volume as one
2D image: its ``n`` slices of ``r × c`` pixels are tiled row by row, left to right, in a square of
``m × m`` tiles, ``m = ceil(sqrt(n))`` (unused tiles are blank), so that the image has ``m·r`` rows
and ``m·c`` columns. ``n`` is NumberOfImagesInMosaic in the Siemens CSA image header (private
element (0029,xx10) of the creator ``SIEMENS CSA HEADER``), which also holds SliceNormalVector, the
direction in which the tiles follow each other.

Geometry (as nibabel's ``MosaicWrapper`` and dcm2niix compute it). The mosaic's
ImagePositionPatient is the centre of the first pixel of an image of the *mosaic's* size, centred
on the real slices: the first tile's first pixel (tile 0 of the volume) lies at::

    P0 = IPP + col_dir · PixelSpacing[0] · (m·r − r) / 2 + row_dir · PixelSpacing[1] · (m·c − c) / 2

(``row_dir``, ``col_dir``: ImageOrientationPatient[0:3] and [3:6], LPS), and tile ``t`` at
``P0 + t · d · normal``, with ``normal`` the cross product of the row and column directions signed as
the CSA SliceNormalVector, and ``d`` SpacingBetweenSlices (else SliceThickness) in mm.

:func:`split_mosaic` gives each tile a classic header (Rows/Columns of the tile, its own
ImagePositionPatient, ImageType without ``MOSAIC``), so that one reading path places every slice by
its own position (as the frames of an Enhanced object, :mod:`mrisr.io.dicom.enhanced`). A mosaic
that cannot be unpacked (no CSA header or no NumberOfImagesInMosaic, a size that is not ``m`` tiles
per side, a slice normal at odds with the orientation) is refused naming the file and the reason.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import DSfloat

from mrisr.errors import UnsupportedDataError
from mrisr.io.dicom.source import clean_header

_MAX_SLICES = 1024  # far above any scanner's slices per volume; a larger count is a corrupt or hostile header
_NORMAL_TOL = 1e-3  # |1 − |cos|| between the CSA slice normal and row × column that counts as parallel


def is_mosaic(ds: Dataset) -> bool:
    """True for a Siemens mosaic image (ImageType holds ``MOSAIC``)."""
    value = ds.get("ImageType")
    values = value if isinstance(value, (list, tuple, MultiValue)) else [value]
    return any(str(v).strip().upper() == "MOSAIC" for v in values if v is not None)


@dataclass(frozen=True)
class MosaicLayout:
    """How the slices are tiled in one mosaic image.

    Attributes:
        count: Number of slices (NumberOfImagesInMosaic).
        per_side: Tiles per row and per column of the mosaic, ``ceil(sqrt(count))``.
        tile: Size of one slice, ``(rows, columns)``.
    """

    count: int
    per_side: int
    tile: tuple[int, int]

    def corner(self, t: int) -> tuple[int, int]:
        """``(row, column)`` of the first pixel of tile ``t`` (0-based) in the mosaic image."""
        return (t // self.per_side) * self.tile[0], (t % self.per_side) * self.tile[1]

    def cut(self, image: np.ndarray, t: int) -> np.ndarray:
        """Tile ``t`` of a mosaic ``image`` ``(rows, columns)``."""
        r0, c0 = self.corner(t)
        return image[r0 : r0 + self.tile[0], c0 : c0 + self.tile[1]]


@dataclass(frozen=True)
class Tile:
    """One slice of a mosaic as a classic slice.

    Attributes:
        header: Classic single-frame header (no pixel data, no private tags) with the tile's size
            and position.
        index: 0-based tile number in the mosaic.
        layout: The mosaic's layout (to cut the tile out of the decoded image).
    """

    header: Dataset
    index: int
    layout: MosaicLayout


def _csa_image_header(path: Path, ds: Dataset) -> dict:
    """The parsed CSA image header.

    Raises:
        UnsupportedDataError: None present, or one nibabel cannot parse.
    """
    with warnings.catch_warnings():  # nibabel.nicom warns on import that its DICOM readers are experimental
        warnings.simplefilter("ignore")
        from nibabel.nicom import csareader

    try:
        csa = csareader.get_csa_header(ds, "image")
    except Exception as exc:  # csareader raises CSAReadError, struct.error, AssertionError ... on a bad blob
        raise UnsupportedDataError(path, f"Siemens mosaic with an unreadable CSA image header ({exc})") from exc
    if csa is None:
        raise UnsupportedDataError(
            path, "Siemens mosaic without a CSA image header (anonymised?): cannot tell how many slices it tiles"
        )
    return csa


def _csa_items(csa: dict, name: str) -> list:
    """The items of CSA tag ``name`` (empty when absent)."""
    try:
        return list(csa["tags"][name]["items"])
    except (KeyError, TypeError):
        return []


def _csa_number(path: Path, csa: dict, name: str) -> float | None:
    items = _csa_items(csa, name)
    if not items:
        return None
    try:
        return float(items[0])
    except (TypeError, ValueError) as exc:
        raise UnsupportedDataError(path, f"Siemens mosaic with a bad CSA {name} {items[0]!r}") from exc


def _csa_vector(path: Path, csa: dict, name: str) -> np.ndarray | None:
    items = _csa_items(csa, name)
    if not items:
        return None
    try:
        vec = np.array([float(v) for v in items], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise UnsupportedDataError(path, f"Siemens mosaic with a bad CSA {name} {items!r}") from exc
    if vec.shape != (3,) or not np.isfinite(vec).all() or np.linalg.norm(vec) == 0:
        raise UnsupportedDataError(path, f"Siemens mosaic with a bad CSA {name} {items!r}")
    return vec


def _floats(ds: Dataset, keyword: str, n: int, path: Path) -> np.ndarray:
    try:
        vals = np.array([float(v) for v in ds.get(keyword) or ()], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise UnsupportedDataError(path, f"Siemens mosaic with a bad {keyword} {ds.get(keyword)!r}") from exc
    if vals.shape != (n,) or not np.isfinite(vals).all():
        raise UnsupportedDataError(path, f"Siemens mosaic without a usable {keyword} ({ds.get(keyword)!r})")
    return vals


def _slice_spacing(ds: Dataset, path: Path) -> float:
    """SpacingBetweenSlices, else SliceThickness (mm), as dcm2niix and nibabel take it."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            value = float(ds.get(keyword) or 0.0)
        except (TypeError, ValueError):
            continue
        if value > 0 and np.isfinite(value):
            return value
    raise UnsupportedDataError(
        path, "Siemens mosaic without SpacingBetweenSlices or SliceThickness: cannot place its slices"
    )


def mosaic_layout(path: Path, ds: Dataset, csa: dict) -> MosaicLayout:
    """The tiling of the mosaic ``ds`` (from its parsed CSA image header ``csa`` and Rows/Columns).

    Raises:
        UnsupportedDataError: No NumberOfImagesInMosaic, or Rows/Columns that are not
            ``ceil(sqrt(n))`` tiles per side.
    """
    n = _csa_number(path, csa, "NumberOfImagesInMosaic")
    if n is None or n < 1 or not float(n).is_integer():
        raise UnsupportedDataError(
            path, f"Siemens mosaic without a valid NumberOfImagesInMosaic in its CSA header ({n!r})"
        )
    count = int(n)
    if count > _MAX_SLICES:
        raise UnsupportedDataError(
            path,
            f"Siemens mosaic claims {count} slices (NumberOfImagesInMosaic; more than {_MAX_SLICES} is not credible)",
        )
    per_side = math.ceil(math.sqrt(count))
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError) as exc:
        raise UnsupportedDataError(path, "Siemens mosaic without Rows/Columns") from exc
    if rows % per_side or cols % per_side or rows < per_side or cols < per_side:
        raise UnsupportedDataError(
            path,
            f"Siemens mosaic of {rows}×{cols} pixels cannot hold {count} slices as {per_side}×{per_side} "
            "equal tiles (NumberOfImagesInMosaic inconsistent with Rows/Columns)",
        )
    return MosaicLayout(count=count, per_side=per_side, tile=(rows // per_side, cols // per_side))


def split_mosaic(path: Path, ds: Dataset) -> list[Tile]:
    """Classic headers of the slices of the mosaic ``ds``, in tile order (see the module docstring).

    Raises:
        UnsupportedDataError: A mosaic that cannot be unpacked (see :func:`mosaic_layout`), or one
            without a usable position, orientation, pixel spacing or slice spacing, or whose CSA
            SliceNormalVector is not along the normal of its ImageOrientationPatient.
    """
    csa = _csa_image_header(path, ds)
    layout = mosaic_layout(path, ds, csa)
    iop = _floats(ds, "ImageOrientationPatient", 6, path)
    ipp = _floats(ds, "ImagePositionPatient", 3, path)
    spacing = _floats(ds, "PixelSpacing", 2, path)
    row_dir, col_dir = iop[:3], iop[3:]
    if min(np.linalg.norm(row_dir), np.linalg.norm(col_dir)) < 0.5:
        raise UnsupportedDataError(path, f"Siemens mosaic with a bad ImageOrientationPatient {list(iop)}")
    row_dir, col_dir = row_dir / np.linalg.norm(row_dir), col_dir / np.linalg.norm(col_dir)
    normal = np.cross(row_dir, col_dir)
    if np.linalg.norm(normal) < 0.5:  # rows and columns (nearly) parallel: no slice normal
        raise UnsupportedDataError(path, f"Siemens mosaic with a bad ImageOrientationPatient {list(iop)}")
    normal /= np.linalg.norm(normal)
    csa_normal = _csa_vector(path, csa, "SliceNormalVector")
    if csa_normal is not None:
        cos = float(normal @ csa_normal / np.linalg.norm(csa_normal))
        if abs(abs(cos) - 1.0) > _NORMAL_TOL:
            raise UnsupportedDataError(
                path,
                f"Siemens mosaic whose CSA SliceNormalVector {list(np.round(csa_normal, 5))} is not along the "
                f"normal of its ImageOrientationPatient {list(np.round(normal, 5))}",
            )
        if cos < 0:
            normal = -normal
    rows, cols = int(ds.Rows), int(ds.Columns)
    tile_rows, tile_cols = layout.tile
    first = ipp + col_dir * spacing[0] * (rows - tile_rows) / 2.0 + row_dir * spacing[1] * (cols - tile_cols) / 2.0
    step = normal * _slice_spacing(ds, path)
    base = clean_header(ds, exclude=frozenset({"PixelData"}))
    base.Rows, base.Columns = tile_rows, tile_cols
    image_type = [str(v) for v in (ds.get("ImageType") or []) if str(v).strip().upper() != "MOSAIC"]
    if image_type:
        base.ImageType = image_type
    tiles = []
    for t in range(layout.count):
        header = copy.deepcopy(base)
        position = first + t * step
        header.ImagePositionPatient = [DSfloat(float(v), auto_format=True) for v in position]
        header.SliceLocation = DSfloat(float(normal @ position), auto_format=True)
        tiles.append(Tile(header=header, index=t, layout=layout))
    return tiles
