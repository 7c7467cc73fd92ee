"""DICOM series: grouping, reading and writing, honouring the volume contract of :mod:`mrisr.io`.

This is the only module of mrisr that knows DICOM's patient coordinate system, LPS+ (x to the Left,
y to the Posterior, z to the Superior). Every affine that leaves this module is RAS+::

    RAS = diag(-1, -1, 1) · LPS

Headers are read with pydicom (fast, without pixel data); pixels are read with SimpleITK (which
handles the compressed transfer syntaxes), imported inside the functions that need it.

Voxel axes of a series read here:

- ``i`` runs along a row of the image (the column index; direction ``ImageOrientationPatient[0:3]``,
  step ``PixelSpacing[1]``),
- ``j`` runs down a column (the row index; direction ``ImageOrientationPatient[3:6]``, step
  ``PixelSpacing[0]``),
- ``k`` runs through the slices, ordered by position along the slice normal (row × column
  direction), lowest first — unless the ``InstanceNumber`` values run strictly the other way, in which
  case instance order is kept (so that a series written by :func:`write_dicom_series` reads back with
  the voxel order it was written with, whatever the handedness of its grid).
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat

from mrisr.errors import InconsistentGeometryError, UnreadableFileError, UnsupportedDataError
from mrisr.fsutil import atomic_path
from mrisr.io import Volume

if TYPE_CHECKING:
    from mrisr.discovery import Study

log = logging.getLogger(__name__)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""4×4 matrix flipping x and y: converts LPS coordinates (or affines) to RAS and back (its own inverse)."""

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"

COPIED_TAGS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientWeight",
    "StudyInstanceUID",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "AccessionNumber",
    "ReferringPhysicianName",
    "Modality",
    "Manufacturer",
    "MagneticFieldStrength",
    "BodyPartExamined",
    "SeriesDescription",
    "SeriesNumber",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
    "SOPClassUID",
)
"""Patient, study and series tags carried in ``Volume.meta["tags"]`` (as strings) and written back."""

# A series' own identity, never copied onto a derived series.
_NOT_WRITTEN = frozenset({"SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "SOPClassUID"})

_TYPE2_TAGS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)

_REL_TOL = 0.01  # slice positions may deviate by 1 % of the slice spacing ...
_ABS_TOL = 1e-3  # ... or 1e-3 mm, whichever is larger


@dataclass(frozen=True)
class _Header:
    """What grouping needs from one file's header."""

    path: Path
    root: Path
    series_uid: str | None
    description: str
    number: str


# --------------------------------------------------------------------------------------------------
# Header reading and grouping
# --------------------------------------------------------------------------------------------------


def _has_dicm_prefix(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _read_header(path: Path) -> Dataset | None:
    """The header of ``path`` (pixel data deferred, not loaded), or ``None`` when it is not DICOM.

    Raises:
        UnreadableFileError: A file with the DICOM prefix whose header cannot be parsed.
    """
    if _has_dicm_prefix(path):
        try:
            ds = pydicom.dcmread(path, defer_size=1024)
        except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError) as exc:
            raise UnreadableFileError(path, f"corrupt DICOM header ({exc})") from exc
        # SOPClassUID is type 1 in every DICOM object but a DICOMDIR: without it pydicom stopped early
        if "SOPClassUID" not in ds and _sop_class_uid(ds) != MEDIA_STORAGE_DIRECTORY:
            raise UnreadableFileError(path, "truncated or corrupt DICOM header (no SOPClassUID)")
        return ds
    # Old files without preamble/prefix: pydicom parses anything with force=True, so only accept a
    # result that holds a SOP class, as every DICOM object does.
    try:
        ds = pydicom.dcmread(path, force=True, defer_size=1024)
        return ds if "SOPClassUID" in ds else None
    except Exception:  # pydicom raises arbitrary errors on non-DICOM bytes read with force=True
        return None


def _tag_str(ds: Dataset, keyword: str) -> str:
    """A tag's value as a one-line string ('' when absent or unreadable)."""
    try:
        value = ds.get(keyword)
    except (ValueError, TypeError, KeyError):
        return ""
    if value is None:
        return ""
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v) for v in value)
    return " ".join(str(value).split())


def _sop_class_uid(ds: Dataset) -> str:
    """SOPClassUID, else the file meta's MediaStorageSOPClassUID (a DICOMDIR has only the latter)."""
    meta = getattr(ds, "file_meta", None)
    return _tag_str(ds, "SOPClassUID") or (_tag_str(meta, "MediaStorageSOPClassUID") if meta is not None else "")


