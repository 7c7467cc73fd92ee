"""One loaded study's arrays: :func:`simulate` (a reference degraded, super-resolved, measured) and
:func:`enhance` (a scan super-resolved onto a finer grid), apart. No file is written here; the
:class:`Computed` result is what :mod:`mrisr.enhance.studies` writes and records."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mrisr.adapt import STEPS_AXIS, STEPS_FINE_GRID, AdaptConfig, effective_steps
from mrisr.degradation import bicubic_frames, crop_to_multiple, degrade_frames
from mrisr.enhance.arrays import ArraySR
from mrisr.enhance.maps import consistency as consistency_maps
from mrisr.enhance.options import EnhanceOptions
from mrisr.enhance.spacing import slice_profile
from mrisr.errors import UnsupportedDataError
from mrisr.geometry import coarsen_affine, refine_affine, target_grid, voxel_spacing
from mrisr.io import Volume, as_written
from mrisr.metrics import evaluate
from mrisr.resample import resample_to_grid
from mrisr.transforms import Normalization


@dataclass(frozen=True)
class Batch:
    """What every study of one batch shares: the array SR, the options, the factors (worked out once
    for the batch), the degradation of ``--simulate`` and of the consistency check, and where the
    progress (slices done) goes.

    Attributes:
        arrays: The network(s), loaded once.
        opts: What to produce.
        factors: Per-axis integer factors of every study of the batch.
        degradation: :meth:`ArraySR.degradation` of ``opts.degradation``.
        progress: Called with the number of slices done.
        background: Where the figures are drawn while the volume is written (``None``: in turn).
    """

    arrays: ArraySR
    opts: EnhanceOptions
    factors: tuple[int, int, int]
    degradation: str
    progress: Callable[[int], None] | None = None
    background: Executor | None = None

    @classmethod
    def of(
        cls,
        arrays: ArraySR,
        opts: EnhanceOptions,
        *,
        progress: Callable[[int], None] | None = None,
        background: Executor | None = None,
    ) -> Batch:
        """The batch of ``opts``: its factors are ``opts.scale``, else the checkpoint's own."""
        factors = opts.scale or arrays.default_factors(opts.axis)
        return cls(arrays, opts, factors, arrays.degradation(opts.degradation), progress, background)

    def request(self, fmt: str) -> dict[str, Any]:
        """Everything beyond the input that changes a study's outputs written as ``fmt`` (as JSON
        reads it back): the sidecar's ``request``, which a rerun must match to skip the study
        (:mod:`mrisr.sidecar`)."""
        opts, arrays = self.opts, self.arrays

        def resolved(cfg: AdaptConfig | None, steps: int) -> dict[str, Any] | None:
            return {**asdict(cfg), "steps": steps} if cfg else None

        req = {
            "scale": list(self.factors),
            "axis": opts.axis,
            "adapt": resolved(opts.adapt, effective_steps(opts.adapt, arrays.model)) if opts.adapt else None,
            # Only one-axis refinement adapts automatically, and only fine-grid networks do that.
            "auto_adapt": resolved(opts.auto_adapt, self._auto_steps()),
            "ensemble": arrays.run.ensemble,
            "network": arrays.network,
            "checkpoint_sha256": arrays.checkpoint.sha256,
            "format": fmt,
            "dtype": opts.dtype,  # None: the input's stored type (mrisr.io.default_output_dtype)
            "clamp": opts.clamp,
            "simulate": opts.simulate,
            "degradation": self.degradation,
            "intermediates": bool(opts.simulate and opts.save_intermediates),
            "figure": opts.figure,
        }
        # Only when asked, so that sidecars written before these options still match a plain rerun.
        req |= {k: True for k in ("save_uncertainty", "save_residual") if getattr(opts, k)}
        if arrays.through_plane is not None:
            req["through_plane_sha256"] = arrays.through_plane.sha256
        if opts.target_spacing is not None:
            req["target_spacing"] = list(opts.target_spacing)
        return dict(json.loads(json.dumps(req)))

    def _auto_steps(self) -> int:
        """Steps of the automatic one-axis adaptation: as asked, else the one-axis network's default."""
        if self.opts.auto_adapt is not None and self.opts.auto_adapt.steps is not None:
            return self.opts.auto_adapt.steps
        second = self.arrays.through_plane
        name = str((second.arch if second is not None else self.arrays.checkpoint.arch).get("name", "srcnn"))
        return STEPS_AXIS if name == "axis-espcn" else STEPS_FINE_GRID

    def super_resolve(
        self,
        data: np.ndarray,
        spacing: tuple[float, float, float],
        *,
        profile: tuple[float, float, float] | None = None,
        spread_out: np.ndarray | None = None,
    ) -> tuple[np.ndarray, Normalization, dict[str, Any] | None]:
        """:meth:`ArraySR.enhance_array` of ``data`` (voxel ``spacing`` in mm) as the options ask."""
        o = self.opts
        return self.arrays.enhance_array(
            data, self.factors, axis=o.axis, clamp=o.clamp, adapt=o.adapt, auto_adapt=o.auto_adapt, spacing=spacing,
            profile=profile, progress=self.progress, spread_out=spread_out,
        )  # fmt: skip


