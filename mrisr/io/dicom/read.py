"""Reading a DICOM series into a volume: slice order, grid checks, LPS to RAS."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from mrisr.errors import InconsistentGeometryError, UnreadableFileError, UnsupportedDataError
from mrisr.io import Volume
from mrisr.io.dicom.common import _ABS_TOL, _REL_TOL, COPIED_TAGS, LPS_TO_RAS, _image_header, _read_header, _tag_str
from mrisr.io.dicom.enhanced import check_one_stack, is_multiframe, split_frames
from mrisr.io.dicom.mosaic import Tile, is_mosaic, split_mosaic
from mrisr.io.dicom.pixels import read_frame_pixels, read_slice_pixels, rescale
from mrisr.io.dicom.source import DicomSource, SourceSlice, clean_header, is_lossy_syntax

log = logging.getLogger(__name__)


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
    frame: int | None = None  # 1-based frame number of a multi-frame object, None for a single frame
    file_ds: Dataset | None = None  # the multi-frame object's or mosaic's own header, for its pixel data
    tile: Tile | None = None  # the slice's tile in a Siemens mosaic, None for any other slice
    spacing_assumed: bool = False  # no PixelSpacing (nor ImagerPixelSpacing): 1 mm assumed

    @property
    def label(self) -> str:
        """The file name, with the frame number for a frame of a multi-frame object."""
        if self.tile is not None:
            return f"{self.path.name} mosaic tile {self.tile.index + 1}"
        return self.path.name if self.frame is None else f"{self.path.name} frame {self.frame}"


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


def _parse_slice(
    path: Path,
    ds: Dataset,
    *,
    single: bool,
    frame: int | None = None,
    file_ds: Dataset | None = None,
    tile: Tile | None = None,
) -> _Slice:
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
    assumed = spacing is None  # warned about once per series, by read_dicom_series
    if spacing is None:
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
        frame=frame,
        file_ds=file_ds,
        tile=tile,
        spacing_assumed=assumed,
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
                f"mixed slice orientation: {s.label} has row/column directions "
                f"{_fmt_pos(s.row_dir)}/{_fmt_pos(s.col_dir)}, {first.label} has "
                f"{_fmt_pos(first.row_dir)}/{_fmt_pos(first.col_dir)}",
            )
        if s.shape != first.shape:
            raise InconsistentGeometryError(
                folder, f"mixed slice sizes: {s.label} is {s.shape}, {first.label} is {first.shape}"
            )
        if not np.allclose(s.spacing, first.spacing, rtol=1e-4, atol=1e-5):
            raise InconsistentGeometryError(
                folder,
                f"mixed PixelSpacing: {s.label} has {s.spacing}, {first.label} has {first.spacing}",
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
    rescales = {rescale(s.ds, s.path) for s in slices}
    if rescales == {(1.0, 0.0)}:
        return _stored_dtype(slices[0].ds)
    integral = all(float(a).is_integer() and float(b).is_integer() for a, b in rescales)
    if integral and data.size and data.min() >= -32768 and data.max() <= 32767:
        return np.dtype(np.int16)
    return np.dtype(np.float32)


def _series_tags(ds: Dataset) -> dict[str, str]:
    return {kw: v for kw in COPIED_TAGS if (v := _tag_str(ds, kw))}


def _ordered_slices(files: list[Path], uid: str | None) -> tuple[list[list[_Slice]], np.ndarray]:
    """The image slices of the series in ``k`` order, one list per time point (one for a series that
    is not a run of Siemens mosaics), and the LPS step between them (headers only).

    Raises:
        As :func:`read_dicom_series`.
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
    mosaics = [is_mosaic(ds) for _, ds in headers]
    if any(mosaics) and not all(mosaics):
        raise UnsupportedDataError(
            folder, f"series mixes {sum(mosaics)} Siemens mosaic images with {len(mosaics) - sum(mosaics)} other images"
        )
    if any(mosaics):
        return _mosaic_volumes(headers, folder)
    slices = _parse_slices(headers)
    ordered, step = _order_slices(slices, folder)
    first = ordered[0]
    if len(ordered) == 1:
        step = _single_slice_step(first)
    return [ordered], step


