"""What ``mrisr enhance`` is asked for (:class:`EnhanceOptions`), what it reports per study
(:class:`StudyResult`), and how the checkpoint and the per-axis factors are resolved."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from mrisr.adapt import AdaptConfig
from mrisr.checkpoint import Checkpoint, load_checkpoint, shipped_checkpoint
from mrisr.defaults import DEFAULT_ARCH, DEFAULT_DEVICE, DEFAULT_ENSEMBLE
from mrisr.discovery import Study
from mrisr.geometry import as_factors, in_plane

if TYPE_CHECKING:
    from mrisr.inference import RunOptions

log = logging.getLogger(__name__)

OutFormat = Literal["same", "nifti", "dicom"]
OUT_FORMATS: tuple[str, ...] = ("same", "nifti", "dicom")


#: Adaptation settings used for thick slices when none are given.
DEFAULT_ADAPT = AdaptConfig()


def default_run(device: str = DEFAULT_DEVICE) -> RunOptions:
    """How ``mrisr enhance`` runs the network by default: on ``device``
    (:func:`mrisr.device.resolve_device`), with the :data:`~mrisr.defaults.DEFAULT_ENSEMBLE` views.

    Raises:
        ValueError: An unknown or unavailable device.
    """
    from mrisr.device import resolve_device
    from mrisr.inference import RunOptions

    return RunOptions(device=resolve_device(device), ensemble=DEFAULT_ENSEMBLE)


@dataclass(frozen=True)
class EnhanceOptions:
    """What to produce for each study.

    Every value is checked when the options are made (:class:`ValueError` naming it), so that a bad
    request fails before any study is read, from Python as from the command line.

    Attributes:
        out_dir: Output folder (a string or path-like is taken as a :class:`~pathlib.Path`).
        scale: Per-axis integer factors; ``None`` takes the checkpoint's.
        axis: Slicing axis (slices are cut across it; its plane is upscaled).
        fmt: Output format: ``same`` as the input, ``nifti`` or ``dicom``.
        dtype: On-disk output type; ``None``: :func:`mrisr.io.default_output_dtype` of the input's
            (integer types hold the real result with a new slope and intercept).
        overwrite: Replace existing outputs; else a study already done with the same input and
            checkpoint is skipped, and any other existing output is an error for that study.
        redo: Redo studies already done, replacing and removing only what mrisr's own records say
            it wrote (a file of the user's at an output path still fails the study; ``overwrite``
            implies this). ``mrisr demo`` runs with it.
        simulate: Treat inputs as references: degrade, super-resolve, measure.
        degradation: Degradation for ``simulate`` (default: the checkpoint's).
        save_intermediates: With ``simulate``, also write the LR and bicubic volumes.
        figure: Write the ``<id>_compare.png`` figure.
        clamp: Clamp SR to the input's value range (``True``) or not at all (``False``).
        adapt: Fine-tune a copy of the network on each study first (:mod:`mrisr.adapt`).
        auto_adapt: Adaptation settings used whenever one axis alone is refined, even without
            ``adapt``; ``None`` runs the network as it is (``--no-adapt``). The default,
            :data:`DEFAULT_ADAPT`, takes ``degradation`` when that is given (as the CLI does).
        lock_wait: Seconds to wait, after the other studies, for studies whose lock another process
            holds (workers racing on one folder); ``0`` tries them once more and reports the rest.
        save_uncertainty: Compute the ensemble spread and write ``<id>_uncertainty.nii.gz``
            (:mod:`mrisr.enhance.maps`); its summary goes into the sidecar.
        save_residual: Write the data-consistency residual ``<id>_residual.nii.gz`` (its summary is
            always in the sidecar).
        command: The command line that asked for this (recorded in the sidecar's provenance).
        target_spacing: Voxel spacing (mm, per axis) to end on: the study is refined by ``scale``
            (chosen from its header with :func:`mrisr.geometry.factors_for_spacing`), then resampled
            onto :func:`mrisr.geometry.target_grid` where the ratio is not an integer.
    """

    out_dir: Path
    scale: tuple[int, int, int] | None = None
    axis: int = 2
    fmt: OutFormat = "same"
    dtype: str | None = None
    overwrite: bool = False
    redo: bool = False
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
    target_spacing: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        """Check every option; ``out_dir`` becomes a :class:`~pathlib.Path`, ``scale`` a tuple.

        Raises:
            ValueError: Naming the option that cannot be served.
        """
        if not isinstance(self.out_dir, Path):
            if not isinstance(self.out_dir, (str, os.PathLike)):
                raise ValueError(f"out_dir must be a path, not {type(self.out_dir).__name__}")
            object.__setattr__(self, "out_dir", Path(self.out_dir))
        if self.fmt not in OUT_FORMATS:
            raise ValueError(f"--format must be same, nifti or dicom, not {self.fmt!r}")
        if self.axis not in (0, 1, 2):
            raise ValueError(f"--axis must be 0, 1 or 2, not {self.axis!r}")
        if self.degradation is not None:
            from mrisr.degradation import DEGRADATIONS

            if self.degradation not in DEGRADATIONS:
                raise ValueError(f"--degradation must be one of {', '.join(DEGRADATIONS)}, not {self.degradation!r}")
        if self.dtype is not None:
            check_output_dtype(self.dtype)
        if self.degradation is not None and self.auto_adapt == DEFAULT_ADAPT:
            # As `mrisr enhance --degradation D` does: the default adaptation degrades the same way.
            object.__setattr__(self, "auto_adapt", replace(DEFAULT_ADAPT, degradation=self.degradation))
        if self.scale is not None:  # "4", 4 (the plane of the axis slices) or a list: a tuple of ints
            object.__setattr__(self, "scale", parse_factors(self.scale, self.axis))
        if math.isnan(self.lock_wait) or self.lock_wait < 0:  # inf: wait as long as the lock is held
            raise ValueError(f"--lock-wait must be a number of seconds >= 0, not {self.lock_wait!r}")
        if self.target_spacing is not None:
            if self.simulate:
                raise ValueError("--simulate degrades by --scale; it does not take --target-spacing")
            if self.scale is None:
                raise ValueError(
                    "target_spacing needs the scale of the study's group (mrisr.enhance.spacing.plan_target_spacing)"
                )


@dataclass
class StudyResult:
    """Outcome of one study: ``status`` is ``done``, ``skipped``, ``failed`` or ``locked`` (another
    process holds its lock: not done by this run, no sidecar written; ``error`` names the holder).

    ``output_from`` (done studies) says what made the output: ``network``, ``adapted network`` or
    ``bicubic``; ``fallback`` names what was used instead when an adaptation was rejected.
    ``note`` says, for a done study, when part of it is plain bicubic interpolation or an
    adaptation was rejected, and why (the console prints it with the study).
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
    note: str | None = None


def split_stages(factors: tuple[int, int, int], axis: int = 2) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Split factors into the in-plane stage (the plane of the ``axis`` slices, both of its axes
    refined alike) and the one-axis stage (``axis`` itself) when both refine something; else
    ``(factors, (1, 1, 1))``.

    ``(2, 2, 5)`` with ``axis=2`` (2×2×5 mm → 1 mm) is ``(2, 2, 1)`` then ``(1, 1, 5)``.
    """
    plane = tuple(1 if a == axis else f for a, f in enumerate(factors))
    through = tuple(f if a == axis else 1 for a, f in enumerate(factors))
    both = [f for a, f in enumerate(factors) if a != axis]
    if both[0] == both[1] > 1 and factors[axis] > 1:
        return plane, through  # type: ignore[return-value]
    return factors, (1, 1, 1)


def _shipped_one_axis(factor: int) -> Path | None:
    """The shipped one-axis coarse-grid network for ``factor`` (``axis-espcn_x1-1-F.pt``), else the
    through-plane SRCNN for ``factor`` or the one trained for the nearest factor (the per-study
    adaptation then teaches it ``factor``; docs/beyond.md)."""
    from mrisr.checkpoint import WEIGHTS_DIR

    exact = shipped_checkpoint((1, 1, factor), arch="axis-espcn") or shipped_checkpoint((1, 1, factor), arch="srcnn")
    if exact is not None:
        return exact
    trained = []
    for p in WEIGHTS_DIR.glob("srcnn_x1-1-*.pt"):
        tail = p.stem.rsplit("-", 1)[-1]
        if tail.isdigit():
            trained.append((abs(int(tail) - factor), -int(tail), p))
    return min(trained)[2] if trained else None


def resolve_checkpoint(
    path: str | Path | None,
    scale: tuple[int, int, int] | None,
    *,
    arch: str = DEFAULT_ARCH,
    axis: int = 2,
) -> Checkpoint:
    """Load ``path``, or the shipped weights for ``scale`` (×4 in-plane when no scale is given).

    - The plane of the ``axis`` slices refined ×f×f (f = 2, 3, 4): the shipped ``arch`` network.
    - One axis refined ×F (F = 2 … 6, thick slices): the shipped one-axis coarse-grid network for F,
      else the through-plane SRCNN for F or the one for the nearest factor, whatever ``arch`` (it is
      adapted to every study).
    - Both (``2,2,5``): the in-plane network of the first stage (:func:`split_stages`); the second
      stage's comes from :func:`resolve_through_plane`.

    Raises:
        CheckpointError: If the file is bad, or no weights are shipped for that scale.
    """
    from mrisr.errors import CheckpointError

    if path is not None:
        return load_checkpoint(path)
    want, _ = split_stages(scale or in_plane(4, axis), axis)
    refined = {f for f in want if f > 1}
    n_refined = sum(f > 1 for f in want)
    plane_only = want[axis] == 1 and n_refined == 2 and len(refined) == 1
    found: Path | None = None
    if plane_only:
        found = shipped_checkpoint(in_plane(refined.pop(), 2), arch=arch)
    elif n_refined == 1:
        found = _shipped_one_axis(refined.pop())
        arch = found.name.split("_x")[0] if found is not None else "srcnn"
    elif len(refined) == 1:
        # Two axes alike but not the plane of the slices (4,1,4 with --axis 2): the in-plane SRCNN
        # serves every plane, axis by axis.
        arch = "srcnn"
        found = shipped_checkpoint(in_plane(refined.pop(), 2), arch=arch)
    if found is None:
        raise CheckpointError(
            None,
            f"no shipped {arch} weights for scale {'x'.join(map(str, want))}; pass --checkpoint "
            "(train one with `mrisr train`)",
        )
    return load_checkpoint(found)


def resolve_through_plane(scale: tuple[int, int, int] | None, axis: int = 2) -> Checkpoint | None:
    """The one-axis network of the second stage of ``scale`` (:func:`split_stages`), ``None`` when
    ``scale`` has a single stage.

    Raises:
        CheckpointError: No through-plane network is shipped.
    """
    if scale is None:
        return None
    _, through = split_stages(scale, axis)
    if max(through) == 1:
        return None
    return resolve_checkpoint(None, through, axis=axis)


def parse_factors(scale: str | int | Sequence[int] | None, axis: int = 2) -> tuple[int, int, int] | None:
    """``None`` stays ``None``; one factor refines the two axes other than ``axis``; three are per axis.

    Raises:
        ValueError: Not integers, a factor below 1 or above :data:`mrisr.geometry.MAX_FACTOR`, or no
            factor above 1.
    """
    if scale is None:
        return None
    if isinstance(scale, str):
        parts = [p for p in scale.replace("x", ",").split(",") if p.strip()]
        if len(parts) == 1:
            try:
                factor = int(parts[0])
            except ValueError as exc:
                raise ValueError(f"scale must be an integer or three comma-separated integers, got {scale!r}") from exc
            factors = as_factors(in_plane(factor, axis))
        else:
            from mrisr.geometry import parse_scale

            factors = parse_scale(scale)
    elif isinstance(scale, int | np.integer):
        factors = as_factors(in_plane(int(scale), axis))
    elif len(scale) == 1:
        factors = as_factors(in_plane(int(scale[0]), axis))
    else:
        factors = as_factors(scale)
    return check_factors(factors)


def check_output_dtype(dtype: str) -> None:
    """Refuse an on-disk output type that mrisr cannot write.

    Raises:
        ValueError: Not a NumPy dtype, not a real integer or floating-point type, or a float type
            that NIfTI does not store (only float32 and float64).
    """
    import numpy as np

    try:
        out_dtype = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"--dtype {dtype!r} is not a NumPy dtype") from None
    if out_dtype.kind not in "uif":
        raise ValueError(f"--dtype {dtype!r} is not a real integer or floating-point type")
    if out_dtype.kind == "f" and out_dtype.itemsize not in (4, 8):
        raise ValueError(f"--dtype {dtype!r}: NIfTI stores float32 or float64 only")


def check_factors(factors: tuple[int, int, int]) -> tuple[int, int, int]:
    """``factors`` when mrisr can serve them: every factor 1 to :data:`~mrisr.geometry.MAX_FACTOR`,
    at least one above 1.

    Raises:
        ValueError: Otherwise.
    """
    from mrisr.geometry import MAX_FACTOR

    if any(f > MAX_FACTOR for f in factors):
        raise ValueError(f"scale {'x'.join(map(str, factors))}: factors above {MAX_FACTOR} are not served")
    if all(f == 1 for f in factors):
        raise ValueError("scale 1x1x1 refines nothing")
    return factors