@dataclass
class Computed:
    """The arrays of one study's outputs and what the sidecar records of them.

    Attributes:
        out_vol: The output volume (the float SR, or its resampling with ``target_spacing``).
        sr_affine: The grid of the SR array and of the ensemble spread (RAS, mm).
        in_vol: The low-resolution input volume (simulated or the scan itself).
        residual: The data-consistency residual on ``in_vol``'s grid.
        consistency: Its summary (:func:`mrisr.enhance.maps.consistency`).
        norm: The normalisation used.
        adapted: What adaptation did (``None`` without it).
        figure_arrays: The arrays the figures show (``reference``, ``bicubic``, ``sr``, ``lowres``).
        lowres_shape: The low-resolution array's shape.
        metrics: The :data:`~mrisr.sidecar.METRIC_KEYS` (``simulate`` only).
        intermediates: ``lowres`` and ``bicubic`` volumes to write (``simulate`` with ``save_intermediates``).
        resampled: The integer-factor grid before ``target_spacing`` resampling (``None``: not resampled).
        profile: The slice profile used for one-axis adaptation (``None``: not stated by the header).
        spread: The ensemble spread on ``sr_affine``'s grid (``save_uncertainty`` only).
    """

    out_vol: Volume
    sr_affine: np.ndarray
    in_vol: Volume
    residual: np.ndarray
    consistency: dict[str, Any]
    norm: Normalization
    adapted: dict[str, Any] | None
    figure_arrays: dict[str, np.ndarray | None]
    lowres_shape: list[int]
    metrics: dict[str, float] | None = None
    intermediates: dict[str, Volume] = field(default_factory=dict)
    resampled: dict[str, Any] | None = None
    profile: tuple[float, float, float] | None = None
    spread: np.ndarray | None = None


def simulate(batch: Batch, vol: Volume, written: Callable[[np.ndarray], np.ndarray], *, where: Path) -> Computed:
    """Treat ``vol`` as a reference: degrade it by the batch's factors, super-resolve it back onto its
    own (cropped) grid, and measure SR and bicubic against it.

    Args:
        batch: The batch.
        vol: The reference.
        written: The values a file of the output's type would hold (metrics are of the file).
        where: The study's path (named by the error).

    Raises:
        UnsupportedDataError: A constant reference (no data range to measure).
    """
    factors = batch.factors
    ref_vol = crop_to_multiple(vol, factors)
    ref = np.asarray(ref_vol.data, dtype=np.float32)
    if float(ref.max()) == float(ref.min()):
        raise UnsupportedDataError(where, "a constant image: --simulate has no data range to measure")
    # Within the true scan's value range (bicubic downsampling overshoots: a magnitude scan's
    # simulated low-resolution copy would hold negative values), then as the input's type would
    # store it (values, not whole units).
    lr = np.clip(degrade_frames(ref, factors, batch.degradation), float(ref.min()), float(ref.max()))
    lr = as_written(lr, vol.dtype).astype(np.float32, copy=False)
    lr_affine = coarsen_affine(ref_vol.affine, factors)
    # The ensemble spread needs one more output-sized volume: only when asked.
    spread = np.zeros(ref.shape, dtype=np.float32) if batch.opts.save_uncertainty else None
    sr, norm, adapted = batch.super_resolve(lr, voxel_spacing(lr_affine), spread_out=spread)
    sr_out = written(sr)  # what the file will hold: metrics are of the file
    bic = bicubic_frames(lr, ref.shape, float(lr.min()), float(lr.max()))
    bic_out = written(bic)
    metrics = evaluate(
        sr_out.astype(np.float64),  # a 4D study stays 4D: 3D SSIM filters each frame on its own
        bic_out.astype(np.float64),
        ref.astype(np.float64),
        scale=max(factors[0], factors[1]),
    )
    consistency, residual = consistency_maps(sr_out, lr, factors, batch.degradation)
    intermediates = {}
    if batch.opts.save_intermediates:
        intermediates = {"lowres": ref_vol.with_data(lr, lr_affine), "bicubic": ref_vol.with_data(bic, ref_vol.affine)}
    return Computed(
        out_vol=ref_vol.with_data(sr, ref_vol.affine),
        sr_affine=ref_vol.affine,
        in_vol=ref_vol.with_data(lr, lr_affine),
        residual=residual,
        consistency=consistency,
        norm=norm,
        adapted=adapted,
        figure_arrays={"reference": ref, "bicubic": bic_out, "sr": sr_out, "lowres": lr},
        lowres_shape=list(lr.shape),
        metrics=metrics,
        intermediates=intermediates,
        spread=spread,
    )


