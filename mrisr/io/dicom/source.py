"""What a DICOM volume remembers of its source slices, so that a derived series can start from them.

:func:`mrisr.io.dicom.read_dicom_series` puts a :class:`DicomSource` into ``Volume.meta["dicom"]``:
the header of every source slice (or frame) in ``k`` order, without pixel data, private tags,
overlays or icons, and the LPS grid of the source. :func:`mrisr.io.dicom.write_dicom_series` builds
each output slice from the header of the source slice that contains it.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

log = logging.getLogger(__name__)

# Attributes that describe one instance's pixel matrix or storage; never carried by a source header.
_STORAGE_KEYWORDS = frozenset(
    {
        "PixelData",
        "FloatPixelData",
        "DoubleFloatPixelData",
        "ExtendedOffsetTable",
        "ExtendedOffsetTableLengths",
        "IconImageSequence",
        "DataSetTrailingPadding",
    }
)


def _dropped(tag: BaseTag) -> bool:
    """Private tags (they can describe the old matrix in ways no one can update), overlays (60xx) and
    curves (50xx) drawn on the old matrix, the file meta group and the pixel data group."""
    group = tag.group
    return tag.is_private or group == 0x0002 or (group & 0xFF00) in (0x5000, 0x6000) or group >= 0x7FE0


def clean_header(ds: Dataset, exclude: frozenset[str] = frozenset()) -> Dataset:
    """A detached copy of ``ds`` without pixel data, private tags, overlays, curves and icons, nor the
    attributes named in ``exclude``.

    Values deferred at reading are loaded here, while the file is still there.
    """
    out = Dataset()
    for tag in list(ds.keys()):
        if _dropped(BaseTag(tag)):
            continue
        try:
            elem = ds[tag]
        except (ValueError, TypeError, KeyError, OverflowError) as exc:  # a value its VR cannot hold
            log.warning("%s: not copying %s, its value cannot be read (%s)", getattr(ds, "filename", ""), tag, exc)
            continue
        if elem.keyword in _STORAGE_KEYWORDS or elem.keyword in exclude:
            continue
        out.add(copy.deepcopy(elem))
    return out


# Transfer syntaxes that always lose information (JPEG baseline and extended, JPEG-LS near-lossless,
# the video syntaxes); JPEG 2000 and HTJ2K "lossy or lossless" say which in LossyImageCompression.
_LOSSY_SYNTAXES = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81")
_VIDEO_SYNTAX_PREFIX = "1.2.840.10008.1.2.4.10"  # MPEG-2, MPEG-4, HEVC: 1.2.840.10008.1.2.4.100 ...


def is_lossy_syntax(uid: str) -> bool:
    """True for a transfer syntax that always loses information."""
    return uid in _LOSSY_SYNTAXES or uid.startswith(_VIDEO_SYNTAX_PREFIX)


@dataclass(frozen=True, eq=False)
class SourceSlice:
    """One source slice: a single-frame instance, or one frame of a multi-frame instance.

    Attributes:
        header: A classic single-frame header of the slice (:func:`clean_header`; for a frame, the
            multi-frame object's attributes with the frame's functional groups flattened in).
        sop_class: SOPClassUID of the source instance.
        sop_instance: SOPInstanceUID of the source instance.
        frame: 1-based frame number in a multi-frame instance, ``None`` for a single-frame one.
        lossy: The source's pixels were stored with a lossy transfer syntax (a derived image then
            carries LossyImageCompression ``01``, as DICOM requires).
    """

    header: Dataset
    sop_class: str
    sop_instance: str
    frame: int | None = None
    lossy: bool = False


@dataclass(frozen=True, eq=False)
class DicomSource:
    """The source slices of a DICOM volume, in ``k`` order, and their LPS grid.

    Attributes:
        slices: One entry per ``k`` index of the source volume.
        affine_lps: 4×4 voxel-to-LPS affine of the source grid (mm).
        series_uid: SeriesInstanceUID of the source series.
    """

    slices: tuple[SourceSlice, ...]
    affine_lps: np.ndarray
    series_uid: str

    @property
    def slice_step(self) -> float:
        """Length of the source ``k`` step (mm)."""
        return float(np.linalg.norm(self.affine_lps[:3, 2]))

    def index_at(self, point_lps: np.ndarray) -> int:
        """Index of the source slice that contains ``point_lps`` (the nearest one, clipped to the
        series; a point halfway between two slices goes to the higher index)."""
        k = float((np.linalg.inv(self.affine_lps) @ np.append(np.asarray(point_lps, dtype=np.float64), 1.0))[2])
        return int(np.clip(np.floor(k + 0.5), 0, len(self.slices) - 1))
