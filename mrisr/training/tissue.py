"""Tissue probability maps (``mrisr train --tissue-map``): reading them and matching them to studies by grid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mrisr.fsutil import sha256_file
from mrisr.io import check_finite

if TYPE_CHECKING:
    from mrisr.training.data import LoadedStudy

#: Largest difference (mm) between a study's affine and its tissue maps' for them to share a grid.
TISSUE_AFFINE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class TissueMaps:
    """Tissue probability maps on one grid (``mrisr train --tissue-map``).

    Attributes:
        maps: ``(K, i, j, k)`` float32, each clipped to 0–1.
        affine: Their voxel-to-world matrix (mm).
        records: ``{"file", "sha256"}`` of each map, in order (recorded in checkpoints).
    """

    maps: np.ndarray
    affine: np.ndarray
    records: tuple[dict[str, str], ...]

    def matches(self, item: LoadedStudy) -> bool:
        """Whether the maps lie voxel for voxel on ``item``'s grid (:func:`_same_grid`)."""
        return item.affine is not None and _same_grid(
            item.frames[0].shape, item.affine, self.maps.shape[1:], self.affine
        )


def _same_grid(shape_a: Sequence[int], affine_a: np.ndarray, shape_b: Sequence[int], affine_b: np.ndarray) -> bool:
    """Same shape and affines within :data:`TISSUE_AFFINE_TOLERANCE` mm: one grid, voxel for voxel."""
    return tuple(shape_a) == tuple(shape_b) and bool(
        np.abs(np.asarray(affine_a) - np.asarray(affine_b)).max() <= TISSUE_AFFINE_TOLERANCE
    )


def load_tissue_maps(paths: Sequence[str | Path]) -> TissueMaps:
    """Read tissue probability maps (NIfTI, 3D, one grid, values 0–1, or 0–255 stored as unscaled
    8-bit integers that reach 255, such as the MNI 2009 template's grey- and white-matter maps; any
    other range, 0–100 percentages included, is refused rather than guessed).

    Raises:
        MrisrError: A map cannot be read (naming the file).
        ValueError: No map, a 4D map, values that are not probabilities, or maps on different grids
            (naming the file).
    """
    from mrisr.io.nifti import read_nifti

    if not paths:
        raise ValueError("no tissue map given")
    arrays: list[np.ndarray] = []
    affine: np.ndarray | None = None
    records: list[dict[str, str]] = []
    for path in map(Path, paths):
        vol = read_nifti(path)
        if vol.n_frames != 1:
            raise ValueError(f"{path}: a tissue map is one 3D volume, this one has {vol.n_frames} frames")
        arr = np.asarray(vol.data, dtype=np.float32).reshape(vol.shape3)
        check_finite(arr, path)
        header = vol.meta.get("header")
        unscaled = header is None or tuple(header.get_slope_inter()) in ((1.0, 0.0), (None, None))
        if vol.dtype == np.uint8 and unscaled and arr.max() == 255:
            arr = arr / np.float32(255)  # 8-bit probabilities 0-255 (the MNI 2009 maps nilearn carries)
        if arr.size and (arr.min() < -1e-3 or arr.max() > 1 + 1e-3):
            raise ValueError(
                f"{path}: a tissue map holds probabilities 0-1 (or 0-255 in unscaled 8-bit integers reaching 255); "
                f"this one spans {arr.min():g} to {arr.max():g} (percentages? store them as 0-1 floats)"
            )
        if affine is not None and not _same_grid(arr.shape, vol.affine, arrays[0].shape, affine):
            raise ValueError(f"{path}: not on the grid of {records[0]['file']} (every tissue map must share it)")
        affine = vol.affine if affine is None else affine
        arrays.append(np.clip(arr, 0.0, 1.0))
        records.append({"file": path.name, "sha256": sha256_file(path)})
    assert affine is not None
    return TissueMaps(np.stack(arrays), affine, tuple(records))