def _image_header(path: Path, ds: Dataset) -> str | None:
    """Why ``ds`` is not an image that mrisr can group (``None`` when it is)."""
    sop = _sop_class_uid(ds)
    if sop == MEDIA_STORAGE_DIRECTORY or path.name.upper().startswith("DICOMDIR"):
        return "DICOMDIR (a media index, not an image)"
    if "PixelData" not in ds or "Rows" not in ds or "Columns" not in ds:
        name = getattr(ds.SOPClassUID, "name", sop) if "SOPClassUID" in ds else "unknown SOP class"
        return f"no pixel data ({name})"
    return None


def group_dicom_series(files: list[tuple[Path, Path]]) -> list[Study]:
    """Group DICOM files into series, one :class:`~mrisr.discovery.Study` per SeriesInstanceUID.

    Files that are not DICOM, DICOMDIR indexes and objects without pixel data (structure sets,
    reports, presentation states) are skipped with a log line; so are DICOM files whose header cannot
    be parsed (with a warning).

    Args:
        files: Pairs ``(file, root)``: a candidate file and the input folder it was found under.

    Returns:
        One study per series, sorted by id. ``Study.path`` is the deepest folder holding all the
        series' files; ``Study.files`` are sorted by path. The id joins the folder name, the
        SeriesNumber and the SeriesDescription, sanitised, and a short hash of the UID.
    """
    from mrisr.discovery import Study, sanitize_id, short_hash

    groups: dict[str, list[_Header]] = {}
    for path, root in files:
        path = Path(path)
        try:
            ds = _read_header(path)
        except UnreadableFileError as exc:
            log.warning("skipping %s", exc)
            continue
        if ds is None:
            log.info("skipping %s: not a DICOM file", path)
            continue
        why = _image_header(path, ds)
        if why is not None:
            log.info("skipping %s: %s", path, why)
            continue
        uid = _tag_str(ds, "SeriesInstanceUID") or None
        key = uid if uid is not None else f"no-uid:{path.parent}"
        groups.setdefault(key, []).append(
            _Header(
                path=path,
                root=Path(root),
                series_uid=uid,
                description=_tag_str(ds, "SeriesDescription"),
                number=_tag_str(ds, "SeriesNumber"),
            )
        )
    studies: list[Study] = []
    for key, members in groups.items():
        paths = sorted({m.path for m in members})
        folder = Path(os.path.commonpath([str(p.parent) for p in paths]))
        first = members[0]
        label = "_".join(s for s in (folder.name, first.number, first.description) if s)
        study_id = f"{sanitize_id(label, max_len=80)}_{short_hash(key)}"
        studies.append(
            Study(
                id=study_id,
                fmt="dicom",
                path=folder,
                files=tuple(paths),
                series_uid=first.series_uid,
                description=first.description,
            )
        )
        log.debug("series %s: %d files in %s", key, len(paths), folder)
    studies.sort(key=lambda s: s.id)
    return studies


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Slice:
    path: Path
    ds: Dataset
    row_dir: np.ndarray  # LPS direction of increasing column index (i)
    col_dir: np.ndarray  # LPS direction of increasing row index (j)
    position: np.ndarray  # LPS position of the centre of the first pixel, mm
    spacing: tuple[float, float]  # (between rows, between columns), mm
    shape: tuple[int, int]  # (rows, columns)
    instance: int | None


def _int_tag(ds: Dataset, keyword: str, default: int, path: Path | None) -> int:
    """An integer tag (``default`` when absent or empty).

    Raises:
        UnreadableFileError: A value that is not an integer.
    """
    try:
        value = ds.get(keyword)
        return default if value in (None, "") else int(value)
    except (TypeError, ValueError) as exc:
        raise UnreadableFileError(path, f"bad {keyword} ({exc})") from exc


