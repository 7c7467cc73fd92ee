"""The header of one derived slice: a copy of its source slice's header with only what the new
pixels and grid change replaced, or (for a volume that did not come from DICOM) a new header.

What is replaced, and why, is the contract of :func:`mrisr.io.dicom.write_dicom_series` (see its
docstring and docs/usage.md, "DICOM output").
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pydicom.valuerep import DSfloat

from mrisr.io.dicom.common import _NOT_WRITTEN, _TYPE2_TAGS, MR_IMAGE_STORAGE
from mrisr.io.dicom.source import SourceSlice

log = logging.getLogger(__name__)

# Attributes of a source header that describe its own pixel matrix, storage, instance or references:
# dropped from the copy, then (where the derived image has them) written anew.
_REPLACED = frozenset(
    {
        "SOPInstanceUID",
        "SeriesInstanceUID",
        "InstanceNumber",
        "InstanceCreationDate",
        "InstanceCreationTime",
        "InstanceCreatorUID",
        "Rows",
        "Columns",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "PlanarConfiguration",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "PixelAspectRatio",
        "SmallestImagePixelValue",
        "LargestImagePixelValue",
        "SmallestPixelValueInSeries",
        "LargestPixelValueInSeries",
        "PixelPaddingValue",
        "PixelPaddingRangeLimit",
        "RescaleSlope",
        "RescaleIntercept",
        "ModalityLUTSequence",
        "WindowCenter",
        "WindowWidth",
        "WindowCenterWidthExplanation",
        "VOILUTSequence",
        "ImagerPixelSpacing",
        "ImagesInAcquisition",
        "SourceImageSequence",
        "DerivationDescription",
        "DerivationCodeSequence",
        "ReferencedSeriesSequence",
        "StudiesContainingOtherReferencedInstancesSequence",
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "PixelSpacing",
        "SpacingBetweenSlices",
        "SliceLocation",
    }
)

# DICOM CID 7203 "Image Derivation" and CID 7202 "Source Image Purposes of Reference".
_DERIVATION_CODE = ("113085", "DCM", "Spatial resampling")
_SOURCE_PURPOSE_CODE = ("121322", "DCM", "Source image for image processing operation")


def ds_value(x: float) -> DSfloat:
    """``x`` as a DICOM decimal string (at most 16 characters)."""
    return DSfloat(float(x), auto_format=True)


def set_tag(ds: Dataset, keyword: str, value: Any) -> None:
    """Set a tag, skipping (with a warning) a value its VR refuses."""
    try:
        setattr(ds, keyword, value)
    except (ValueError, TypeError, OverflowError) as exc:
        log.warning("not writing %s=%r: %s", keyword, value, exc)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def from_source(source: SourceSlice) -> Dataset:
    """A copy of the source slice's header without what the derived slice replaces.

    Private tags, overlays, curves and icons were already left out when the source was read
    (:func:`mrisr.io.dicom.source.clean_header`).
    """
    ds = copy.deepcopy(source.header)
    for keyword in _REPLACED:
        if keyword in ds:
            del ds[keyword]
    if source.lossy and str(ds.get("LossyImageCompression", "")) != "01":
        ds.LossyImageCompression = "01"  # once lossy, every derived image says so
    return ds


def from_tags(tags: dict[str, str], *, sop_class: str, study_seed: str) -> Dataset:
    """A new header for a volume that did not come from DICOM: patient, study and series tags from
    ``Volume.meta["tags"]``, the type 2 tags present (empty where unknown)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    for kw, value in tags.items():
        if kw not in _NOT_WRITTEN:
            set_tag(ds, kw, value)
    for kw in _TYPE2_TAGS:  # required to be present, even when empty
        if kw not in ds:
            setattr(ds, kw, "")
    if "StudyInstanceUID" not in ds:
        ds.StudyInstanceUID = generate_uid(entropy_srcs=[study_seed])
    if "Modality" not in ds:
        ds.Modality = "MR" if sop_class == MR_IMAGE_STORAGE else "OT"
    for kw in ("PatientPosition", "Laterality", "PositionReferenceIndicator", "Manufacturer"):  # type 2(C): unknown
        if kw not in ds:
            setattr(ds, kw, "")
    if sop_class == MR_IMAGE_STORAGE:
        # A NIfTI file does not say how it was acquired: the type 2 MR attributes are present and
        # empty; the type 1 ScanningSequence/SequenceVariant get the standard's catch-all terms.
        ds.ScanningSequence = ds.get("ScanningSequence") or "RM"
        ds.SequenceVariant = ds.get("SequenceVariant") or "NONE"
        for kw in ("ScanOptions", "MRAcquisitionType", "RepetitionTime", "EchoTime", "EchoTrainLength"):
            if kw not in ds:
                setattr(ds, kw, "")
    return ds


def derived_image_type(source: Dataset | None) -> list[str]:
    """``DERIVED\\SECONDARY`` followed by the source's ImageType value 3 (when it has one); ``OTHER``
    (a defined term of MR images, which need a value 3) for a volume that did not come from DICOM."""
    if source is None:
        return ["DERIVED", "SECONDARY", "OTHER"]
    values = [str(v) for v in (source.get("ImageType") or [])]
    return ["DERIVED", "SECONDARY", *values[2:3]]


def set_references(ds: Dataset, source: SourceSlice, series_uid: str) -> None:
    """SourceImageSequence (the one source slice, its frame for a multi-frame source) and the
    ReferencedSeriesSequence of the Common Instance Reference module, DerivationCodeSequence."""
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.sop_class
    ref.ReferencedSOPInstanceUID = source.sop_instance
    if source.frame is not None:
        ref.ReferencedFrameNumber = source.frame
    ref.PurposeOfReferenceCodeSequence = [_code(*_SOURCE_PURPOSE_CODE)]
    ds.SourceImageSequence = [ref]
    instance = Dataset()
    instance.ReferencedSOPClassUID = source.sop_class
    instance.ReferencedSOPInstanceUID = source.sop_instance
    series = Dataset()
    series.SeriesInstanceUID = series_uid
    series.ReferencedInstanceSequence = [instance]
    ds.ReferencedSeriesSequence = [series]
    ds.DerivationCodeSequence = [_code(*_DERIVATION_CODE)]


def window(stored: np.ndarray, slope: float, inter: float) -> tuple[float, float]:
    """Window centre and width (physical units) spanning the 0.5th to 99.5th percentile of the
    whole series (a strided sample of at most about a million voxels); the width is at least 1, as
    DICOM requires of a linear window."""
    flat = stored.reshape(-1)
    step = max(1, flat.size // 1_000_000)
    sample = flat[::step].astype(np.float64) * slope + inter
    lo, hi = (float(v) for v in np.percentile(sample, [0.5, 99.5])) if sample.size else (0.0, 1.0)
    width = max(hi - lo, 1.0)
    return (lo + hi) / 2.0, width