def _mosaic_volumes(headers: list[tuple[Path, Dataset]], folder: Path) -> tuple[list[list[_Slice]], np.ndarray]:
    """One volume per Siemens mosaic (a time point or diffusion direction), its tiles in ``k``
    order, the mosaics ordered by InstanceNumber (then AcquisitionNumber, then file name).

    Raises:
        UnsupportedDataError: A mosaic that cannot be unpacked (:func:`~mrisr.io.dicom.mosaic.split_mosaic`),
            or mosaics that repeat an InstanceNumber.
        InconsistentGeometryError: Mosaics whose slices do not lie on one grid.
    """

    def key(item: tuple[Path, Dataset]) -> tuple[int, int, str]:
        p, ds = item
        return (_int_tag(ds, "InstanceNumber", 0, p), _int_tag(ds, "AcquisitionNumber", 0, p), str(p))

    ordered_files = sorted(headers, key=key)
    numbers = [key(h)[:2] for h in ordered_files]
    if len(ordered_files) > 1 and len(set(numbers)) < len(numbers):
        dup = next(n for n in numbers if numbers.count(n) > 1)
        raise UnsupportedDataError(
            folder,
            f"several Siemens mosaics with InstanceNumber/AcquisitionNumber {dup[0]}/{dup[1]} (duplicate files?)",
        )
    volumes: list[list[_Slice]] = []
    step = np.zeros(3)
    for p, ds in ordered_files:
        tiles = split_mosaic(p, ds)
        slices = [_parse_slice(p, t.header, single=False, file_ds=ds, tile=t) for t in tiles]
        ordered, step = _order_slices(slices, p)
        if len(ordered) == 1:
            step = _single_slice_step(ordered[0])
        if volumes:
            _check_same_grid(volumes[0], ordered, folder)
        volumes.append(ordered)
    return volumes, step


def _check_same_grid(first: list[_Slice], other: list[_Slice], folder: Path) -> None:
    """Refuse a time point whose slices are not those of the first one (count, size, positions).

    Raises:
        InconsistentGeometryError: Naming the two files and what differs.
    """
    a, b = first[0], other[0]
    same = (
        len(first) == len(other)
        and a.shape == b.shape
        and np.allclose(a.spacing, b.spacing, rtol=1e-4, atol=1e-5)
        and np.allclose(a.row_dir, b.row_dir, atol=1e-4)
        and np.allclose(a.col_dir, b.col_dir, atol=1e-4)
        and all(
            float(np.linalg.norm(s.position - t.position)) <= _ABS_TOL * 10 for s, t in zip(first, other, strict=True)
        )
    )
    if not same:
        raise InconsistentGeometryError(
            folder,
            f"Siemens mosaics of one series on different grids: {b.path.name} ({len(other)} slices of {b.shape}, "
            f"first at {_fmt_pos(b.position)}) vs {a.path.name} ({len(first)} slices of {a.shape}, first at "
            f"{_fmt_pos(a.position)})",
        )


def read_dicom_grid(files: list[Path], uid: str | None = None) -> tuple[np.ndarray, tuple[int, int, int], float | None]:
    """The grid of a series from its headers alone (no pixel data): the RAS affine, the shape
    ``(columns, rows, slices)`` and the SliceThickness (mm, ``None`` when not given), as
    :func:`read_dicom_series` gives them.

    Raises:
        As :func:`read_dicom_series`.
    """
    volumes, step = _ordered_slices(files, uid)
    ordered = volumes[0]
    first = ordered[0]
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = first.row_dir * first.spacing[1]
    affine_lps[:3, 1] = first.col_dir * first.spacing[0]
    affine_lps[:3, 2] = step
    affine_lps[:3, 3] = first.position
    rows, cols = first.shape
    return LPS_TO_RAS @ affine_lps, (cols, rows, len(ordered)), _slice_thickness(first.ds)


