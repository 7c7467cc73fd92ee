"""MetaImage (``.mha``, ``.mhd``) and NRRD (``.nrrd``, ``.nhdr``) reading through SimpleITK,
honouring the volume contract of :mod:`mrisr.io`.

ITK's physical space is LPS+ in mm (its NRRD reader converts a file's ``space`` to it). A voxel with
index ``(i, j, k)`` (``i`` the fastest-varying in the file) lies at::

    LPS = origin + D · diag(spacing) · (i, j, k)

with ``D`` the direction cosines (columns: the axes' directions); the RAS affine is
``LPS_TO_RAS · [[D · diag(spacing), origin], [0, 1]]`` with the one LPS→RAS matrix of
:mod:`mrisr.io.dicom`. A 2D image is a 3D volume of depth 1 (unit step along the normal); a 4D
image's 4th axis is its frames, and must not mix with space.

Outputs are written as NIfTI (``--format same`` gives NIfTI for these inputs): the same RAS affine,
the values in the same type, without a scaling when they fit it.

SimpleITK is imported inside the functions (``mrisr --help`` stays light).
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from mrisr.errors import UnreadableFileError, UnsupportedDataError
from mrisr.io import Volume
from mrisr.io.formats import itk_format

log = logging.getLogger(__name__)


def _reader(path: Path) -> Any:
    """A SimpleITK file reader of ``path`` with the header read.

    Raises:
        UnreadableFileError: Empty file, or one SimpleITK cannot read.
    """
    import SimpleITK as sitk  # noqa: N813

    try:
        if path.stat().st_size == 0:
            raise UnreadableFileError(path, "empty file (0 bytes)")
    except OSError as exc:
        raise UnreadableFileError(path, f"cannot be read ({exc.strerror or exc})") from exc
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise UnreadableFileError(path, f"not a readable {_kind(path)} file ({_first_line(exc, path)})") from exc
    return reader


def _kind(path: Path) -> str:
    return {"metaimage": "MetaImage", "nrrd": "NRRD"}.get(itk_format(path) or "", "image")


def _first_line(exc: BaseException, path: Path) -> str:
    """The useful line of an ITK exception (its text repeats the source file and line of ITK)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if ln.lower().startswith("description:"):
            return ln.split(":", 1)[1].strip().replace(str(path), "the file")
    text = lines[-1] if lines else type(exc).__name__
    return text.replace(str(path), "the file")[:200]


def _affine(
    size: tuple[int, ...],
    spacing: tuple[float, ...],
    origin: tuple[float, ...],
    direction: tuple[float, ...],
    path: Path,
) -> np.ndarray:
    """The 4×4 voxel-to-RAS affine (mm) of an ITK image's geometry (see the module docstring).

    Raises:
        UnsupportedDataError: Fewer than 2 or more than 4 dimensions, or a 4th axis that mixes with
            space.
    """
    from mrisr.io.dicom.common import LPS_TO_RAS

    n = len(size)
    if n not in (2, 3, 4):
        raise UnsupportedDataError(path, f"{n}D image (2D to 4D are read)")
    d = np.asarray(direction, dtype=np.float64).reshape(n, n)
    if n == 4:
        if np.abs(d[:3, 3]).max() > 1e-6 or np.abs(d[3, :3]).max() > 1e-6:
            raise UnsupportedDataError(path, "a 4D image whose 4th axis mixes with space (its direction matrix)")
        d, spacing, origin = d[:3, :3], spacing[:3], origin[:3]
    lps = np.eye(4)
    if n == 2:
        lin = np.eye(3)
        lin[:2, :2] = d
        lps[:3, :3] = lin @ np.diag([spacing[0], spacing[1], 1.0])
        lps[:2, 3] = origin[:2]
    else:
        lps[:3, :3] = d @ np.diag(np.asarray(spacing[:3], dtype=np.float64))
        lps[:3, 3] = origin[:3]
    if not np.isfinite(lps).all() or abs(np.linalg.det(lps[:3, :3])) < 1e-12:
        raise UnsupportedDataError(path, f"degenerate geometry (spacing {list(spacing)}, direction {list(direction)})")
    return LPS_TO_RAS @ lps


#: Deflate cannot expand data more than about 1032-fold (as in :mod:`mrisr.io.nifti`).
_MAX_DEFLATE_RATIO = 1032
_HEADER_BYTES = 1 << 16


