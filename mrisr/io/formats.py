"""Which file formats mrisr reads, and why it refuses the image formats it does not, by file name
(and, for ``.hdr``, its first bytes).

Read (one file, one study): NIfTI-1/2 (``.nii``, ``.nii.gz``; :mod:`mrisr.io.nifti`), MetaImage
(``.mha``, ``.mhd`` with its data file) and NRRD (``.nrrd``, ``.nhdr`` with its data file) through
SimpleITK (:mod:`mrisr.io.itk`). DICOM files are recognised by their content, whatever their name
(:mod:`mrisr.io.dicom`).

Refused, with a reason (:func:`refusal`): Analyze 7.5 and NIfTI-1 pairs (``.hdr``/``.img``), MINC
(``.mnc``), Philips PAR/REC (``.par``/``.rec``), FreeSurfer MGH (``.mgh``/``.mgz``) and archives
(``.zip``, ``.tar``, ``.tgz``, ...). How :mod:`mrisr.discovery` treats them: a file named on the
command line is a failed study with that reason; found inside a folder, an image file is a failed
study too, an archive one warning line (archives often sit beside their unpacked contents).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

#: Single-file formats read through SimpleITK, by suffix.
ITK_SUFFIXES: dict[str, Literal["metaimage", "nrrd"]] = {
    ".mha": "metaimage",
    ".mhd": "metaimage",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
}

_CONVERT = "convert it to NIfTI"
_ARCHIVES = (".zip", ".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".7z", ".rar")
_REFUSED: dict[tuple[str, ...], str] = {
    (".mnc", ".mnc.gz", ".mnc2"): f"MINC is not read: {_CONVERT} (mnc2nii, or nibabel's MINC reader)",
    (".par", ".rec"): f"Philips PAR/REC is not read: {_CONVERT} (dcm2niix, or nibabel's parrec2nii)",
    (".mgh", ".mgz"): f"FreeSurfer MGH is not read: {_CONVERT} (mri_convert)",
    (".img", ".img.gz"): (
        f"the voxel file of an Analyze 7.5 or NIfTI-1 pair (.hdr/.img) is not read: {_CONVERT} (one .nii file)"
    ),
}
_ANALYZE = (
    "Analyze 7.5 (.hdr/.img) is not read: it has no reliable orientation (left and right may be "
    f"swapped); {_CONVERT} with the orientation checked"
)
_NIFTI_PAIR = f"a NIfTI-1 pair (.hdr/.img) is not read: {_CONVERT} as one .nii file (nib.save(nib.load(hdr), 'x.nii'))"


@dataclass(frozen=True)
class Refusal:
    """Why a recognisable file is not read.

    Attributes:
        reason: One line, with what to do instead.
        archive: The file is an archive (found inside a folder it is named in a warning, not failed).
    """

    reason: str
    archive: bool = False


def itk_format(path: str | Path) -> Literal["metaimage", "nrrd"] | None:
    """``"metaimage"`` or ``"nrrd"`` for a file name SimpleITK reads as such, else ``None``."""
    return ITK_SUFFIXES.get(Path(path).suffix.lower())


def refusal(path: str | Path) -> Refusal | None:
    """Why the image or archive file ``path`` is not read, or ``None`` when its name says nothing
    (then it may still be DICOM). A ``.hdr`` is only refused when its first bytes are an Analyze
    7.5 / NIfTI-1 pair header (``sizeof_hdr`` 348); other ``.hdr`` files (ENVI, text) say nothing."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith(_ARCHIVES):
        return Refusal("an archive is not read: unpack it and give the folder", archive=True)
    for suffixes, reason in _REFUSED.items():
        if name.endswith(suffixes):
            return Refusal(reason)
    if name.endswith(".hdr"):
        try:
            with open(p, "rb") as fh:
                head = fh.read(348)
        except OSError:
            return None  # discovery names the file when it tries to read it
        if len(head) == 348 and 348 in (struct.unpack("<i", head[:4])[0], struct.unpack(">i", head[:4])[0]):
            return Refusal(_NIFTI_PAIR if head[344:347] == b"ni1" else _ANALYZE)
    return None


def paired_with_hdr(path: str | Path) -> bool:
    """True for an ``.img`` file beside a ``.hdr`` of the same stem (the pair is reported once, on
    its header)."""
    p = Path(path)
    name = p.name
    for suffix in (".img.gz", ".img"):
        if name.lower().endswith(suffix):
            stem = name[: -len(suffix)]
            return any((p.parent / f"{stem}{h}").is_file() for h in (".hdr", ".HDR", ".hdr.gz"))
    return False