def _slice_thickness(ds: Dataset) -> float | None:
    """SliceThickness in mm (the slice profile's width, which may differ from the spacing of the
    slices when they have gaps or overlap), ``None`` when absent or not a positive number."""
    try:
        value = float(ds.get("SliceThickness") or 0.0)
    except (TypeError, ValueError):
        return None
    return value if value > 0 and np.isfinite(value) else None


def read_dicom_series(files: list[Path], uid: str | None = None) -> Volume:
    """Read one DICOM series into a :class:`~mrisr.io.Volume` (see the module docstring for axes).

    Single-frame slices and the frames of Enhanced (multi-frame) objects are placed the same way, each
    by its own position (a frame's from its functional groups, see :mod:`mrisr.io.dicom.enhanced`).

    Args:
        files: The files of the series (any order).
        uid: SeriesInstanceUID to read; files of other series are ignored. ``None``: the files must
            all belong to one series.

    A Siemens mosaic is one volume whose tiles are its slices (:mod:`mrisr.io.dicom.mosaic`); a series
    of mosaics (fMRI, DWI) is a 4D volume, one time point per mosaic in InstanceNumber order.

    Returns:
        A 3D volume, shape ``(columns, rows, slices)`` (4D, ``(columns, rows, slices, mosaics)``, for a
        series of several Siemens mosaics), values with each slice's rescale applied, RAS
        affine in mm; ``meta["tags"]`` holds the patient, study and series tags as strings,
        ``meta["dicom"]`` the source slices (:class:`~mrisr.io.dicom.source.DicomSource`),
        ``meta["slice_thickness"]`` the SliceThickness in mm (``None`` when not given).

    Raises:
        UnreadableFileError: A file that cannot be read (corrupt header, pixel data shorter than the
            header promises, undecodable pixels, a rescale that is not a number).
        UnsupportedDataError: No image among the files, several series, colour images, a multi-frame
            object without per-frame functional groups or holding several stacks, orientations or
            repeated positions, a Siemens mosaic that cannot be unpacked, a constant image.
        InconsistentGeometryError: Slices that do not form one regular grid (mixed orientation or size,
            duplicate, missing or unevenly spaced slices).
    """
    volumes, step = _ordered_slices(files, uid)
    ordered = volumes[0]
    first = ordered[0]
    paths = sorted({Path(f) for f in files})
    folder = Path(os.path.commonpath([str(p.parent) for p in paths]))
    where = paths[0] if len(paths) == 1 else folder
    assumed = sum(s.spacing_assumed for v in volumes for s in v)
    if assumed:
        total = sum(len(v) for v in volumes)
        log.warning("%s: no PixelSpacing in %d of %d slices; assuming 1 mm", where, assumed, total)
    data = _read_data(ordered) if len(volumes) == 1 else np.stack([_read_data(v) for v in volumes], axis=-1)
    if data.size and float(data.min()) == float(data.max()):
        raise UnsupportedDataError(where, f"a constant image (every voxel is {float(data.min()):g}): empty pixel data?")
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = first.row_dir * first.spacing[1]
    affine_lps[:3, 1] = first.col_dir * first.spacing[0]
    affine_lps[:3, 2] = step
    affine_lps[:3, 3] = first.position
    dtype = _result_dtype(data, [s for v in volumes for s in v])
    out = data.astype(dtype) if np.issubdtype(dtype, np.integer) else data.astype(np.float32)
    log.debug("read %d slices × %d time points of %s", len(ordered), len(volumes), folder)
    source = DicomSource(
        slices=tuple(_source_slice(s) for s in ordered),
        affine_lps=affine_lps,
        series_uid=_tag_str(first.ds, "SeriesInstanceUID"),
    )
    return Volume(
        data=out,
        affine=LPS_TO_RAS @ affine_lps,
        dtype=dtype,
        fmt="dicom",
        path=folder,
        meta={"tags": _series_tags(first.ds), "dicom": source, "slice_thickness": _slice_thickness(first.ds)},
    )


