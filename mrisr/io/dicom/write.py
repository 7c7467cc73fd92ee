"""Writing a volume as a derived DICOM series, atomically, with RAS converted back to LPS."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat

from mrisr.errors import UnsupportedDataError
from mrisr.fsutil import atomic_path
from mrisr.io import Volume
from mrisr.io.dicom.common import (
    _NOT_WRITTEN,
    _TYPE2_TAGS,
    CT_IMAGE_STORAGE,
    LPS_TO_RAS,
    MR_IMAGE_STORAGE,
    SECONDARY_CAPTURE_STORAGE,
)

log = logging.getLogger(__name__)


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
    complete (an existing ``folder`` is replaced). Each file gets new SOP/series UIDs (derived from the values
    and geometry written: the same result written again gets the same UIDs, byte-identical files), the slice's
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
    sop_class = UID(_sop_class(tags))
    # UIDs derived from what is written (values, geometry, source series), so that writing the same
    # result again (a resumed or repeated run) gives the same files, byte for byte.
    identity = hashlib.sha256(stored.tobytes())
    identity.update(lps.tobytes() + np.array([slope, inter], dtype=np.float64).tobytes())
    for part in (str(stored.shape), str(series_number), tags.get("SeriesInstanceUID", ""), str(volume.path or "")):
        identity.update(part.encode())
    series_uid = generate_uid(entropy_srcs=[identity.hexdigest(), "series"])
    frame_uid = tags.get("FrameOfReferenceUID") or generate_uid(
        entropy_srcs=[str(volume.path or ""), lps.tobytes().hex(), "frame"]
    )
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for k in range(nk):
            ds = Dataset()
            sop_uid = generate_uid(entropy_srcs=[series_uid, str(k)])
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
