"""Training data: the study split, normalised volumes, and random degraded patch pairs.

Studies are split, never slices. Every volume is normalised with
:class:`mrisr.monai_transforms.PercentileNormalized` (:func:`mrisr.transforms.fit_normalization`, the
rule inference applies). Each training sample is drawn
from its own random generator seeded by ``(seed, epoch, index)``, so the patches do not depend on the
number of workers or processes, and a resumed run sees the patches an uninterrupted run would.
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
import torch
import torch.nn.functional as F
from monai.data import CacheDataset
from monai.transforms import (
    Compose,
    RandAdjustContrast,
    RandFlip,
    RandGaussianNoise,
    RandRotate90,
    RandScaleIntensity,
    Transform,
)
from monai.utils import convert_to_tensor
from torch.utils.data import Dataset

from mrisr.degradation import degrade_and_upsample, downsample, draw_mode
from mrisr.discovery import Study
from mrisr.errors import MrisrError
from mrisr.fsutil import atomic_path, sha256_file
from mrisr.io import check_finite
from mrisr.metrics import gaussian_window
from mrisr.monai_transforms import PercentileNormalized, SliceStack
from mrisr.training.config import TrainConfig
from mrisr.transforms import foreground_threshold

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


#: Knots of :func:`random_contrast` over the normalised intensities (foreground 99.5th percentile = 1).
CONTRAST_KNOTS = np.linspace(0.0, 1.2, 7)


def random_contrast(hr: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``hr`` (normalised) with its voxels inside ``mask`` mapped through a random piecewise-linear
    curve: values at :data:`CONTRAST_KNOTS` drawn uniformly in 0.05–1, the largest scaled to 1 (values
    past the last knot take its value). Any order of the tissues can come out (T2-, PD-, FLAIR-like
    contrasts from a T1), as SynthSR's random contrasts do from label maps. Returns float32."""
    values = rng.uniform(0.05, 1.0, CONTRAST_KNOTS.size)
    values /= values.max()
    mapped = np.interp(hr, CONTRAST_KNOTS, values)
    return np.where(mask, mapped, hr).astype(np.float32)