def _parse_slices(headers: list[tuple[Path, Dataset]]) -> list[_Slice]:
    """One slice per single-frame file, one per frame of a multi-frame object."""
    slices: list[_Slice] = []
    single = len(headers) == 1 and not is_multiframe(headers[0][1])  # one slice: may lack a position
    for p, ds in headers:
        if not is_multiframe(ds):
            slices.append(_parse_slice(p, ds, single=single))
            continue
        frames = split_frames(p, ds)
        parsed = [_parse_slice(p, f.header, single=False, frame=f.number, file_ds=ds) for f in frames]
        check_one_stack(p, frames)
        slices.extend(parsed)
    return slices


def _read_data(ordered: list[_Slice]) -> np.ndarray:
    """Pixels in physical units, ``(columns, rows, slices)``, float64 (each frame with its own rescale)."""
    for s in ordered:  # before any decoder applies a rescale that cannot be read
        rescale(s.ds, s.path)
    rows, cols = ordered[0].shape
    data = np.empty((cols, rows, len(ordered)), dtype=np.float64)
    frames: dict[Path, np.ndarray] = {}
    for k, s in enumerate(ordered):
        if s.tile is not None:
            if s.path not in frames:  # the mosaic image, rescale applied
                layout = s.tile.layout
                full = (layout.tile[0] * layout.per_side, layout.tile[1] * layout.per_side)
                frames[s.path] = read_slice_pixels(s.path, s.file_ds if s.file_ds is not None else s.ds, full)
            data[:, :, k] = s.tile.layout.cut(frames[s.path], s.tile.index).T
            continue
        if s.frame is None:
            data[:, :, k] = read_slice_pixels(s.path, s.ds, s.shape).T
            continue
        if s.path not in frames:
            frames[s.path] = read_frame_pixels(s.path, s.file_ds if s.file_ds is not None else s.ds, s.shape)
        slope, inter = rescale(s.ds, s.path)
        data[:, :, k] = (frames[s.path][s.frame - 1] * slope + inter).T
    return data


def _source_slice(s: _Slice) -> SourceSlice:
    # frame and tile headers are clean already
    header = s.ds if s.frame is not None or s.tile is not None else clean_header(s.ds)
    source_ds = s.file_ds if s.file_ds is not None else s.ds
    meta = getattr(source_ds, "file_meta", None)
    syntax = _tag_str(meta, "TransferSyntaxUID") if meta is not None else ""
    return SourceSlice(
        header=header,
        sop_class=_tag_str(source_ds, "SOPClassUID"),
        sop_instance=_tag_str(source_ds, "SOPInstanceUID"),
        frame=s.frame,
        lossy=is_lossy_syntax(syntax),
    )


def read_dicom_path(path: Path) -> Volume:
    """Read the DICOM series at ``path``: a folder holding exactly one image series (searched
    recursively, as :func:`mrisr.discovery.find_studies` searches it), or one file (that file alone,
    as ``mrisr enhance FILE`` reads it; give the folder, or :func:`read_dicom_series` the files, for
    its whole series).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsupportedDataError: A folder with no or several image series, or a file that is no image.
        UnreadableFileError, InconsistentGeometryError: See :func:`read_dicom_series`.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if not p.is_dir():
        return read_dicom_series([p])
    from mrisr.io import is_nifti_path
    from mrisr.io.dicom.series import group_series
    from mrisr.io.walk import walk_files

    series = group_series([(f, p) for f in walk_files(p) if not is_nifti_path(f)])
    if len(series) != 1:
        names = ", ".join(f"{s.folder} {s.number} {s.description}".strip() for s in series)
        raise UnsupportedDataError(
            p,
            f"{len(series)} DICOM image series in the folder (need exactly one)" + (f": {names}" if names else ""),
        )
    return read_dicom_series(list(series[0].files), uid=series[0].series_uid)
