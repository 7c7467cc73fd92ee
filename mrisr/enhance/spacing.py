"""Factors from headers: ``--target-spacing`` grouped per study, and the slice profile a header states.

The grid of every study is read from its header alone (NIfTI, MetaImage or NRRD header, DICOM headers
without pixel data), so that a target no study can reach is refused before any voxel is read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from mrisr.discovery import Study
from mrisr.errors import MrisrError, UnreadableFileError
from mrisr.geometry import Factors, factors_for_spacing, voxel_spacing
from mrisr.io import Volume

log = logging.getLogger(__name__)

#: A stated slice thickness within this share of the slice spacing counts as contiguous slices.
PROFILE_TOLERANCE = 0.01


def study_grid(study: Study) -> tuple[np.ndarray, tuple[int, ...]]:
    """The RAS affine and the shape of ``study``'s voxel grid, from its header(s) only.

    Raises:
        MrisrError: The header cannot be read (the message names the file).
    """
    if study.problem is not None:
        raise UnreadableFileError(study.path, study.problem)
    if study.fmt == "nifti":
        import nibabel as nib

        from mrisr.io.nifti import affine_in_mm

        try:
            img = nib.load(str(study.path))
        except Exception as exc:  # nibabel raises many types on a bad header; the study will fail alone
            raise UnreadableFileError(study.path, f"header unreadable ({type(exc).__name__})") from exc
        return affine_in_mm(img.header), tuple(int(n) for n in img.shape)  # type: ignore[attr-defined,arg-type]
    if study.fmt != "dicom":
        from mrisr.io.itk import read_itk_grid

        return read_itk_grid(study.path)
    from mrisr.io.dicom.read import read_dicom_grid

    affine, shape, _ = read_dicom_grid(list(study.files), uid=study.series_uid)
    return affine, shape


def plan_target_spacing(
    studies: Sequence[Study], target: Sequence[float]
) -> tuple[list[tuple[Factors, list[Study]]], list[tuple[Study, str]]]:
    """Group ``studies`` by the factors that bring them to ``target`` mm (:func:`factors_for_spacing`).

    Returns:
        ``(groups, unreadable)``: factor groups in first-seen order, and studies whose header could
        not be read (they fail alone later, when loaded).

    Raises:
        ValueError: A study the target cannot serve (coarser than its voxels, or beyond ×6); the
            message names it.
    """
    groups: dict[Factors, list[Study]] = {}
    unreadable: list[tuple[Study, str]] = []
    for study in studies:
        try:
            affine, _ = study_grid(study)
        except MrisrError as exc:
            unreadable.append((study, str(exc)))
            continue
        try:
            factors = factors_for_spacing(voxel_spacing(affine), target)
        except ValueError as exc:
            raise ValueError(f"{study.path}: {exc}") from None
        if factors == (1, 1, 1):
            raise ValueError(f"{study.path}: already at {', '.join(f'{t:g}' for t in target)} mm; nothing to refine")
        groups.setdefault(factors, []).append(study)
    return list(groups.items()), unreadable


def slice_profile(vol: Volume) -> tuple[float, float, float] | None:
    """Slice thickness over slice spacing per axis when the header states a thickness (DICOM
    SliceThickness; axis 2 runs through the slices), else ``None``.

    ``1`` is contiguous slices; below 1 a gap, above 1 an overlap. NIfTI states no thickness; its
    slices are taken to be contiguous (docs/beyond.md).
    """
    thickness = vol.meta.get("slice_thickness")
    if not thickness or vol.shape3[2] < 2:
        return None
    spacing = voxel_spacing(vol.affine)[2]
    return (1.0, 1.0, round(float(thickness) / spacing, 6)) if spacing > 0 else None
