"""DICOM constants and header helpers shared by grouping, reading and writing (LPS lives here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import UID

from mrisr.errors import UnreadableFileError

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
    """True when ``path`` holds the DICOM prefix at byte 128.

    Raises:
        UnreadableFileError: The file cannot be opened or read (whether it is DICOM is then unknown).
    """
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError as exc:
        raise UnreadableFileError(path, f"cannot be read ({exc.strerror or exc})") from exc


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
        why = _cut_short(ds)
        if why is not None:
            raise CutShortError(path, why, _tag_str(ds, "SeriesInstanceUID") or None)
        return ds
    # Old files without preamble/prefix: pydicom parses anything with force=True, so only accept a
    # result that holds a SOP class, as every DICOM object does.
    try:
        ds = pydicom.dcmread(path, force=True, defer_size=1024)
        return ds if "SOPClassUID" in ds else None
    except Exception:  # pydicom raises arbitrary errors on non-DICOM bytes read with force=True
        return None


class CutShortError(UnreadableFileError):
    """A DICOM file whose header was parsed but which was cut short; ``series_uid`` is the series its
    header names (``None`` when it does not get that far)."""

    def __init__(self, path: Path, reason: str, series_uid: str | None) -> None:
        super().__init__(path, reason)
        self.series_uid = series_uid


#: File name endings that promise a DICOM file.
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


def _suspect_non_dicom(path: Path) -> str | None:
    """Why a file that is not DICOM may still be a broken slice (``None`` when it is just another
    file): a DICOM-like name, or no extension and fewer bytes than the DICOM preamble and prefix."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if path.suffix.lower() in DICOM_SUFFIXES:
        return f"named like a DICOM file but is not one ({size} bytes)"
    if not path.suffix and size < 132:
        return f"too short to be a DICOM file ({size} bytes)"
    return None


def _cut_short(ds: Dataset) -> str | None:
    """Why a parsed DICOM file looks cut short (pydicom stops quietly at the end of a truncated file):
    a SOP class UID that is no valid UID (cut mid-value), or an image storage class without pixel data."""
    sop = _tag_str(ds, "SOPClassUID")
    if sop and not UID(sop).is_valid:
        return f"truncated or corrupt DICOM header (SOP class UID {sop!r} is not a valid UID)"
    meta = getattr(ds, "file_meta", None)
    cls = UID(sop or (_tag_str(meta, "MediaStorageSOPClassUID") if meta is not None else ""))
    if "PixelData" not in ds and cls.is_valid and str(cls.name).endswith("Image Storage"):
        return f"{cls.name} without pixel data (truncated file?)"
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
