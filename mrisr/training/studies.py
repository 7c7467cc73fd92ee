"""The studies of a training run: found, loaded, normalised and split into training and validation.

The split is by study, never by slice: the studies named with ``--val`` (:func:`prepare_data`'s
``val_data``), else :func:`mrisr.training.data.split_studies` (a held-out slab of the only study when
there is one). A study too small to be degraded by the validation factors is left out with its reason.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from mrisr.discovery import Study, find_studies
from mrisr.training.config import TrainConfig
from mrisr.training.data import SLAB_GAP, Split, TrainingData, load_studies, slab_for, split_studies
from mrisr.training.validation import val_factors

log = logging.getLogger(__name__)


def _given_validation(
    data: Sequence[str | Path], val_data: Sequence[str | Path], out: Path, others: set[Path]
) -> tuple[list[Study], list[Study]]:
    """The training and the validation studies when the validation studies are named (``--val``).

    The studies under ``val_data`` validate and never train, also where a ``data`` folder holds them
    (``mrisr train corpus --val corpus/val``).

    Raises:
        FileNotFoundError: No validation study, or no training study left.
        ValueError: A training and a validation study with the same id.
    """
    val = [s for s in find_studies(list(val_data), exclude=[out]) if s.path.resolve() not in others]
    if not val:
        raise FileNotFoundError(f"no NIfTI or DICOM study under --val {', '.join(map(str, val_data))}")
    held = {s.path.resolve() for s in val}
    folders = [Path(v) for v in val_data if Path(v).is_dir()]
    train = [
        s
        for s in find_studies(list(data), exclude=[out, *folders])
        if s.path.resolve() not in others and s.path.resolve() not in held
    ]
    if not train:
        raise FileNotFoundError(
            f"no NIfTI or DICOM study under {', '.join(map(str, data))} outside --val {', '.join(map(str, val_data))}"
        )
    both = sorted({s.id for s in train} & {s.id for s in val})
    if both:
        raise ValueError(f"study id {both[0]!r} names a training and a validation study; rename one of the files")
    return train, val


def prepare_data(
    data: Sequence[str | Path],
    out: Path,
    cfg: TrainConfig,
    *,
    main: bool,
    not_studies: Sequence[str | Path] = (),
    val_data: Sequence[str | Path] = (),
) -> tuple[TrainingData, Split]:
    """The usable studies under ``data`` (less the files ``not_studies``: tissue maps kept beside
    them), loaded and normalised, and their split: the studies under ``val_data`` when given, else
    :func:`split_studies` (a held-out slab of the only study when there is one).

    Raises:
        FileNotFoundError: No study, or none usable.
        ValueError: A training and a validation study share an id.
    """
    others = {Path(p).resolve() for p in not_studies}
    given_val: list[Study] = []
    if val_data:
        studies, given_val = _given_validation(data, val_data, out, others)
    else:
        studies = [s for s in find_studies(list(data), exclude=[out]) if s.path.resolve() not in others]
    if not studies:
        raise FileNotFoundError(f"no NIfTI or DICOM study under {', '.join(map(str, data))}")
    if given_val:
        return _given_split(load_studies([*studies, *given_val], cfg.workers), {s.id for s in given_val}, cfg)
    loaded = load_studies(studies, cfg.workers)
    # Validation degrades whole volumes by the factors: each axis must hold a block.
    loaded = loaded.without(_too_small(loaded, cfg))
    for line in loaded.errors:
        log.error("skipping %s", line)
    if not loaded.studies:
        raise FileNotFoundError(
            f"no usable study under {', '.join(map(str, data))} ({len(loaded.errors)} could not be read)"
        )
    ids = list(loaded.studies)
    split = split_studies(ids, cfg.val_fraction, cfg.seed)
    if len(ids) == 1 and cfg.val_fraction > 0:
        slab = slab_for(loaded.studies[ids[0]].frames[0].shape[2], cfg.val_fraction)
        split = Split(split.train, split.val, slab)
        if slab is None:
            log.warning("ONLY ONE STUDY and it is too thin for a held-out slab: no validation")
        elif main:
            log.warning(
                "ONLY ONE STUDY: validating on a held-out slab of its axis-2 slices %d:%d (training skips "
                "%d slices either side); validation figures come from the training subject and are optimistic",
                slab[0],
                slab[1],
                SLAB_GAP,
            )
    return loaded, split


def _given_split(loaded: TrainingData, val_ids: set[str], cfg: TrainConfig) -> tuple[TrainingData, Split]:
    """The split of named validation studies, less those that cannot be used (each logged)."""
    loaded = loaded.without(_too_small(loaded, cfg))
    for line in loaded.errors:
        log.error("skipping %s", line)
    train = tuple(sid for sid in loaded.studies if sid not in val_ids)
    val = tuple(sid for sid in loaded.studies if sid in val_ids)
    if not train or not val:
        which = "training" if not train else "validation"
        raise FileNotFoundError(f"no usable {which} study ({len(loaded.errors)} could not be read)")
    return loaded, Split(train, val)


def _too_small(loaded: TrainingData, cfg: TrainConfig) -> dict[str, str]:
    """The studies too small to validate on, by id, with their reason: each axis must hold a block."""
    factors = val_factors(cfg)
    small: dict[str, str] = {}
    for sid, item in loaded.studies.items():
        shape = item.frames[0].shape
        if any(n < f for n, f in zip(shape, factors, strict=True)):
            small[sid] = f"{item.study.path}: shape {tuple(shape)} is smaller than the scale {factors}"
    return small