def tissue_contrast(hr: np.ndarray, mask: np.ndarray, tissue: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``hr`` (normalised) with its voxels inside ``mask`` re-synthesised from tissue probability maps
    ``tissue`` (``(K, *hr.shape)``, each in 0–1): tissue ``k`` gets one intensity drawn uniformly in
    0.05–1, and the probability left over (``1 - sum``: CSF, skull, scalp) takes the template's value
    through :func:`random_contrast`'s random curve; the largest of all the drawn values is scaled to 1.
    A voxel shared by two tissues is their probability-weighted mean, the linear partial volume of a
    real acquisition (a curve of the template's value alone would put any intensity there).
    Returns float32."""
    k = tissue.shape[0]
    values = rng.uniform(0.05, 1.0, CONTRAST_KNOTS.size + k)
    values /= values.max()
    p = np.clip(tissue, 0.0, 1.0).astype(np.float64)
    total = p.sum(axis=0)
    p /= np.maximum(total, 1.0)  # maps that overlap by more than 1 are shared out
    rest = np.interp(hr, CONTRAST_KNOTS, values[: CONTRAST_KNOTS.size])
    synth = np.tensordot(values[CONTRAST_KNOTS.size :], p, axes=1) + (1.0 - p.sum(axis=0)) * rest
    return np.where(mask, synth, hr).astype(np.float32)


#: Range of the Gaussian's standard deviation (voxels) that ``hr_blur`` draws from.
HR_BLUR_SIGMA = (0.3, 1.0)
#: Range of the shrink factor that ``zoom_out`` draws from (a 1 mm template seen as 1-2 mm anatomy).
ZOOM_OUT = (1.0, 2.0)
#: Side of the coarse grid of random log-gains that :func:`random_bias_field` interpolates.
BIAS_GRID = 4


def random_bias_field(hr: np.ndarray, rng: np.random.Generator, strength: float = 0.3) -> np.ndarray:
    """``hr`` times a smooth random gain, like a receive coil's bias field: the exponential of a
    ``BIAS_GRID``×``BIAS_GRID`` grid of log-gains drawn from a normal law of standard deviation
    ``strength`` × U(0, 1), interpolated bicubically over the patch (corners on corners). Returns float32."""
    amp = strength * float(rng.random())
    grid = torch.from_numpy(rng.normal(0.0, amp, (1, 1, BIAS_GRID, BIAS_GRID)).astype(np.float32))
    field = F.interpolate(grid, size=hr.shape, mode="bicubic", align_corners=True)[0, 0]
    return (hr * np.exp(field.numpy())).astype(np.float32)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """``img`` (2D) smoothed by a separable Gaussian of ``sigma`` voxels, borders mirrored (no darkening
    at the edges). Returns float32."""
    r = max(1, int(np.ceil(3 * sigma)))
    k = gaussian_window(2 * r + 1, sigma)
    out = np.pad(img.astype(np.float64), r, mode="symmetric")
    out = np.apply_along_axis(np.convolve, 0, out, k, mode="valid")
    out = np.apply_along_axis(np.convolve, 1, out, k, mode="valid")
    return out.astype(np.float32)


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


def head_mask(x: np.ndarray, threshold: float) -> np.ndarray:
    """Foreground of a 2D slice with enclosed holes filled (dark CSF inside the head counts as head).

    A voxel is inside when it lies between foreground voxels both along its row and along its column.
    """
    fg = x > threshold
    rows = np.maximum.accumulate(fg, axis=1) & np.maximum.accumulate(fg[:, ::-1], axis=1)[:, ::-1]
    cols = np.maximum.accumulate(fg, axis=0) & np.maximum.accumulate(fg[::-1], axis=0)[::-1]
    return rows & cols


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


@dataclass
class Piece:
    """A normalised 3D array that patches are drawn from, with the slice axes to use and, where the
    run has them on its grid, tissue probability maps ``(K, *data.shape)``."""

    data: np.ndarray
    axes: tuple[int, ...]
    threshold: float
    tissue: np.ndarray | None = None


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


def _slice_at(axis: int, k: int) -> tuple[slice | int, ...]:
    """Index of slice ``k`` across ``axis`` of a 3D array (the 2D slice :class:`SliceStack` gives)."""
    return tuple(k if a == axis else slice(None) for a in range(3))


class PatchDataset(Dataset):
    """Random degraded/high-resolution patch pairs; item ``i`` of epoch ``e`` depends only on ``(seed, e, i)``.

    Each item is ``{"input": (1, P, P), "target": (1, P, P)}`` float32 tensors, ``P = cfg.hr_patch``.
    Set :attr:`epoch` before iterating an epoch.
    """

    def __init__(self, pieces: Sequence[Piece], cfg: TrainConfig, length: int) -> None:
        if not pieces:
            raise ValueError("no training volumes")
        self.cfg = cfg
        self.length = length
        self.epoch = 0
        # Every usable (piece, axis, slice) with some foreground, so patches come from the head.
        self.slices: list[tuple[int, int, int]] = []
        for pi, piece in enumerate(pieces):
            for axis in piece.axes:
                counts = (SliceStack(axis)(piece.data) > piece.threshold).reshape(piece.data.shape[axis], -1)
                frac = counts.mean(axis=1)
                good = np.flatnonzero(frac >= 0.02)
                if good.size == 0:
                    good = np.arange(piece.data.shape[axis])
                self.slices.extend((pi, axis, int(k)) for k in good)
        self.pieces = list(pieces)
        self.augment = Compose(
            [
                RandFlip(prob=0.5, spatial_axis=0),
                RandFlip(prob=0.5, spatial_axis=1),
                RandRotate90(prob=0.5, max_k=3),
                RandAdjustContrast(prob=0.5, gamma=(0.7, 1.5)),
                RandScaleIntensity(factors=0.2, prob=0.5),
                RandGaussianNoise(prob=cfg.noise_prob, std=cfg.noise_std),
            ]
        )

    def __len__(self) -> int:
        return self.length

    def _crop(self, rng: np.random.Generator, zoom: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """A ``P``×``P`` patch, its head mask and, when its piece has tissue maps, the same window of
        them ``(K, P, P)``; with ``zoom`` > 1 a ``zoom`` times wider region shrunk to ``P``×``P``
        (antialiased bicubic), so that anatomy is ``zoom`` times smaller per voxel."""
        pi, axis, k = self.slices[int(rng.integers(len(self.slices)))]
        piece = self.pieces[pi]
        img = SliceStack(axis)(piece.data)[k]
        # The maps' slices ride along as extra channels: padded, cut and shrunk as the image is.
        chans = (
            img[None]
            if piece.tissue is None
            else np.concatenate([img[None], piece.tissue[(slice(None), *_slice_at(axis, k))]])
        )
        p = self.cfg.hr_patch
        q = p if zoom == 1.0 else round(p * zoom)
        pad = [(0, 0), (0, max(0, q - img.shape[0])), (0, max(0, q - img.shape[1]))]
        if pad[1][1] or pad[2][1]:
            chans = np.pad(chans, pad, mode="edge")
        img = chans[0]
        mask = head_mask(img, piece.threshold)
        ys, xs = np.nonzero(mask)
        if ys.size:
            j = int(rng.integers(ys.size))
            cy, cx = int(ys[j]), int(xs[j])
        else:
            cy, cx = int(rng.integers(img.shape[0])), int(rng.integers(img.shape[1]))
        y0 = min(max(0, cy - q // 2), img.shape[0] - q)
        x0 = min(max(0, cx - q // 2), img.shape[1] - q)
        cut, pmask = chans[:, y0 : y0 + q, x0 : x0 + q].copy(), mask[y0 : y0 + q, x0 : x0 + q]
        if q != p:
            both = torch.from_numpy(np.concatenate([cut, pmask[None].astype(np.float32)]))[:, None]
            small = F.interpolate(both, size=(p, p), mode="bicubic", antialias=True, align_corners=False)[:, 0]
            cut, pmask = small[:-1].numpy().astype(np.float32), small[-1].numpy() > 0.5
        return cut[0], pmask, (cut[1:] if piece.tissue is not None else None)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, self.epoch, int(index)])
        # Drawn only when asked, so that runs without it keep their random streams.
        zoom = float(rng.uniform(*ZOOM_OUT)) if cfg.zoom_out > 0 and rng.random() < cfg.zoom_out else 1.0
        hr, mask, tissue = self._crop(rng, zoom)
        if tissue is not None and cfg.tissue_contrast > 0 and rng.random() < cfg.tissue_contrast:
            hr = tissue_contrast(hr, mask, tissue, rng)  # drawn only with maps, as the others only when asked
        elif cfg.random_contrast > 0 and rng.random() < cfg.random_contrast:
            hr = random_contrast(hr, mask, rng)
        elif rng.random() < cfg.invert_prob:
            c = np.float32(1.0 + 0.2 * rng.random())
            hr = np.where(mask, np.clip(c - hr, 0.0, None), hr).astype(np.float32)
        if cfg.bias_field > 0 and rng.random() < cfg.bias_field:  # drawn only when asked, as above
            hr = random_bias_field(hr, rng)
        if cfg.hr_blur > 0 and rng.random() < cfg.hr_blur:  # a softer truth, like an EPI's own blur
            hr = gaussian_blur(hr, float(rng.uniform(*HR_BLUR_SIGMA)))
        t = torch.from_numpy(np.ascontiguousarray(hr, dtype=np.float32))[None]
        if cfg.augment:
            self.augment.set_random_state(seed=int(rng.integers(2**31)))
            t = convert_to_tensor(self.augment(t), dtype=torch.float32, track_meta=False)
        mode = draw_mode(cfg.degradation, rng)
        if getattr(cfg.model, "name", "srcnn") == "espcn":  # a low-resolution-grid network sees the LR patch
            x = downsample(t[None], (cfg.scale, cfg.scale), mode)[0]
        elif cfg.through_plane:  # one axis: the thick one is the rows or the columns, half the time each
            f = (1, cfg.scale) if rng.random() < 0.5 else (cfg.scale, 1)
            x = degrade_and_upsample(t[None], f, mode)[0]
        else:
            x = degrade_and_upsample(t[None], (cfg.scale, cfg.scale), mode)[0]
        return {"input": x.contiguous(), "target": t.contiguous()}
