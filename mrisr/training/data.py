"""Training data: the study split, normalised volumes, and the pieces that patches are drawn from.

Studies are split, never slices. Every volume is normalised with
:class:`mrisr.monai_transforms.PercentileNormalized` (:func:`mrisr.transforms.fit_normalization`, the
rule inference applies). The patches themselves are drawn in :mod:`mrisr.training.patches`, their random
contrast, bias field and blur in :mod:`mrisr.training.augment`, and tissue probability maps are read in
:mod:`mrisr.training.tissue`; their public names are importable from here as well.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import CacheDataset
from monai.transforms import Transform

from mrisr.discovery import Study
from mrisr.errors import MrisrError
from mrisr.fsutil import atomic_path, sha256_file
from mrisr.io import check_finite
from mrisr.monai_transforms import PercentileNormalized
from mrisr.training.augment import (
    BIAS_GRID,
    CONTRAST_KNOTS,
    HR_BLUR_SIGMA,
    ZOOM_OUT,
    gaussian_blur,
    random_bias_field,
    random_contrast,
    tissue_contrast,
)
from mrisr.training.config import TrainConfig
from mrisr.training.patches import PatchDataset, Piece, head_mask
from mrisr.training.tissue import TISSUE_AFFINE_TOLERANCE, TissueMaps, load_tissue_maps
from mrisr.transforms import foreground_threshold

__all__ = [
    "BIAS_GRID",
    "CONTRAST_KNOTS",
    "HR_BLUR_SIGMA",
    "ISOTROPY_TOLERANCE",
    "MIN_SLAB",
    "SLAB_GAP",
    "TISSUE_AFFINE_TOLERANCE",
    "ZOOM_OUT",
    "LoadNormalized",
    "LoadedStudy",
    "PatchDataset",
    "Piece",
    "Split",
    "TissueMaps",
    "TrainingData",
    "build_pieces",
    "gaussian_blur",
    "head_mask",
    "load_studies",
    "load_tissue_maps",
    "random_bias_field",
    "random_contrast",
    "slab_for",
    "split_studies",
    "tissue_contrast",
    "training_axes",
    "write_split",
]

log = logging.getLogger(__name__)

#: Slab of one study held out for validation when there is only one study: slices kept apart from
#: training on each side of the slab, so neighbouring slices do not leak into validation.
SLAB_GAP = 4
MIN_SLAB = 8
ISOTROPY_TOLERANCE = 1.25


@dataclass(frozen=True)
class Split:
    """Which studies train and which validate.

    Attributes:
        train: Study ids used for training.
        val: Study ids used for validation.
        slab: With a single study, ``(start, stop)`` of the axis-2 slices held out for validation
            (training uses the slices outside ``[start - SLAB_GAP, stop + SLAB_GAP)``); else ``None``.
    """

    train: tuple[str, ...]
    val: tuple[str, ...]
    slab: tuple[int, int] | None = None

    def to_dict(self, seed: int) -> dict[str, Any]:
        """Plain-JSON form written to ``split.json``."""
        return {
            "seed": seed,
            "train": list(self.train),
            "val": list(self.val),
            "validation": "slab of the training study" if self.slab else ("studies" if self.val else "none"),
            "slab_axis2": list(self.slab) if self.slab else None,
            "slab_gap": SLAB_GAP if self.slab else None,
        }


def split_studies(ids: Sequence[str], val_fraction: float, seed: int) -> Split:
    """Split study ids into training and validation, seeded and by study.

    With two or more studies, ``max(1, round(val_fraction * n))`` studies validate (none when
    ``val_fraction`` is 0), keeping at least one for training. A single study trains and, unless
    ``val_fraction`` is 0, validates on a held-out slab (see :func:`slab_for`).
    """
    ordered = sorted(ids)
    if len(ordered) != len(set(ordered)):
        raise ValueError("study ids must be unique")
    if not ordered:
        raise ValueError("no studies to train on")
    if len(ordered) == 1 or val_fraction <= 0:
        return Split(tuple(ordered), ())
    n_val = min(len(ordered) - 1, max(1, round(val_fraction * len(ordered))))
    perm = np.random.default_rng(seed).permutation(len(ordered))
    val = sorted(ordered[i] for i in perm[:n_val])
    train = [s for s in ordered if s not in val]
    return Split(tuple(train), tuple(val))


def slab_for(depth: int, val_fraction: float) -> tuple[int, int] | None:
    """The axis-2 slab held out of a single study: ``val_fraction`` of its slices, at 60 % of the depth.

    Returns ``None`` when the volume is too thin to leave slices for training on both sides.
    """
    n = max(MIN_SLAB, round(val_fraction * depth))
    start = min(max(SLAB_GAP, round(0.6 * depth) - n // 2), depth - n - SLAB_GAP)
    if start - SLAB_GAP < 1 and depth - (start + n + SLAB_GAP) < 1:
        return None
    if start < SLAB_GAP:
        return None
    return (start, start + n)


def training_axes(spacing: Sequence[float], axes: tuple[int, ...] | None) -> tuple[int, ...]:
    """Slice axes for a volume: ``axes`` if given, all three when near-isotropic, else axis 2."""
    if axes is not None:
        return axes
    sp = [float(s) for s in spacing]
    return (0, 1, 2) if max(sp) <= ISOTROPY_TOLERANCE * min(sp) else (2,)


class LoadNormalized(Transform):
    """Load a study, take its frames and normalise them as inference does.

    Input ``{"study": Study}``; output adds ``"frames"`` (list of float32 3D arrays), ``"spacing"`` (mm),
    ``"normalization"`` (dict) and ``"sha256"`` (of the file, or for a DICOM series of the sorted
    digests of its files). A study that cannot be used (unreadable, NaN/Inf voxels) gets ``"error"``
    (``path: reason``, one line) instead, so that one bad file does not stop the others.
    """

    def __init__(self) -> None:
        self.normalize = PercentileNormalized(["image"])

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        study: Study = data["study"]
        try:
            vol = study.load()
            arr = np.asarray(vol.data, dtype=np.float32)
            check_finite(arr, study.path)  # on the float32 copy: huge float64 values become inf there
        except (MrisrError, OSError) as exc:
            return {**data, "error": str(exc)}
        d = self.normalize({"image": arr})
        norm, image = self.normalize.normalization(d, "image"), d["image"]
        frames = [np.ascontiguousarray(image[..., t]) if image.ndim == 4 else image for t in range(vol.n_frames)]
        # One file: its SHA-256. A DICOM series: the SHA-256 of its files' sorted SHA-256 digests.
        digests = sorted(sha256_file(f) for f in study.files)
        digest = digests[0] if len(digests) == 1 else hashlib.sha256("".join(digests).encode()).hexdigest()
        return {
            **data,
            "frames": frames,
            "spacing": vol.spacing,
            "affine": vol.affine,
            "normalization": norm.to_dict(),
            "sha256": digest,
        }


@dataclass(frozen=True)
class LoadedStudy:
    """A study loaded and normalised for training.

    Attributes:
        study: The study.
        frames: Its normalised frames, float32 arrays ``(i, j, k)``.
        spacing: Voxel size in mm along ``(i, j, k)``.
        normalization: The fitted normalisation (:meth:`mrisr.transforms.Normalization.to_dict`).
        sha256: SHA-256 of the file, or for a DICOM series of the sorted digests of its files.
        affine: Voxel-to-world matrix (mm), to match tissue maps voxel for voxel (``None``: unknown).
    """

    study: Study
    frames: tuple[np.ndarray, ...]
    spacing: tuple[float, float, float]
    normalization: dict[str, Any]
    sha256: str
    affine: np.ndarray | None = None


@dataclass(frozen=True)
class TrainingData:
    """The studies of a run, loaded.

    Attributes:
        studies: The usable studies by id, in the order they were found.
        errors: One ``path: reason`` line per study that cannot be used.
    """

    studies: dict[str, LoadedStudy]
    errors: tuple[str, ...] = ()

    def without(self, reasons: dict[str, str]) -> TrainingData:
        """These data less the studies ``reasons`` names (by id), whose reasons join :attr:`errors`."""
        kept = {sid: item for sid, item in self.studies.items() if sid not in reasons}
        return TrainingData(kept, (*self.errors, *reasons.values()))

    def records(self, ids: Sequence[str]) -> list[dict[str, str]]:
        """What a checkpoint records of the studies ``ids``: ``{"id", "file", "sha256"}`` each."""
        return [{"id": i, "file": self.studies[i].study.path.name, "sha256": self.studies[i].sha256} for i in ids]


def load_studies(studies: Sequence[Study], workers: int = 0) -> TrainingData:
    """Load and normalise studies once (a MONAI ``CacheDataset``)."""
    ds = CacheDataset(
        data=[{"study": s, "id": s.id} for s in studies],
        transform=LoadNormalized(),
        num_workers=max(1, workers) if workers else None,
        progress=False,
        copy_cache=False,
    )
    items = [ds[i] for i in range(len(ds))]
    loaded = {
        it["id"]: LoadedStudy(
            study=it["study"],
            frames=tuple(it["frames"]),
            spacing=it["spacing"],
            normalization=it["normalization"],
            sha256=it["sha256"],
            affine=it["affine"],
        )
        for it in items
        if "error" not in it
    }
    return TrainingData(loaded, tuple(it["error"] for it in items if "error" in it))


def build_pieces(
    loaded: TrainingData, split: Split, cfg: TrainConfig, tissue: TissueMaps | None = None
) -> tuple[list[Piece], list[tuple[str, np.ndarray]]]:
    """Training pieces and validation volumes ``(name, array)`` for a split; the pieces of a study on
    the grid of ``tissue`` carry those maps (cut as the piece is)."""
    pieces: list[Piece] = []
    val: list[tuple[str, np.ndarray]] = []
    cuts: tuple[slice, ...] = (slice(None),)
    if split.slab is not None:
        a, b = split.slab
        cuts = (slice(0, a - SLAB_GAP), slice(b + SLAB_GAP, None))
    for sid in split.train:
        item = loaded.studies[sid]
        axes = training_axes(item.spacing, cfg.axes)
        # The maps are cut once per study (every frame shares them), as each frame is cut.
        maps: list[np.ndarray | None] = [None] * len(cuts)
        if tissue is not None and tissue.matches(item):
            maps = [np.ascontiguousarray(tissue.maps[..., c]) for c in cuts]
        for t, frame in enumerate(item.frames):
            if split.slab is not None:
                a, b = split.slab
                val.append((f"{sid}[slab {a}:{b}]" + (f"[{t}]" if len(item.frames) > 1 else ""), frame[:, :, a:b]))
            for c, m in zip(cuts, maps, strict=True):
                part = frame[:, :, c]
                if part.shape[2] > 0:
                    pieces.append(Piece(np.ascontiguousarray(part), axes, foreground_threshold(frame), m))
    for sid in split.val:
        frames = loaded.studies[sid].frames
        for t, frame in enumerate(frames):
            val.append((sid + (f"[{t}]" if len(frames) > 1 else ""), frame))
    return pieces, val


def write_split(path: Path, split: Split, seed: int) -> None:
    """Write ``split.json`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(split.to_dict(seed), indent=2) + "\n")