def _header_fields(path: Path) -> tuple[dict[str, str], int]:
    """The text header of a MetaImage (``Key = Value``) or NRRD (``key: value``) file, keys in lower
    case, and its length in bytes (where attached voxels start); ``({}, 0)`` when it cannot be parsed.
    A NRRD header ends at a blank line or, in a detached header (``.nhdr``), at the end of its file."""
    with open(path, "rb") as fh:
        head = fh.read(_HEADER_BYTES + 1)
    whole = len(head) <= _HEADER_BYTES  # the file ends within the bytes read (a detached header)
    head = head[:_HEADER_BYTES]
    fields: dict[str, str] = {}
    nrrd = head.startswith(b"NRRD")
    pos = 0
    while pos < len(head):
        end = head.find(b"\n", pos)
        if end < 0:
            if not whole:
                return {}, 0
            end = len(head)  # the last line of a file without a final newline
        raw = head[pos:end]
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            line = raw.decode("latin-1").strip()
        pos = end + 1
        if nrrd:
            if not line:  # a blank line ends a NRRD header
                return fields, pos
            key, sep, value = line.partition(":")
            if sep and not line.startswith("#"):
                fields[key.strip().lower()] = value.lstrip("=").strip()
        else:
            key, sep, value = line.partition("=")
            if sep:
                fields[key.strip().lower()] = value.strip()
            if key.strip().lower() == "elementdatafile":  # the last header line of a MetaImage
                return fields, pos
    if nrrd and whole:  # a detached NRRD header (.nhdr) ends with its file, a blank line or not
        return fields, len(head)
    return {}, 0


def _check_size(path: Path, reader: Any, comps: int) -> None:
    """Refuse a file whose voxel data are shorter than its header promises, before SimpleITK
    allocates them (a corrupt header can promise terabytes; a short file is read as an I/O error with
    a misleading reason). Only plain raw data (attached, or in one named data file) are counted;
    compressed data are refused when even deflate's best ratio could not hold the promise.

    Raises:
        UnreadableFileError: Truncated data.
    """
    import SimpleITK as sitk  # noqa: N813

    sizes = {
        sitk.sitkUInt8: 1, sitk.sitkInt8: 1, sitk.sitkUInt16: 2, sitk.sitkInt16: 2, sitk.sitkUInt32: 4,
        sitk.sitkInt32: 4, sitk.sitkUInt64: 8, sitk.sitkInt64: 8, sitk.sitkFloat32: 4, sitk.sitkFloat64: 8,
    }  # fmt: skip
    item = sizes.get(reader.GetPixelID())
    fields, offset = _header_fields(path)
    if item is None or not fields:
        return
    need = math.prod(int(n) for n in reader.GetSize()) * comps * item
    if path.suffix.lower() in (".mha", ".mhd"):
        data_file = fields.get("elementdatafile", "")
        compressed = fields.get("compresseddata", "false").lower() == "true"
        if "headersize" in fields or data_file.upper().startswith("LIST") or " " in data_file:
            return  # skipped header bytes or a list of files: SimpleITK checks
    else:
        data_file = fields.get("data file", fields.get("datafile", "LOCAL"))
        encoding = fields.get("encoding", "raw").lower()
        if encoding not in ("raw", "gzip", "gz") or "byte skip" in fields or "line skip" in fields:
            return
        if data_file.upper().startswith("LIST") or " " in data_file:
            return  # several data files (a list or a numbered pattern): SimpleITK checks
        compressed = encoding != "raw"
    if data_file.upper() == "LOCAL":
        have = path.stat().st_size - offset
    else:
        target = path.parent / data_file
        if not target.is_file():
            raise UnreadableFileError(path, f"its data file {data_file} is missing")
        have = target.stat().st_size
    if compressed and need > _MAX_DEFLATE_RATIO * have + 4096:
        raise UnreadableFileError(
            path,
            f"truncated file (its header promises {need} bytes of voxels; {have} compressed bytes cannot hold them)",
        )
    if not compressed and have < need:
        raise UnreadableFileError(path, f"truncated file (its header promises {need} bytes of voxels, it holds {have})")


#: Millimetres per length unit a NRRD header may state in ``space units`` or ``units`` (compared in
#: lower case). ITK ignores both fields: a file in metres would be read as 1000 times too small.
_MM_PER_UNIT = {
    "": 1.0, "mm": 1.0, "millimeter": 1.0, "millimeters": 1.0, "millimetre": 1.0, "millimetres": 1.0,
    "m": 1000.0, "meter": 1000.0, "meters": 1000.0, "metre": 1000.0, "metres": 1000.0,
    "cm": 10.0, "centimeter": 10.0, "centimeters": 10.0, "centimetre": 10.0, "centimetres": 10.0,
    "um": 0.001, "\u00b5m": 0.001, "\u03bcm": 0.001, "micron": 0.001, "microns": 0.001, "micrometer": 0.001,
    "micrometers": 0.001, "micrometre": 0.001, "micrometres": 0.001,
}  # fmt: skip


