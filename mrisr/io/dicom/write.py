"""Writing a volume as a derived DICOM series, atomically, with RAS converted back to LPS."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from mrisr import __version__
from mrisr.errors import UnsupportedDataError
from mrisr.fsutil import atomic_path
from mrisr.io import Volume, encode_values
from mrisr.io.dicom.common import CT_IMAGE_STORAGE, LPS_TO_RAS, MR_IMAGE_STORAGE, SECONDARY_CAPTURE_STORAGE
from mrisr.io.dicom.derive import (
    derived_image_type,
    ds_value,
    from_source,
    from_tags,
    set_references,
    set_tag,
    window,
)
from mrisr.io.dicom.pixels import is_monochrome1
from mrisr.io.dicom.source import DicomSource

log = logging.getLogger(__name__)

_SHEAR_TOL = 1e-4  # |cos| of the angle between the row and column directions that counts as 90°


def _blocks(data: np.ndarray, chunk: int = 8) -> list[slice]:
    return [slice(start, start + chunk) for start in range(0, data.shape[2], chunk)]


def dicom_stored_dtype(dtype: np.dtype | str) -> np.dtype:
    """The type a derived DICOM series stores for a study of type ``dtype``, whatever ``--dtype``
    asks: uint16 for an unsigned type, else int16 (classic MR and CT images hold integers)."""
    return np.dtype(np.uint16 if np.dtype(dtype).kind == "u" else np.int16)


def _encode(data: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, float, float]:
    """Stored integers and (slope, intercept) such that ``data ≈ stored * slope + intercept``.

    The value rule of every mrisr output (:func:`mrisr.io.encode_values`), in the 16-bit types DICOM
    images hold: uint16 for a study of an unsigned type, else int16. Whole numbers that fit are
    stored as they are (slope 1); any other result gets a slope and intercept mapping its range onto
    the type's (error at most (max − min) / 131,070, 107 dB below the range).

    Raises:
        UnsupportedDataError: NaN or infinite values.
    """
    lo = float(data.min()) if data.size else 0.0
    hi = float(data.max()) if data.size else 0.0
    if not (np.isfinite(lo) and np.isfinite(hi)):  # min/max propagate NaN and reach an infinity
        raise UnsupportedDataError(None, "data hold NaN or infinite values; cannot write DICOM")
    stored, slope, inter = encode_values(data, dicom_stored_dtype(dtype))
    # as DICOM decimal strings (at most 16 characters): the values a reader will apply
    return stored, float(ds_value(slope)), float(ds_value(inter))


def dicom_as_written(data: np.ndarray, dtype: np.dtype | str) -> np.ndarray:
    """The values a reader gets back (stored × slope + intercept, float32) from a 3D ``data`` written
    by :func:`write_dicom_series` for a study of type ``dtype``: what metrics of a DICOM output are
    computed on. The rule is that of :func:`mrisr.io.as_written`, but always in int16/uint16: a
    float or 8-bit study's DICOM series holds other values than its NIfTI file would.

    Raises:
        UnsupportedDataError: Data with NaN or infinite values.
    """
    stored, slope, inter = _encode(np.asarray(data), np.dtype(dtype))
    out = np.empty(stored.shape, dtype=np.float32)
    for b in _blocks(stored):
        out[:, :, b] = stored[:, :, b].astype(np.float64) * slope + inter
    return out


def _save(ds: Dataset, path: Path) -> None:
    """Write ``ds`` as a DICOM file (with preamble and file meta) under pydicom 2.4 or 3."""
    try:
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
    except TypeError:  # pydicom < 3 has no enforce_file_format
        ds.is_little_endian, ds.is_implicit_VR = True, False
        pydicom.dcmwrite(path, ds, write_like_original=False)


def _sop_class(tags: dict[str, str]) -> str:
    """The classic storage class of the output: MR or CT as the input, else by Modality (an
    Enhanced MR input gives classic MR images)."""
    sop = tags.get("SOPClassUID", "")
    if sop in (MR_IMAGE_STORAGE, CT_IMAGE_STORAGE):
        return sop
    modality = tags.get("Modality", "MR")
    return {"MR": MR_IMAGE_STORAGE, "CT": CT_IMAGE_STORAGE}.get(modality, SECONDARY_CAPTURE_STORAGE)


def check_dicom_grid(volume: Volume) -> None:
    """Refuse a grid that DICOM slices cannot hold: rows and columns of a DICOM image are
    perpendicular (ImageOrientationPatient holds two orthogonal unit vectors), so a volume sheared
    in-plane cannot be written without resampling. A slice axis that is not along the slice normal
    (as a tilted-gantry series) is fine: each slice is placed by its own ImagePositionPatient.

    Raises:
        UnsupportedDataError: Naming the study (``volume.path``) and the angle between the axes.
    """
    lps = LPS_TO_RAS @ np.asarray(volume.affine, dtype=np.float64)
    cols = [lps[:3, n] for n in range(3)]
    lengths = [float(np.linalg.norm(c)) for c in cols]
    if min(lengths) <= 0 or not np.isfinite(lps).all():
        raise UnsupportedDataError(volume.path, "degenerate affine (a zero-length voxel axis)")
    row_dir, col_dir = cols[0] / lengths[0], cols[1] / lengths[1]
    cos = float(row_dir @ col_dir)
    if abs(cos) > _SHEAR_TOL:
        angle = float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
        raise UnsupportedDataError(
            volume.path,
            f"sheared grid: voxel rows and columns meet at {angle:.2f}° (DICOM images need 90°); "
            "write it with --format nifti",
        )
    if abs(float(np.cross(row_dir, col_dir) @ cols[2])) <= 1e-6 * lengths[2]:
        raise UnsupportedDataError(volume.path, "degenerate affine: the slice axis lies in the image plane")


def write_dicom_series(
    volume: Volume,
    folder: Path,
    *,
    series_description_suffix: str = " SR",
    series_number: int | None = None,
) -> Path:
    """Write a 3D volume as a new derived DICOM series, one classic single-frame file per k-slice.

    The series is written into a hidden temporary sibling folder renamed onto ``folder`` when
    complete (an existing ``folder`` is replaced).

    A volume read from DICOM (``volume.meta["dicom"]``, a :class:`~mrisr.io.dicom.source.DicomSource`)
    gives each output slice a copy of the header of the source slice that contains its centre (the
    nearest one: for a through-plane refinement several output slices share one source slice; a
    frame of an Enhanced MR source gives a classic MR image). Of that copy only what the new pixels
    and grid change is replaced:

    - pixel data (uncompressed, explicit VR little endian, whatever the source's transfer syntax),
      Rows/Columns, Bits Allocated/Stored 16, High Bit 15, Pixel Representation, Rescale
      Slope/Intercept (written when the source had them or when the values need them);
    - ImagePositionPatient, ImageOrientationPatient, PixelSpacing (between rows ``j``, between
      columns ``i``), SpacingBetweenSlices and SliceLocation from the new grid; SliceThickness is the
      source's when the slice spacing is unchanged (in-plane refinement) and the new slice spacing
      when it changed (through-plane refinement: the slices are contiguous estimates);
    - new SeriesInstanceUID and SOPInstanceUIDs, InstanceNumber ``k + 1``, SeriesNumber,
      SeriesDescription with ``series_description_suffix``;
    - ImageType ``DERIVED\\SECONDARY`` with the source's value 3, DerivationDescription,
      DerivationCodeSequence (DCM 113085 "Spatial resampling"), SourceImageSequence (the source
      slice, and its frame), ReferencedSeriesSequence;
    - WindowCenter/WindowWidth recomputed from the new values (0.5th–99.5th percentile);
    - PhotometricInterpretation MONOCHROME1 when the source series is MONOCHROME1 (its values were
      read as stored, not inverted, so the derived series displays as its source did), else MONOCHROME2.

    Dropped: private tags (they can describe the old matrix, and no one can update them), overlays,
    curves, icons, pixel padding and min/max pixel values, VOI and modality LUTs, instance creation
    time. Everything else (patient, study, equipment, acquisition parameters, frame of reference,
    SpecificCharacterSet) is the source's. A volume not read from DICOM gets a new header from
    ``volume.meta["tags"]``. The UIDs are derived from the values and geometry written: the same
    result written again gives the same files, byte for byte.

    Values (:func:`mrisr.io.encode_values` in int16, uint16 for an unsigned ``volume.dtype``): whole
    numbers that fit are stored exactly with RescaleSlope 1; other data (a float result, out of range)
    with a RescaleSlope and RescaleIntercept that keep the physical units (to within half a slope,
    1/131,070 of the range); :func:`dicom_as_written` gives the values written.

    Args:
        volume: A 3D volume (RAS affine; the DICOM geometry is derived from it).
        folder: The series folder to create.
        series_description_suffix: Appended to the input's SeriesDescription.
        series_number: SeriesNumber of the new series; default the input's + 1000 (1000 when none).

    Returns:
        ``folder``.

    Raises:
        UnsupportedDataError: A 4D volume, data with NaN/infinite values, or a grid DICOM cannot
            hold (see :func:`check_dicom_grid`).
    """
    out = Path(folder)
    if volume.data.ndim != 3:
        raise UnsupportedDataError(out, f"DICOM output takes 3D volumes, got shape {volume.data.shape}")
    check_dicom_grid(volume)
    try:
        stored, slope, inter = _encode(np.asarray(volume.data), volume.dtype)
    except UnsupportedDataError as exc:
        raise UnsupportedDataError(out, exc.reason) from exc
    plan = _plan(volume, stored, slope, inter, description_suffix=series_description_suffix, number=series_number)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for k in range(stored.shape[2]):
            _save(_slice_dataset(plan, k, study_seed=str(volume.path or out)), tmp / f"IM{k + 1:05d}.dcm")
    log.debug("wrote %d slices to %s", stored.shape[2], out)
    return out


@dataclass(frozen=True, eq=False)
class _Plan:
    """Everything the slices of one derived series share (worked out once)."""

    stored: np.ndarray  # (i, j, k) int16/uint16
    slope: float
    inter: float
    lps: np.ndarray  # 4×4 voxel-to-LPS affine of the output grid
    source: DicomSource | None
    tags: dict[str, str]
    sop_class: UID
    series_uid: str
    frame_uid: str
    series_number: int
    description: str
    window: tuple[float, float]
    photometric: str  # MONOCHROME1 when the source series is (its values are not inverted), else MONOCHROME2

    @property
    def row_dir(self) -> np.ndarray:
        return self.lps[:3, 0] / np.linalg.norm(self.lps[:3, 0])

    @property
    def col_dir(self) -> np.ndarray:
        return self.lps[:3, 1] / np.linalg.norm(self.lps[:3, 1])

    @property
    def slice_gap(self) -> float:
        """Distance between slices along the slice normal (mm)."""
        col_k = self.lps[:3, 2]
        return abs(float(np.cross(self.row_dir, self.col_dir) @ col_k)) or float(np.linalg.norm(col_k))

    @property
    def derivation(self) -> str:
        """DerivationDescription: what made the series, onto which grid."""
        di, dj = (float(np.linalg.norm(self.lps[:3, n])) for n in (0, 1))
        text = f"mrisr {__version__}: CNN super-resolution onto a {di:.4g} x {dj:.4g} x {self.slice_gap:.4g} mm grid"
        return text + (f" from {self.source.slice_step:.4g} mm slices" if self.source is not None else "")

    @property
    def through_plane(self) -> bool:
        """True when the slice step differs from the source's (a through-plane refinement)."""
        step = float(np.linalg.norm(self.lps[:3, 2]))
        return self.source is not None and not np.isclose(step, self.source.slice_step, rtol=1e-4, atol=1e-6)


def _plan(
    volume: Volume, stored: np.ndarray, slope: float, inter: float, *, description_suffix: str, number: int | None
) -> _Plan:
    tags = dict(volume.meta.get("tags") or {})
    source = volume.meta.get("dicom")
    lps = LPS_TO_RAS @ np.asarray(volume.affine, dtype=np.float64)
    if number is None:
        try:
            number = int(float(tags.get("SeriesNumber", "0"))) + 1000
        except ValueError:
            number = 1000
    # UIDs derived from what is written (values, geometry, source series), so that writing the same
    # result again (a resumed or repeated run) gives the same files, byte for byte.
    identity = hashlib.sha256(stored.tobytes())
    identity.update(lps.tobytes() + np.array([slope, inter], dtype=np.float64).tobytes())
    for part in (str(stored.shape), str(number), tags.get("SeriesInstanceUID", ""), str(volume.path or "")):
        identity.update(part.encode())
    return _Plan(
        stored=stored,
        slope=slope,
        inter=inter,
        lps=lps,
        source=source if isinstance(source, DicomSource) and source.slices else None,
        tags=tags,
        sop_class=UID(_sop_class(tags)),
        series_uid=generate_uid(entropy_srcs=[identity.hexdigest(), "series"]),
        frame_uid=tags.get("FrameOfReferenceUID")
        or generate_uid(entropy_srcs=[str(volume.path or ""), lps.tobytes().hex(), "frame"]),
        series_number=int(number),
        description=(tags.get("SeriesDescription", "") or "mrisr")[: 64 - len(description_suffix)] + description_suffix,
        window=window(stored, slope, inter),
        photometric=_photometric(source if isinstance(source, DicomSource) else None),
    )


def _photometric(source: DicomSource | None) -> str:
    """The PhotometricInterpretation of a derived series: its source's MONOCHROME1 or MONOCHROME2.

    Values are read as stored × slope + intercept, never inverted (:mod:`mrisr.io.dicom.pixels`), so a
    derived series of a MONOCHROME1 source holds the same kind of values and must say MONOCHROME1 to
    display as its source did.
    """
    if source is not None and source.slices and is_monochrome1(source.slices[0].header):
        return "MONOCHROME1"
    return "MONOCHROME2"


def _slice_dataset(plan: _Plan, k: int, *, study_seed: str) -> Dataset:
    """The dataset of output slice ``k``: its source slice's header (or a new one) with the new
    identity, references, grid and pixels."""
    ni, nj, _ = plan.stored.shape
    lps = plan.lps
    centre = lps[:3, :3] @ np.array([(ni - 1) / 2.0, (nj - 1) / 2.0, float(k)]) + lps[:3, 3]
    src = plan.source.slices[plan.source.index_at(centre)] if plan.source is not None else None
    ds = from_source(src) if src is not None else from_tags(plan.tags, sop_class=plan.sop_class, study_seed=study_seed)
    sop_uid = generate_uid(entropy_srcs=[plan.series_uid, str(k)])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = plan.sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    ds.SOPClassUID = plan.sop_class
    ds.SOPInstanceUID = sop_uid
    ds.SeriesInstanceUID = plan.series_uid
    ds.FrameOfReferenceUID = ds.get("FrameOfReferenceUID") or plan.frame_uid
    set_tag(ds, "SeriesDescription", plan.description)
    ds.SeriesNumber = plan.series_number
    ds.InstanceNumber = k + 1
    ds.ImageType = derived_image_type(src.header if src is not None else None)
    ds.DerivationDescription = plan.derivation
    if src is not None and plan.source is not None:
        set_references(ds, src, plan.source.series_uid)
    # grid
    row_dir, col_dir = plan.row_dir, plan.col_dir
    position = lps[:3, :3] @ np.array([0.0, 0.0, float(k)]) + lps[:3, 3]
    ds.ImagePositionPatient = [ds_value(v) for v in position]
    ds.ImageOrientationPatient = [ds_value(v) for v in (*row_dir, *col_dir)]
    ds.PixelSpacing = [ds_value(float(np.linalg.norm(lps[:3, 1]))), ds_value(float(np.linalg.norm(lps[:3, 0])))]
    if src is None or plan.through_plane or "SliceThickness" not in ds:
        ds.SliceThickness = ds_value(plan.slice_gap)
    ds.SpacingBetweenSlices = ds_value(plan.slice_gap)
    ds.SliceLocation = ds_value(float(np.cross(row_dir, col_dir) @ position))
    # pixels
    stored = plan.stored
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = plan.photometric
    ds.Rows = int(nj)
    ds.Columns = int(ni)
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0 if stored.dtype == np.uint16 else 1
    had_rescale = src is None or any(kw in src.header for kw in ("RescaleSlope", "RescaleIntercept"))
    if had_rescale or (plan.slope, plan.inter) != (1.0, 0.0):
        ds.RescaleIntercept = ds_value(plan.inter)
        ds.RescaleSlope = ds_value(plan.slope)
    ds.WindowCenter = ds_value(plan.window[0])
    ds.WindowWidth = ds_value(plan.window[1])
    ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).astype(stored.dtype.newbyteorder("<")).tobytes()
    return ds