def enhance(batch: Batch, vol: Volume, written: Callable[[np.ndarray], np.ndarray]) -> Computed:
    """Super-resolve the scan ``vol`` onto the grid refined by the batch's factors (then resampled
    onto the ``target_spacing`` grid where the ratio is not an integer; docs/geometry.md).

    Args:
        batch: The batch.
        vol: The scan.
        written: The values a file of the output's type would hold (the consistency check's input).
    """
    factors, opts = batch.factors, batch.opts
    out_shape = tuple(n * f for n, f in zip(vol.data.shape[:3], factors, strict=True)) + vol.data.shape[3:]
    spread = np.zeros(out_shape, dtype=np.float32) if opts.save_uncertainty else None
    profile = slice_profile(vol)
    sr, norm, adapted = batch.super_resolve(vol.data, vol.spacing, profile=profile, spread_out=spread)
    # The writer stores the float result itself (a scaling for integer types, see
    # mrisr.io.encode_values); the check below sees the values as the file will hold them.
    sr_out = written(sr)
    fine_affine = refine_affine(vol.affine, factors)
    resampled: dict[str, Any] | None = None
    target = opts.target_spacing and target_grid(vol.affine, vol.shape3, opts.target_spacing)
    on_target = target and target[1] == sr.shape[:3] and np.allclose(target[0], fine_affine, atol=1e-9)
    if target and not on_target:
        # The next integer factor, then exactly onto the target grid (docs/geometry.md).
        lo_hi = (float(np.min(vol.data)), float(np.max(vol.data)))
        res = np.clip(resample_to_grid(sr, fine_affine, target[0], target[1]), *lo_hi)
        out_vol = vol.with_data(res, target[0])
        resampled = {"from_shape": list(sr.shape), "from_spacing": list(voxel_spacing(fine_affine))}
        del res
    else:
        out_vol = vol.with_data(sr, fine_affine)
    lr = np.asarray(vol.data, dtype=np.float32)
    consistency, residual = consistency_maps(sr_out, lr, factors, batch.degradation)
    del sr_out
    return Computed(
        out_vol=out_vol,
        sr_affine=fine_affine,  # --target-spacing may resample the output, not sr and its spread
        in_vol=vol,
        residual=residual,
        consistency=consistency,
        norm=norm,
        adapted=adapted,
        # The figure shows the float result (the file holds it up to its scaling); bicubic is
        # interpolated for the shown plane only.
        figure_arrays={"reference": None, "bicubic": None, "sr": sr, "lowres": lr},
        lowres_shape=list(vol.data.shape),
        resampled=resampled,
        profile=profile,
        spread=spread,
    )


def output_from(adapted: dict[str, Any] | None) -> str:
    """Which network made the output: ``network``, ``adapted network`` or ``bicubic``; for two
    stages (``2,2,5``) one of those per stage, ``"<in-plane> in-plane, <one-axis> through-plane"``."""
    if adapted is None:
        return "network"
    own = "bicubic" if adapted.get("fallback") == "bicubic" else "network"
    if adapted.get("used"):
        own = "adapted network"
    if adapted.get("stage") == "through-plane":
        return f"{output_from(adapted.get('in_plane'))} in-plane, {own} through-plane"
    return own


def note(adapted: dict[str, Any] | None, factors: Sequence[int], axis: int) -> str | None:
    """One line for the console when part of the output is bicubic, an adaptation was rejected, or a
    thick-slice network was adapted (what it learnt from, in how many steps and seconds, and why it
    was used)."""
    if adapted is None:
        return None
    notes = []
    inner = note(adapted.get("in_plane"), factors, axis) if adapted.get("stage") == "through-plane" else None
    if inner:
        notes.append(f"in-plane: {inner}")
    if adapted.get("used") and adapted.get("method") == "axis-coarse-grid":
        slices = int(adapted.get("n_train_planes", 0)) + int(adapted.get("n_val_planes", 0))
        notes.append(
            f"through-plane network adapted on {slices} of the study's own slices in {adapted.get('steps')} steps "
            f"({float(adapted.get('seconds', 0.0)):.1f} s): {adapted.get('reason')}"
        )
    if not adapted.get("used") and "reason" in adapted:
        refined = [a for a, f in enumerate(factors) if f > 1]
        if adapted.get("stage") == "through-plane":
            refined = [axis]
        reason = str(adapted.get("reason"))
        if adapted.get("fallback") == "bicubic":
            where = ", ".join(map(str, refined))
            notes.append(f"slice-consistent bicubic along axis {where}: adaptation rejected ({reason})")
        elif adapted.get("fallback") is not None:
            notes.append(f"adaptation rejected ({reason}); the unadapted {adapted['fallback']} ran")
        elif adapted.get("reason") == "--no-adapt" and adapted.get("stage") == "through-plane":
            notes.append("through-plane network not adapted (--no-adapt)")
    return "; ".join(notes) or None