def _unit_factors(path: Path, fields: dict[str, str], key: str, n: int) -> np.ndarray | None:
    """Millimetres per unit of the first ``n`` quoted units of NRRD field ``key`` (``None`` when the
    field is absent).

    Raises:
        UnsupportedDataError: A unit that is not a known length.
    """
    if key not in fields:
        return None
    units = re.findall(r'"([^"]*)"', fields[key])[:n]
    factors = []
    for unit in units:
        factor = _MM_PER_UNIT.get(unit.strip().lower())
        if factor is None:
            raise UnsupportedDataError(
                path, f"NRRD {key} {unit!r}: not a length mrisr knows (m, cm, mm or \u00b5m are converted to mm)"
            )
        factors.append(factor)
    return np.array(factors + [1.0] * (n - len(factors)))


def _in_mm(path: Path, affine: np.ndarray, ndim: int) -> np.ndarray:
    """``affine`` (from ITK's reading of ``path``) in mm: a NRRD file's ``space units`` scale the
    world axes (origin and directions), its per-axis ``units`` (a file without a ``space``) the
    voxel axes; MetaImage files state no unit (mm by convention)."""
    if itk_format(path) != "nrrd":
        return affine
    fields, _ = _header_fields(path)
    space = _unit_factors(path, fields, "space units", 3)
    axes = None if space is not None or "space" in fields else _unit_factors(path, fields, "units", min(ndim, 3))
    out = affine.copy()
    if space is not None:
        out[:3, :] = space[:, None] * out[:3, :]
    if axes is not None:
        k = len(axes)
        out[:3, :k] = out[:3, :k] * axes[None, :]
    if not np.allclose(out, affine):
        log.info("%s: lengths converted to mm from the NRRD header's units", path)
    return out


def read_itk_grid(path: str | Path) -> tuple[np.ndarray, tuple[int, ...]]:
    """The RAS affine (mm) and the array shape ``(i, j, k[, t])`` of a MetaImage or NRRD file, from
    its header alone (no voxel is read).

    Raises:
        UnreadableFileError, UnsupportedDataError: As :func:`read_itk`.
    """
    p = Path(path)
    reader = _reader(p)
    size = tuple(int(n) for n in reader.GetSize())
    affine = _in_mm(p, _affine(size, reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection(), p), len(size))
    return affine, size if len(size) > 2 else (*size, 1)


def read_itk(path: str | Path) -> Volume:
    """Read a MetaImage (``.mha``/``.mhd``) or NRRD (``.nrrd``/``.nhdr``) file into a
    :class:`~mrisr.io.Volume`: the array in the file's index order ``(i, j, k[, t])``, the RAS affine
    in mm, the dtype of the file's voxels.

    Raises:
        UnreadableFileError: Empty, truncated (shorter than its header promises, found before any
            voxel memory is allocated) or unreadable file (SimpleITK's reason), a missing data
            file, or too large for memory.
        UnsupportedDataError: Several components per voxel (vector or RGB), complex values, or a
            geometry :func:`read_itk_grid` refuses.
    """
    import SimpleITK as sitk  # noqa: N813

    p = Path(path)
    reader = _reader(p)
    size = tuple(int(n) for n in reader.GetSize())
    affine = _in_mm(p, _affine(size, reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection(), p), len(size))
    comps = int(reader.GetNumberOfComponents())
    if comps != 1:
        raise UnsupportedDataError(p, f"{comps} components per voxel (a vector or colour image); one is read")
    _check_size(p, reader, comps)
    try:
        image = reader.Execute()
        arr = sitk.GetArrayViewFromImage(image)
    except MemoryError as exc:
        raise UnreadableFileError(p, f"its {size} voxels do not fit in memory") from exc
    except RuntimeError as exc:
        raise UnreadableFileError(p, f"unreadable voxels ({_first_line(exc, p)})") from exc
    if np.iscomplexobj(arr) or not np.issubdtype(arr.dtype, np.number):
        raise UnsupportedDataError(p, f"voxel type {arr.dtype} (real numbers are read)")
    # SimpleITK's arrays run (t, k, j, i); the contract's run (i, j, k, t).
    data = np.array(arr.transpose(tuple(range(arr.ndim - 1, -1, -1))))
    if data.size == 0:
        raise UnsupportedDataError(p, f"no image data (shape {data.shape})")
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    fmt = itk_format(p) or "metaimage"
    return Volume(data=data, affine=affine, dtype=data.dtype, fmt=fmt, path=p, meta={})