def _floats(ds: Dataset, keyword: str, n: int, path: Path) -> np.ndarray | None:
    if keyword not in ds or ds.get(keyword) in (None, ""):
        return None
    try:
        vals = np.array([float(v) for v in ds.get(keyword)], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise UnreadableFileError(path, f"bad {keyword} {ds.get(keyword)!r}") from exc
    if vals.shape != (n,) or not np.all(np.isfinite(vals)):
        raise UnreadableFileError(path, f"bad {keyword} {ds.get(keyword)!r}")
    return vals


def _parse_slice(path: Path, ds: Dataset, *, single: bool) -> _Slice:
    frames = _int_tag(ds, "NumberOfFrames", 1, path)
    if frames > 1:
        raise UnsupportedDataError(path, f"multi-frame DICOM ({frames} frames) is not supported")
    if _int_tag(ds, "SamplesPerPixel", 1, path) != 1:
        raise UnsupportedDataError(path, f"colour image ({ds.get('PhotometricInterpretation')})")
    iop = _floats(ds, "ImageOrientationPatient", 6, path)
    ipp = _floats(ds, "ImagePositionPatient", 3, path)
    if iop is None or ipp is None:
        if not single:
            raise InconsistentGeometryError(
                path, "no ImageOrientationPatient/ImagePositionPatient: cannot place the slices"
            )
        log.warning("%s: no ImageOrientationPatient/ImagePositionPatient; assuming an axial grid at 0", path)
        iop = np.array([1.0, 0, 0, 0, 1.0, 0]) if iop is None else iop
        ipp = np.zeros(3) if ipp is None else ipp
    spacing = _floats(ds, "PixelSpacing", 2, path)
    if spacing is None:
        spacing = _floats(ds, "ImagerPixelSpacing", 2, path)
    if spacing is None:
        log.warning("%s: no PixelSpacing; assuming 1 mm", path)
        spacing = np.ones(2)
    row_dir, col_dir = iop[:3], iop[3:]
    if not (np.isclose(np.linalg.norm(row_dir), 1, atol=1e-3) and np.isclose(np.linalg.norm(col_dir), 1, atol=1e-3)):
        raise InconsistentGeometryError(path, f"ImageOrientationPatient {list(iop)} is not two unit vectors")
    instance = ds.get("InstanceNumber")
    try:
        inst = int(instance) if instance not in (None, "") else None
    except (TypeError, ValueError):
        inst = None
    return _Slice(
        path=path,
        ds=ds,
        row_dir=row_dir / np.linalg.norm(row_dir),
        col_dir=col_dir / np.linalg.norm(col_dir),
        position=ipp,
        spacing=(float(spacing[0]), float(spacing[1])),
        shape=(_int_tag(ds, "Rows", 0, path), _int_tag(ds, "Columns", 0, path)),
        instance=inst,
    )


def _fmt_pos(p: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in p) + ")"


def _order_slices(slices: list[_Slice], folder: Path) -> tuple[list[_Slice], np.ndarray]:
    """Check that ``slices`` form one regular grid; return them in k order and the LPS k step (mm).

    Raises:
        InconsistentGeometryError: Mixed orientation, size or pixel spacing; duplicate, missing or
            unevenly spaced slices. The message names the folder and the offending positions.
    """
    first = slices[0]
    for s in slices[1:]:
        if not (np.allclose(s.row_dir, first.row_dir, atol=1e-4) and np.allclose(s.col_dir, first.col_dir, atol=1e-4)):
            raise InconsistentGeometryError(
                folder,
                f"mixed slice orientation: {s.path.name} has row/column directions "
                f"{_fmt_pos(s.row_dir)}/{_fmt_pos(s.col_dir)}, {first.path.name} has "
                f"{_fmt_pos(first.row_dir)}/{_fmt_pos(first.col_dir)}",
            )
        if s.shape != first.shape:
            raise InconsistentGeometryError(
                folder, f"mixed slice sizes: {s.path.name} is {s.shape}, {first.path.name} is {first.shape}"
            )
        if not np.allclose(s.spacing, first.spacing, rtol=1e-4, atol=1e-5):
            raise InconsistentGeometryError(
                folder,
                f"mixed PixelSpacing: {s.path.name} has {s.spacing}, {first.path.name} has {first.spacing}",
            )
    if len(slices) == 1:
        return slices, np.zeros(3)
    normal = np.cross(first.row_dir, first.col_dir)
    ordered = sorted(slices, key=lambda s: float(normal @ s.position))
    dist = np.array([float(normal @ s.position) for s in ordered])
    gaps = np.diff(dist)
    step_len = float(np.median(gaps))
    tol = max(_REL_TOL * abs(step_len), _ABS_TOL)
    if np.any(gaps <= tol):
        dup = [_fmt_pos(ordered[n].position) for n in range(len(gaps)) if gaps[n] <= tol]
        raise InconsistentGeometryError(
            folder,
            f"several slices at the same position {', '.join(dup[:5])} "
            "(echoes or time points in one series are not supported)",
        )
    bad = [n for n in range(len(gaps)) if abs(gaps[n] - step_len) > tol]
    if bad:
        details = "; ".join(
            f"{_fmt_pos(ordered[n].position)} to {_fmt_pos(ordered[n + 1].position)}: {gaps[n]:.3f} mm" for n in bad[:5]
        )
        missing = any(gaps[n] > step_len + tol for n in bad)
        raise InconsistentGeometryError(
            folder,
            f"uneven slice spacing (expected {step_len:.3f} mm along the normal"
            f"{'; missing slice?' if missing else ''}): {details}",
        )
    n = len(ordered)
    step = (ordered[-1].position - ordered[0].position) / (n - 1)
    expected = ordered[0].position + np.arange(n)[:, None] * step
    line_tol = max(_REL_TOL * float(np.linalg.norm(step)), _ABS_TOL)
    off = [k for k in range(n) if float(np.linalg.norm(ordered[k].position - expected[k])) > line_tol]
    if off:
        raise InconsistentGeometryError(
            folder,
            "slice positions not on one line: "
            + "; ".join(f"{_fmt_pos(ordered[k].position)} (expected {_fmt_pos(expected[k])})" for k in off[:5]),
        )
    instances = [s.instance for s in ordered if s.instance is not None]
    if len(instances) == n and all(a > b for a, b in itertools.pairwise(instances)):
        ordered = ordered[::-1]
        step = -step
    return ordered, step


def _single_slice_step(s: _Slice) -> np.ndarray:
    normal = np.cross(s.row_dir, s.col_dir)
    for keyword in ("SliceThickness", "SpacingBetweenSlices"):
        try:
            value = float(s.ds.get(keyword) or 0.0)
        except (TypeError, ValueError):
            value = 0.0
        if value > 0 and np.isfinite(value):
            return normal * value
    return normal * 1.0


def _rescale(ds: Dataset) -> tuple[float, float]:
    try:
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        inter = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    except (TypeError, ValueError):
        return 1.0, 0.0
    return slope, inter


def _stored_dtype(ds: Dataset) -> np.dtype:
    bits = _int_tag(ds, "BitsAllocated", 16, None)
    signed = _int_tag(ds, "PixelRepresentation", 0, None) == 1
    if bits == 8:
        return np.dtype(np.int8 if signed else np.uint8)
    if bits == 32:
        return np.dtype(np.int32 if signed else np.uint32)
    return np.dtype(np.int16 if signed else np.uint16)


def _result_dtype(data: np.ndarray, slices: Sequence[_Slice]) -> np.dtype:
    """The stored dtype when no rescale applies; an integer type when the rescaled values are
    integers that fit int16 (e.g. CT with slope 1, intercept -1024); else float32."""
    rescales = {_rescale(s.ds) for s in slices}
    if rescales == {(1.0, 0.0)}:
        return _stored_dtype(slices[0].ds)
    integral = all(float(a).is_integer() and float(b).is_integer() for a, b in rescales)
    if integral and data.size and data.min() >= -32768 and data.max() <= 32767:
        return np.dtype(np.int16)
    return np.dtype(np.float32)


def _read_pixels(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Pixels of one slice in physical units (rescale applied), shape ``(rows, columns)``, float64.

    SimpleITK (GDCM) decodes them; where SimpleITK is not installed, pydicom does (uncompressed and
    the transfer syntaxes its installed plugins handle).
    """
    try:
        import SimpleITK as sitk  # noqa: N813
    except ImportError:
        log.debug("SimpleITK not available; decoding %s with pydicom", path)
        return _read_pixels_pydicom(path, shape)
    try:
        img = sitk.ReadImage(str(path), sitk.sitkFloat64, imageIO="GDCMImageIO")
    except RuntimeError as exc:
        msg = str(exc).strip().splitlines()
        raise UnreadableFileError(path, f"cannot read pixel data ({msg[-1] if msg else 'SimpleITK error'})") from exc
    arr = sitk.GetArrayFromImage(img)
    if arr.size != shape[0] * shape[1]:
        raise UnreadableFileError(path, f"pixel data of {arr.shape} does not match Rows×Columns {shape}")
    return arr.reshape(shape)


def _read_pixels_pydicom(path: Path, shape: tuple[int, int]) -> np.ndarray:
    try:
        ds = pydicom.dcmread(path)
        arr = np.asarray(ds.pixel_array, dtype=np.float64)
    except (InvalidDicomError, OSError, EOFError, ValueError, RuntimeError, NotImplementedError, AttributeError) as exc:
        raise UnreadableFileError(path, f"cannot read pixel data ({exc})") from exc
    if arr.size != shape[0] * shape[1]:
        raise UnreadableFileError(path, f"pixel data of {arr.shape} does not match Rows×Columns {shape}")
    slope, inter = _rescale(ds)
    return arr.reshape(shape) * slope + inter


def _series_tags(ds: Dataset) -> dict[str, str]:
    return {kw: v for kw in COPIED_TAGS if (v := _tag_str(ds, kw))}


def read_dicom_series(files: list[Path], uid: str | None = None) -> Volume:
    """Read one DICOM series into a :class:`~mrisr.io.Volume` (see the module docstring for axes).

    Args:
        files: The files of the series (any order).
        uid: SeriesInstanceUID to read; files of other series are ignored. ``None``: the files must
            all belong to one series.

    Returns:
        A 3D volume, shape ``(columns, rows, slices)``, values with the rescale applied, RAS affine in
        mm; ``meta["tags"]`` holds the patient, study and series tags as strings.

    Raises:
        UnreadableFileError: A file that cannot be read (corrupt header or pixel data).
        UnsupportedDataError: No image among the files, several series, multi-frame or colour images.
        InconsistentGeometryError: Slices that do not form one regular grid (mixed orientation or size,
            duplicate, missing or unevenly spaced slices).
    """
    paths = sorted({Path(f) for f in files})
    if not paths:
        raise UnsupportedDataError(None, "no DICOM files given")
    folder = Path(os.path.commonpath([str(p.parent) for p in paths]))
    headers: list[tuple[Path, Dataset]] = []
    skipped: list[str] = []
    for p in paths:
        ds = _read_header(p)
        if ds is None:
            raise UnreadableFileError(p, "not a DICOM file")
        why = _image_header(p, ds)
        if why is not None:
            log.info("skipping %s: %s", p, why)
            skipped.append(why)
            continue
        headers.append((p, ds))
    if len(paths) == 1 and skipped:
        raise UnsupportedDataError(paths[0], skipped[0])
    uids = {_tag_str(ds, "SeriesInstanceUID") for _, ds in headers}
    if uid is not None:
        headers = [(p, ds) for p, ds in headers if _tag_str(ds, "SeriesInstanceUID") == uid]
    elif len(uids) > 1:
        raise UnsupportedDataError(folder, f"{len(uids)} series among the files; read them one by one")
    if not headers:
        raise UnsupportedDataError(folder, "no DICOM image" + (f" of series {uid}" if uid else ""))
    single = len(headers) == 1
    slices = [_parse_slice(p, ds, single=single) for p, ds in headers]
    ordered, step = _order_slices(slices, folder)
    first = ordered[0]
    if single:
        step = _single_slice_step(first)
    rows, cols = first.shape
    data = np.empty((cols, rows, len(ordered)), dtype=np.float64)
    for k, s in enumerate(ordered):
        data[:, :, k] = _read_pixels(s.path, s.shape).T
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = first.row_dir * first.spacing[1]
    affine_lps[:3, 1] = first.col_dir * first.spacing[0]
    affine_lps[:3, 2] = step
    affine_lps[:3, 3] = first.position
    dtype = _result_dtype(data, ordered)
    out = data.astype(dtype) if np.issubdtype(dtype, np.integer) else data.astype(np.float32)
    log.debug("read %d slices of %s", len(ordered), folder)
    return Volume(
        data=out,
        affine=LPS_TO_RAS @ affine_lps,
        dtype=dtype,
        fmt="dicom",
        path=folder,
        meta={"tags": _series_tags(first.ds)},
    )


def read_dicom_path(path: Path) -> Volume:
    """Read the DICOM series at ``path``: a folder holding exactly one image series (searched
    recursively), or one file (its series among the files of its folder).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsupportedDataError: A folder with no or several image series, or a file that is no image.
        UnreadableFileError, InconsistentGeometryError: See :func:`read_dicom_series`.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.is_dir():
        from mrisr.discovery import find_studies

        studies = [s for s in find_studies([p]) if s.fmt == "dicom"]
        if len(studies) != 1:
            ids = ", ".join(s.id for s in studies)
            raise UnsupportedDataError(
                p,
                f"{len(studies)} DICOM image series in the folder (need exactly one)" + (f": {ids}" if ids else ""),
            )
        return read_dicom_series(list(studies[0].files), uid=studies[0].series_uid)
    ds = _read_header(p)
    if ds is None:
        raise UnreadableFileError(p, "not a DICOM file")
    why = _image_header(p, ds)
    if why is not None:
        raise UnsupportedDataError(p, why)
    siblings = [(f, p.parent) for f in sorted(p.parent.iterdir()) if f.is_file() and not f.name.startswith(".")]
    for study in group_dicom_series(siblings):
        if p in study.files:
            return read_dicom_series(list(study.files), uid=study.series_uid)
    raise UnsupportedDataError(p, "file not found among the series of its folder")


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


def _ds_value(x: float) -> DSfloat:
    """``x`` as a DICOM decimal string (at most 16 characters)."""
    return DSfloat(float(x), auto_format=True)


def _encode(data: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, float, float]:
    """Stored integers and (slope, intercept) such that ``data ≈ stored * slope + intercept``.

    Integer-valued data that fit int16 (uint16 for an unsigned input type) are stored exactly with
    slope 1; anything else is scaled into int16.
    """
    finite = data[np.isfinite(data)] if np.issubdtype(data.dtype, np.floating) else data
    if finite.size != data.size:
        raise UnsupportedDataError(None, "data hold NaN or infinite values; cannot write DICOM")
    lo = float(data.min()) if data.size else 0.0
    hi = float(data.max()) if data.size else 0.0
    integral = np.issubdtype(data.dtype, np.integer) or bool(np.all(np.mod(data, 1) == 0))
    unsigned = dtype.kind == "u"
    if integral and unsigned and lo >= 0 and hi <= 65535:
        return np.asarray(data).astype(np.uint16), 1.0, 0.0
    if integral and lo >= -32768 and hi <= 32767:
        return np.asarray(data).astype(np.int16), 1.0, 0.0
    slope = 1.0 if hi == lo else float(_ds_value((hi - lo) / 65000.0))
    inter = float(_ds_value((hi + lo) / 2.0))
    stored = np.clip(np.rint((np.asarray(data, dtype=np.float64) - inter) / slope), -32768, 32767)
    return stored.astype(np.int16), slope, inter


def _set(ds: Dataset, keyword: str, value: Any) -> None:
    """Set a tag, skipping (with a warning) a value its VR refuses."""
    try:
        setattr(ds, keyword, value)
    except (ValueError, TypeError, OverflowError) as exc:
        log.warning("not writing %s=%r: %s", keyword, value, exc)


def _save(ds: Dataset, path: Path) -> None:
    """Write ``ds`` as a DICOM file (with preamble and file meta) under pydicom 2.4 or 3."""
    try:
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
    except TypeError:  # pydicom < 3 has no enforce_file_format
        ds.is_little_endian, ds.is_implicit_VR = True, False
        pydicom.dcmwrite(path, ds, write_like_original=False)


def _sop_class(tags: dict[str, str]) -> str:
    sop = tags.get("SOPClassUID", "")
    if sop in (MR_IMAGE_STORAGE, CT_IMAGE_STORAGE):
        return sop
    modality = tags.get("Modality", "MR")
    return {"MR": MR_IMAGE_STORAGE, "CT": CT_IMAGE_STORAGE}.get(modality, SECONDARY_CAPTURE_STORAGE)


def write_dicom_series(
    volume: Volume,
    folder: Path,
    *,
    series_description_suffix: str = " SR",
    series_number: int | None = None,
) -> Path:
    """Write a 3D volume as a new DICOM series, one file per k-slice, atomically.

    The series is written into a hidden temporary sibling folder renamed onto ``folder`` when
    complete (an existing ``folder`` is replaced). Each file gets new SOP/series UIDs, the slice's
    ImagePositionPatient, ImageOrientationPatient, PixelSpacing (between rows ``j``, between columns
    ``i``), SliceThickness, SpacingBetweenSlices and InstanceNumber ``k + 1``; patient and study tags
    are copied from ``volume.meta["tags"]``; ImageType is ``DERIVED\\SECONDARY``.

    Values: integer-valued data that fit int16 (or uint16 for an unsigned ``volume.dtype``) are stored
    exactly with RescaleSlope 1; other data (float, out of range) as int16 with a RescaleSlope and
    RescaleIntercept that keep the physical units (to within half a slope).

    Args:
        volume: A 3D volume (RAS affine; the DICOM geometry is derived from it).
        folder: The series folder to create.
        series_description_suffix: Appended to the input's SeriesDescription.
        series_number: SeriesNumber of the new series; default the input's + 1000 (1000 when none).

    Returns:
        ``folder``.

    Raises:
        UnsupportedDataError: A 4D volume, or data with NaN/infinite values.
    """
    out = Path(folder)
    if volume.data.ndim != 3:
        raise UnsupportedDataError(out, f"DICOM output takes 3D volumes, got shape {volume.data.shape}")
    try:
        stored, slope, inter = _encode(np.asarray(volume.data), volume.dtype)
    except UnsupportedDataError as exc:
        raise UnsupportedDataError(out, exc.reason) from exc
    tags = dict(volume.meta.get("tags") or {})
    lps = LPS_TO_RAS @ np.asarray(volume.affine, dtype=np.float64)
    col_i, col_j, col_k = lps[:3, 0], lps[:3, 1], lps[:3, 2]
    di, dj, dk = (float(np.linalg.norm(c)) for c in (col_i, col_j, col_k))
    if min(di, dj, dk) <= 0:
        raise UnsupportedDataError(out, "degenerate affine (a zero-length voxel axis)")
    row_dir, col_dir = col_i / di, col_j / dj
    normal = np.cross(row_dir, col_dir)
    slice_gap = abs(float(normal @ col_k)) or dk
    nk = stored.shape[2]
    if series_number is None:
        try:
            series_number = int(float(tags.get("SeriesNumber", "0"))) + 1000
        except ValueError:
            series_number = 1000
    description = (tags.get("SeriesDescription", "") or "mrisr")[: 64 - len(series_description_suffix)]
    series_uid = generate_uid()
    sop_class = UID(_sop_class(tags))
    frame_uid = tags.get("FrameOfReferenceUID") or generate_uid()
    now = datetime.now()
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for k in range(nk):
            ds = Dataset()
            sop_uid = generate_uid()
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = sop_class
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.file_meta = meta
            ds.preamble = b"\0" * 128
            ds.SpecificCharacterSet = "ISO_IR 192"
            for kw, value in tags.items():
                if kw not in _NOT_WRITTEN:
                    _set(ds, kw, value)
            for kw in _TYPE2_TAGS:  # required to be present, even when empty
                if kw not in ds:
                    setattr(ds, kw, "")
            if "StudyInstanceUID" not in ds:
                ds.StudyInstanceUID = generate_uid(entropy_srcs=[str(volume.path or out)])
            if "Modality" not in ds:
                ds.Modality = "MR" if sop_class == MR_IMAGE_STORAGE else "OT"
            ds.SOPClassUID = sop_class
            ds.SOPInstanceUID = sop_uid
            ds.SeriesInstanceUID = series_uid
            ds.FrameOfReferenceUID = frame_uid
            _set(ds, "SeriesDescription", description + series_description_suffix)
            ds.SeriesNumber = int(series_number)
            ds.InstanceNumber = k + 1
            ds.ImageType = ["DERIVED", "SECONDARY"]
            ds.ContentDate = now.strftime("%Y%m%d")
            ds.ContentTime = now.strftime("%H%M%S")
            position = lps[:3, :3] @ np.array([0.0, 0.0, float(k)]) + lps[:3, 3]
            ds.ImagePositionPatient = [_ds_value(v) for v in position]
            ds.ImageOrientationPatient = [_ds_value(v) for v in (*row_dir, *col_dir)]
            ds.PixelSpacing = [_ds_value(dj), _ds_value(di)]
            ds.SliceThickness = _ds_value(slice_gap)
            ds.SpacingBetweenSlices = _ds_value(slice_gap)
            ds.SliceLocation = _ds_value(float(normal @ position))
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows = int(stored.shape[1])
            ds.Columns = int(stored.shape[0])
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 0 if stored.dtype == np.uint16 else 1
            ds.RescaleSlope = _ds_value(slope)
            ds.RescaleIntercept = _ds_value(inter)
            ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).astype(stored.dtype.newbyteorder("<")).tobytes()
            _save(ds, tmp / f"IM{k + 1:05d}.dcm")
    log.debug("wrote %d slices to %s", nk, out)
    return out
