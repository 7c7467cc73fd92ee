"""Enhanced (multi-frame) DICOM objects: one classic single-frame header per frame.

An Enhanced MR (or CT) Image object holds all slices of a series as frames; the geometry and the
rescale of a frame live in its functional groups: the Per-frame Functional Groups Sequence item of
the frame, else the Shared Functional Groups Sequence. :func:`split_frames` flattens them, frame by
frame, into the attributes a classic single-frame image carries at its top level (Plane Position →
ImagePositionPatient, Plane Orientation → ImageOrientationPatient, Pixel Measures → PixelSpacing,
SliceThickness, SpacingBetweenSlices, Pixel Value Transformation → RescaleSlope/Intercept, and the
MR timing, echo, averages, coil and frame type groups), so that one reading path places every
slice by its own position. For MR it also derives the classic ScanningSequence and SequenceVariant
from the enhanced pulse-sequence attributes.

One object must hold one stack of parallel slices, each position once: several stacks, several
orientations, or frames repeating positions (time points, echoes) are refused with the reason.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import DSfloat

from mrisr.errors import InconsistentGeometryError, UnsupportedDataError
from mrisr.io.dicom.source import clean_header

_SHARED = "SharedFunctionalGroupsSequence"
_PER_FRAME = "PerFrameFunctionalGroupsSequence"

# Top-level attributes of the multi-frame modules that a classic single-frame image does not have.
_MULTIFRAME_ONLY = frozenset(
    {
        _SHARED,
        _PER_FRAME,
        "NumberOfFrames",
        "FrameIncrementPointer",
        "DimensionOrganizationSequence",
        "DimensionIndexSequence",
        "DimensionOrganizationType",
        "ConcatenationUID",
        "InConcatenationNumber",
        "InConcatenationTotalNumber",
        "ConcatenationFrameOffsetNumber",
        "RepresentativeFrameNumber",
        "ContentQualification",
        "PixelPresentation",
        "VolumetricProperties",
        "VolumeBasedCalculationTechnique",
        "ComplexImageComponent",
        "AcquisitionContrast",
        "ResonantNucleus",
        "KSpaceFiltering",
        "EchoPulseSequence",
        "MultipleSpinEcho",
        "MultiPlanarExcitation",
        "PhaseContrast",
        "TimeOfFlightContrast",
        "Spoiling",
        "SteadyStatePulseSequence",
        "EchoPlanarPulseSequence",
        "SaturationRecovery",
        "SpectrallySelectedSuppression",
        "OversamplingPhase",
        "GeometryOfKSpaceTraversal",
        "SegmentedKSpaceTraversal",
        "RectilinearPhaseEncodeReordering",
        "CoverageOfKSpace",
        "ApplicableSafetyStandardAgency",
        "ApplicableSafetyStandardDescription",
        "IsocenterPosition",
        "B1rms",
        "AcquisitionDuration",
        "PresentationLUTShape",
        "ReferencedImageEvidenceSequence",
        "SourceImageEvidenceSequence",
    }
)

# functional group sequence → (attribute in its item, classic attribute, whether the classic one is DS)
_FLATTENED: tuple[tuple[str, tuple[tuple[str, str, bool], ...]], ...] = (
    ("PlanePositionSequence", (("ImagePositionPatient", "ImagePositionPatient", False),)),
    ("PlaneOrientationSequence", (("ImageOrientationPatient", "ImageOrientationPatient", False),)),
    (
        "PixelMeasuresSequence",
        (
            ("PixelSpacing", "PixelSpacing", False),
            ("SliceThickness", "SliceThickness", False),
            ("SpacingBetweenSlices", "SpacingBetweenSlices", False),
        ),
    ),
    (
        "PixelValueTransformationSequence",
        (
            ("RescaleIntercept", "RescaleIntercept", False),
            ("RescaleSlope", "RescaleSlope", False),
            ("RescaleType", "RescaleType", False),
        ),
    ),
    ("FrameVOILUTSequence", (("WindowCenter", "WindowCenter", False), ("WindowWidth", "WindowWidth", False))),
    (
        "MRTimingAndRelatedParametersSequence",
        (
            ("RepetitionTime", "RepetitionTime", False),
            ("FlipAngle", "FlipAngle", False),
            ("EchoTrainLength", "EchoTrainLength", False),
        ),
    ),
    ("MREchoSequence", (("EffectiveEchoTime", "EchoTime", True),)),
    ("MRAveragesSequence", (("NumberOfAverages", "NumberOfAverages", False),)),
    (
        "MRFOVGeometrySequence",
        (
            ("PercentSampling", "PercentSampling", False),
            ("PercentPhaseFieldOfView", "PercentPhaseFieldOfView", False),
            ("InPlanePhaseEncodingDirection", "InPlanePhaseEncodingDirection", False),
        ),
    ),
    ("MRReceiveCoilSequence", (("ReceiveCoilName", "ReceiveCoilName", False),)),
    ("MRTransmitCoilSequence", (("TransmitCoilName", "TransmitCoilName", False),)),
    ("MRImagingModifierSequence", (("PixelBandwidth", "PixelBandwidth", False),)),
    ("FrameContentSequence", (("FrameAcquisitionDateTime", "AcquisitionDateTime", False),)),
    ("CardiacSynchronizationSequence", (("NominalCardiacTriggerDelayTime", "TriggerTime", True),)),
    ("MRDiffusionSequence", (("DiffusionBValue", "DiffusionBValue", False),)),
    ("FrameAnatomySequence", (("FrameLaterality", "ImageLaterality", False),)),
)

# Type 2 attributes of the classic MR Image module: present, empty where the source has no value.
_MR_TYPE2 = ("ScanOptions", "MRAcquisitionType", "EchoTime", "EchoTrainLength")


@dataclass(frozen=True)
class Frame:
    """One frame of a multi-frame object as a classic slice.

    Attributes:
        header: Classic single-frame header (no pixel data, no private tags).
        number: 1-based frame number.
        stack: StackID of the frame ('' when the object names none).
    """

    header: Dataset
    number: int
    stack: str


def is_multiframe(ds: Dataset) -> bool:
    """True for an object with several frames or with per-frame functional groups."""
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        frames = 1
    return frames > 1 or _PER_FRAME in ds


def _group_item(groups: Sequence[Dataset | None], keyword: str) -> Dataset | None:
    """The first item of functional group ``keyword`` in the first of ``groups`` that holds it."""
    for group in groups:
        if group is not None and keyword in group:
            seq = group[keyword].value
            if seq:
                return seq[0]
    return None


def _find(groups: Sequence[Dataset | None], top: Dataset, keyword: str) -> str:
    """A CS attribute looked up in every item of ``groups`` and then at the top level ('' when absent)."""
    for group in groups:
        if group is None:
            continue
        for elem in group:
            if elem.VR == "SQ":
                for item in elem.value:
                    if keyword in item and item.get(keyword) not in (None, ""):
                        return str(item.get(keyword)).upper()
    return str(top.get(keyword) or "").upper()


def _ds(value: object) -> DSfloat:
    return DSfloat(float(value), auto_format=True)  # type: ignore[arg-type]


def _mr_sequence_terms(groups: Sequence[Dataset | None], top: Dataset) -> tuple[list[str], list[str]]:
    """Classic ScanningSequence and SequenceVariant values from the enhanced pulse-sequence terms."""
    scanning: list[str] = []
    echo = _find(groups, top, "EchoPulseSequence")
    if echo in ("SPIN", "BOTH"):
        scanning.append("SE")
    if echo in ("GRADIENT", "BOTH"):
        scanning.append("GR")
    if _find(groups, top, "InversionRecovery") == "YES":
        scanning.append("IR")
    if _find(groups, top, "EchoPlanarPulseSequence") == "YES":
        scanning.append("EP")
    variant: list[str] = []
    if _find(groups, top, "SegmentedKSpaceTraversal") not in ("", "SINGLE"):
        variant.append("SK")
    if _find(groups, top, "MagnetizationTransfer") not in ("", "NONE"):
        variant.append("MTC")
    if _find(groups, top, "SteadyStatePulseSequence") not in ("", "NONE"):
        variant.append("SS")
    if _find(groups, top, "Spoiling") not in ("", "NONE"):
        variant.append("SP")
    if _find(groups, top, "OversamplingPhase") not in ("", "NONE"):
        variant.append("OSP")
    return scanning or ["RM"], variant or ["NONE"]


def _flatten(base: Dataset, top: Dataset, frame_groups: Dataset | None, shared: Dataset | None) -> Dataset:
    header = copy.deepcopy(base)
    groups = (frame_groups, shared)
    for seq_keyword, pairs in _FLATTENED:
        item = _group_item(groups, seq_keyword)
        if item is None:
            continue
        for src, dst, as_ds in pairs:
            if src not in item or item.get(src) in (None, ""):
                continue
            value = item.get(src)
            if as_ds:
                setattr(header, dst, _ds(value[0] if isinstance(value, (list, tuple, MultiValue)) else value))
            elif dst == src:
                header[dst] = copy.deepcopy(item[src])
            else:
                setattr(header, dst, copy.deepcopy(value))
    frame_type = _group_item(groups, "MRImageFrameTypeSequence") or _group_item(groups, "CTImageFrameTypeSequence")
    if frame_type is not None and "FrameType" in frame_type:
        header.ImageType = list(frame_type.FrameType)
    if str(top.get("Modality", "")).upper() == "MR":
        scanning, variant = _mr_sequence_terms(groups, top)
        header.ScanningSequence = scanning
        header.SequenceVariant = variant
        modifier = _group_item(groups, "MRModifierSequence")
        if "IR" in scanning and modifier is not None and modifier.get("InversionTimes"):
            header.InversionTime = _ds(modifier.InversionTimes[0])
        for keyword in _MR_TYPE2:
            if keyword not in header:
                setattr(header, keyword, "")
    return header


def split_frames(path: Path, ds: Dataset) -> list[Frame]:
    """Classic headers of the frames of a multi-frame object, in frame order.

    Raises:
        UnsupportedDataError: A multi-frame object without per-frame functional groups (its frames
            cannot be placed), or one holding several stacks.
    """
    per_frame = ds.get(_PER_FRAME)
    try:
        n_frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError) as exc:
        raise UnsupportedDataError(path, f"bad NumberOfFrames {ds.get('NumberOfFrames')!r}") from exc
    if not per_frame:
        raise UnsupportedDataError(
            path, f"multi-frame DICOM ({n_frames} frames) without per-frame functional groups: cannot place its frames"
        )
    if len(per_frame) != n_frames:
        raise UnsupportedDataError(
            path, f"{len(per_frame)} per-frame functional group items for NumberOfFrames {n_frames}"
        )
    shared_seq = ds.get(_SHARED)
    shared = shared_seq[0] if shared_seq else None
    base = clean_header(ds, exclude=_MULTIFRAME_ONLY)
    frames = []
    for n, item in enumerate(per_frame, start=1):
        content = _group_item((item, shared), "FrameContentSequence")
        stack = str(content.get("StackID", "") or "") if content is not None else ""
        frames.append(Frame(header=_flatten(base, ds, item, shared), number=n, stack=stack))
    stacks = sorted({f.stack for f in frames})
    if len(stacks) > 1:
        raise UnsupportedDataError(
            path,
            f"multi-frame object holds {len(stacks)} stacks (StackID {', '.join(stacks[:5])}): "
            "export them as separate series",
        )
    return frames


def check_one_stack(path: Path, frames: Sequence[Frame]) -> None:
    """Refuse frames of several orientations, or frames that repeat positions.

    Raises:
        UnsupportedDataError: Naming ``path``, the number of orientations or of frames per position.
    """

    def floats(header: Dataset, keyword: str) -> tuple[float, ...]:
        try:
            return tuple(float(v) for v in header.get(keyword) or ())
        except (TypeError, ValueError) as exc:
            raise InconsistentGeometryError(path, f"bad {keyword} {header.get(keyword)!r}") from exc

    orientations: list[np.ndarray] = []  # distinct to 1e-4, as the slices of a classic series
    for f in frames:
        iop = np.array(floats(f.header, "ImageOrientationPatient"))
        if not any(o.shape == iop.shape and np.allclose(o, iop, atol=1e-4) for o in orientations):
            orientations.append(iop)
    if len(orientations) > 1:
        raise UnsupportedDataError(
            path,
            f"multi-frame object holds {len(orientations)} slice orientations (several stacks): "
            "export them as separate series",
        )
    positions = {tuple(np.round(np.array(floats(f.header, "ImagePositionPatient")), 3)) for f in frames}
    if len(positions) < len(frames):
        raise UnsupportedDataError(
            path,
            f"multi-frame object holds {len(frames)} frames at {len(positions)} positions "
            "(time points, echoes or repeated stacks are not supported)",
        )
