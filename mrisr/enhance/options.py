"""What ``mrisr enhance`` is asked for (:class:`EnhanceOptions`), what it reports per study
(:class:`StudyResult`), and how the checkpoint and the per-axis factors are resolved."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mrisr.adapt import AdaptConfig
from mrisr.checkpoint import Checkpoint, load_checkpoint, shipped_checkpoint
from mrisr.discovery import Study
from mrisr.geometry import as_factors, in_plane

log = logging.getLogger(__name__)

OutFormat = Literal["same", "nifti", "dicom"]


#: Adaptation settings used for thick slices when none are given.
DEFAULT_ADAPT = AdaptConfig()


@dataclass(frozen=True)
class EnhanceOptions:
    """What to produce for each study.

    Attributes:
        out_dir: Output folder.
        scale: Per-axis integer factors; ``None`` takes the checkpoint's.
        axis: Slicing axis (slices are cut across it; its plane is upscaled).
        fmt: Output format: ``same`` as the input, ``nifti`` or ``dicom``.
        dtype: On-disk output type; ``None``: :func:`mrisr.io.default_output_dtype` of the input's
            (integer types hold the real result with a new slope and intercept).
        overwrite: Replace existing outputs; else a study already done with the same input and
            checkpoint is skipped, and any other existing output is an error for that study.
        simulate: Treat inputs as references: degrade, super-resolve, measure.
        degradation: Degradation for ``simulate`` (default: the checkpoint's).
        save_intermediates: With ``simulate``, also write the LR and bicubic volumes.
        figure: Write the ``<id>_compare.png`` figure.
        clamp: Clamp SR to the input's value range (``True``) or only to its minimum (``False``).
        adapt: Fine-tune a copy of the network on each study first (:mod:`mrisr.adapt`).
        auto_adapt: Adaptation settings used whenever one axis alone is refined, even without
            ``adapt``; ``None`` runs the network as it is (``--no-adapt``).
        lock_wait: Seconds to wait, after the other studies, for studies whose lock another process
            holds (workers racing on one folder); ``0`` tries them once more and reports the rest.
        save_uncertainty: Compute the ensemble spread and write ``<id>_uncertainty.nii.gz``
            (:mod:`mrisr.enhance.maps`); its summary goes into the sidecar.
        save_residual: Write the data-consistency residual ``<id>_residual.nii.gz`` (its summary is
            always in the sidecar).
        command: The command line that asked for this (recorded in the sidecar's provenance).
    """

    out_dir: Path
    scale: tuple[int, int, int] | None = None
    axis: int = 2
    fmt: OutFormat = "same"
    dtype: str | None = None
    overwrite: bool = False
    simulate: bool = False
    degradation: str | None = None
    save_intermediates: bool = False
    figure: bool = True
    clamp: bool = True
    adapt: AdaptConfig | None = None
    auto_adapt: AdaptConfig | None = DEFAULT_ADAPT
    lock_wait: float = 0.0
    save_uncertainty: bool = False
    save_residual: bool = False
    command: tuple[str, ...] | None = None


@dataclass
class StudyResult:
    """Outcome of one study: ``status`` is ``done``, ``skipped``, ``failed`` or ``locked`` (another
    process holds its lock: not done by this run, no sidecar written; ``error`` names the holder).

    ``output_from`` (done studies) says what made the output: ``network``, ``adapted network`` or
    ``bicubic``; ``fallback`` names what was used instead when an adaptation was rejected.
    """

    study: Study
    status: str
    seconds: float = 0.0
    error: str | None = None
    sidecar: Path | None = None
    output: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    output_from: str | None = None
    fallback: str | None = None


#: The shipped network used when no checkpoint is given: ESPCN, faster (5× fewer operations) and
#: better than SRCNN on every held-out contrast measured (docs/weights.md); SRCNN with ``arch="srcnn"``.
DEFAULT_ARCH = "espcn"


def resolve_checkpoint(
    path: str | Path | None,
    scale: tuple[int, int, int] | None,
    *,
    arch: str = DEFAULT_ARCH,
    axis: int = 2,
) -> Checkpoint:
    """Load ``path``, or the shipped ``arch`` weights for ``scale`` (×4 in-plane when no scale is given).

    The coarse-grid ESPCN only refines the plane of the slices by its own factors; any other pattern
    (one refined axis, three refined axes, a plane other than that of ``axis``) takes the shipped
    SRCNN instead, whatever ``arch``.

    Raises:
        CheckpointError: If the file is bad, or no weights are shipped for that scale.
    """
    from mrisr.errors import CheckpointError

    if path is not None:
        return load_checkpoint(path)
    want = scale or in_plane(4, axis)
    refined = {f for f in want if f > 1}
    n_refined = sum(f > 1 for f in want)
    plane_only = want[axis] == 1 and n_refined == 2 and len(refined) == 1
    if not plane_only:
        arch = "srcnn"
    if len(refined) == 1:
        # One factor: one refined axis takes the shipped through-plane network when there is one;
        # otherwise the in-plane network serves every plane (one axis: adapted to the study).
        f = refined.pop()
        one_axis = shipped_checkpoint((1, 1, f), arch=arch) if n_refined == 1 else None
        found = one_axis or shipped_checkpoint((f, f, 1), arch=arch)
    else:
        found = shipped_checkpoint(want, arch=arch) if refined else None
    if found is None:
        raise CheckpointError(
            None,
            f"no shipped {arch} weights for scale {'x'.join(map(str, want))}; pass --checkpoint "
            "(train one with `mrisr train`)",
        )
    return load_checkpoint(found)


def parse_factors(scale: str | int | Sequence[int] | None, axis: int = 2) -> tuple[int, int, int] | None:
    """``None`` stays ``None``; one factor refines the two axes other than ``axis``; three are per axis."""
    if scale is None:
        return None
    if isinstance(scale, str):
        parts = [p for p in scale.replace("x", ",").split(",") if p.strip()]
        if len(parts) == 1:
            try:
                factor = int(parts[0])
            except ValueError as exc:
                raise ValueError(f"scale must be an integer or three comma-separated integers, got {scale!r}") from exc
            return as_factors(in_plane(factor, axis))
        from mrisr.geometry import parse_scale

        return parse_scale(scale)
    if isinstance(scale, int):
        return as_factors(in_plane(scale, axis))
    return as_factors(scale)
