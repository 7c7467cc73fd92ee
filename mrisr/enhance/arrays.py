"""The array level of enhancing: :class:`ArraySR`, one network (and the one-axis network of a
second stage) loaded once, that super-resolves arrays in physical units, with per-study adaptation
when asked. It knows nothing of files, studies or sidecars (:mod:`mrisr.enhance.studies`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import numpy as np
from torch import nn

from mrisr.adapt import AdaptConfig, adapt_model
from mrisr.adapt.one_axis import match_slices, profile_width
from mrisr.checkpoint import Checkpoint
from mrisr.degradation import evaluation_mode
from mrisr.enhance.options import DEFAULT_ADAPT, default_run, split_stages
from mrisr.errors import NonFiniteOutputError
from mrisr.frames import frames_of
from mrisr.geometry import in_plane
from mrisr.inference import RunOptions, super_resolve_array
from mrisr.models import AxisESPCN
from mrisr.passes import count_slices, pass_plans, plan_passes
from mrisr.transforms import Normalization

log = logging.getLogger(__name__)

#: Ensemble views of the one-axis coarse-grid network on each of its two planes (the slice and its
#: flip along the thick axis): with both planes, four runs of the network per study, which keeps a
#: 256×256×40 study at ×3 within 60 s on 2 CPU cores (docs/performance.md).
AXIS_ENSEMBLE = 2


class ArraySR:
    """Super-resolves arrays with one network, loaded once.

    Args:
        checkpoint: The network and its metadata (the in-plane stage when ``through_plane`` is given).
        run: Device and batching options; ``None``: :func:`~mrisr.enhance.options.default_run` (what
            ``mrisr enhance`` does by default).
        through_plane: A one-axis network for the second stage of scales that refine both the plane
            of the slices and the slice axis (``2,2,5``; :func:`~mrisr.enhance.options.split_stages`).
    """

    def __init__(
        self, checkpoint: Checkpoint, run: RunOptions | None = None, *, through_plane: Checkpoint | None = None
    ) -> None:
        self.checkpoint = checkpoint
        self.run = run or default_run()
        self.model = checkpoint.build()
        self.through_plane = through_plane
        self._second = ArraySR(through_plane, self.run) if through_plane is not None else None

    @property
    def network(self) -> str:
        """The network's name as the sidecar records it (``srcnn``, ``espcn``)."""
        return str(self.checkpoint.arch.get("name", "srcnn"))

    def enhance_array(
        self,
        data: np.ndarray,
        factors: tuple[int, int, int],
        *,
        axis: int = 2,
        norm: Normalization | None = None,
        clamp: bool = True,
        adapt: AdaptConfig | None = None,
        auto_adapt: AdaptConfig | None = DEFAULT_ADAPT,
        spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
        profile: tuple[float, float, float] | None = None,
        progress: Callable[[int], None] | None = None,
        spread_out: np.ndarray | None = None,
    ) -> tuple[np.ndarray, Normalization, dict[str, Any] | None]:
        """Super-resolve a 3D or 4D array in physical units.

        With a ``through_plane`` network, factors that refine both the plane of the ``axis`` slices
        and ``axis`` itself run in two stages: the in-plane network first, then the one-axis network
        (adapted to the study, whose in-plane axes are then fine) along ``axis``; the returned
        adaptation record is the second stage's, with the first stage's under ``in_plane``.
        ``profile`` is the slice thickness over the spacing per axis when the header states it
        (DICOM); one-axis adaptation then degrades with that slice profile (:mod:`mrisr.adapt`).

        A constant array comes out constant; with ``clamp`` (the default) the output stays within each
        frame's value range (so non-negative input gives non-negative output); without it nothing is
        clamped. With ``adapt``, a copy of the network is first fine-tuned on the (first frame of the)
        array (:mod:`mrisr.adapt`): a fine-grid network on the axis that voxel ``spacing`` (mm) shows
        fine enough, a coarse-grid one (ESPCN) in-plane on the slice axis ``axis``. When one axis alone
        is refined (thick slices), ``auto_adapt`` is used when ``adapt`` is not, and a rejected
        adaptation gives bicubic interpolation: on held-out EPI the template-trained networks, in-plane
        or through-plane, were worse than bicubic along the slice axis until adapted (docs/beyond.md).

        ``spread_out`` (float32, the output's shape), when given, receives the ensemble spread: per
        voxel, the standard deviation in physical units of the views' outputs before they are
        averaged (pooled over the pass plans when several are averaged; zeros when no network ran).
        Without it no extra memory or time is spent.

        Returns:
            Float32 SR array, the normalisation used, and what adaptation did (``None`` without it).
        """
        arr = np.asarray(data)
        if norm is None:
            from mrisr.monai_transforms import PercentileNormalize  # the training's transform (MONAI)

            norm = PercentileNormalize().fit(arr)
        nm = norm
        plane, through = split_stages(factors, axis)
        if self._second is not None and max(through) > 1:
            first, _, adapted_in = self.enhance_array(
                arr, plane, axis=axis, norm=nm, clamp=clamp, adapt=adapt, auto_adapt=None, spacing=spacing,
                progress=progress,
            )  # fmt: skip
            fine = (spacing[0] / plane[0], spacing[1] / plane[1], spacing[2] / plane[2])
            sr2, _, adapted2 = self._second.enhance_array(
                first,
                through,
                axis=axis,
                norm=nm,
                clamp=clamp,
                adapt=None,
                auto_adapt=auto_adapt,
                spacing=fine,
                profile=profile,
                progress=progress,
                spread_out=spread_out,
            )  # fmt: skip  (the spread is the through-plane stage's, the last one run)
            del first
            stages = dict(adapted2) if adapted2 is not None else {"used": False, "reason": "--no-adapt"}
            return sr2, nm, {**stages, "stage": "through-plane", "in_plane": adapted_in}
        frames = frames_of(arr)
        model: nn.Module | None = self.model
        adapted: dict[str, Any] | None = None
        plans: list[list[tuple[int, tuple[int, int]]] | None] = [None]  # None: the usual passes of ``axis``
        single = sum(f > 1 for f in factors) == 1
        trained = self.checkpoint.scale
        one_axis_net = single and trained is not None and sum(f > 1 for f in trained) == 1
        if one_axis_net:
            # A network trained for one axis: the mean over both planes that contain it (as adapted).
            plans = list(pass_plans(factors, spacing))
        if single and adapt is None:
            adapt = auto_adapt
            if adapt is None and not one_axis_net:
                log.warning(
                    "--no-adapt: a network not trained for one-axis blur refines one axis (often worse than bicubic)"
                )
        if adapt is not None and not nm.constant:
            adapted_net, info = adapt_model(
                self.model, nm.apply(frames[0]), factors, spacing, config=adapt, device=self.run.device, axis=axis,
                profile=profile,
            )  # fmt: skip
            adapted = {**info.to_dict(), "config": asdict(adapt)}
            if info.used and info.method == "coarse-grid":
                model = adapted_net  # the usual in-plane passes (and ensemble), with the tuned first layer
            elif not info.used and info.method == "axis-coarse-grid" and _unadapted_wins(info):
                # A network trained for one-axis blur whose adaptation did not improve on it, but
                # which beat bicubic on held-out slices: it refines the study as it is, on both planes.
                adapted["fallback"] = self.network
            elif info.used:
                model, own = adapted_net, pass_plans(factors, spacing)
                # These replace --axis; the outputs of several plans are averaged.
                adapted["passes"] = [[[cut, list(fs)] for cut, fs in plan] for plan in own]
                plans = list(own)
            elif single:
                # Rejected: the study could not teach the network; unadapted, it can be worse than
                # interpolation along one axis (held-out EPI), so interpolate.
                model, plans = None, [None]
                adapted["fallback"] = "bicubic"
            else:
                # Rejected: the checkpoint's own network, exactly as without --adapt.
                adapted["fallback"] = self.network
        if single and not nm.constant:  # a constant study comes out constant: nothing to match
            # Network or bicubic fallback alike (bicubic gained 0.06-1.05 dB from it on every held-out
            # thick-slice case, docs/beyond.md).
            adapted = adapted if adapted is not None else {"used": False, "reason": "--no-adapt"}
            adapted["slice_consistency"] = {"profile_width": profile_width(factors, profile) or float(max(factors))}
        shape = tuple(n * f for n, f in zip(arr.shape[:3], factors, strict=True)) + tuple(arr.shape[3:])
        # A 4D output is filled frame by frame; a 3D one is the SR array itself (no second copy).
        out = np.empty(shape, dtype=np.float32) if arr.ndim == 4 or nm.constant else None
        for t, frame in enumerate(frames):
            if nm.constant:
                assert out is not None
                out[...] = nm.data_min
                if progress is not None:
                    progress(count_slices(frame.shape, factors, axis))
                continue
            x = nm.apply(frame)
            var = None if spread_out is None else np.empty(spread_out.shape[:3], dtype=np.float32)
            second: np.ndarray | None = None  # sum over plans of E[y²] (only for the spread)
            sr = np.zeros(0, dtype=np.float32)
            run = self.run
            if isinstance(model, AxisESPCN):  # two views per plane: a 256×256×40 study at ×3 in budget
                run = replace(run, ensemble=min(run.ensemble, AXIS_ENSEMBLE))
            for n, plan in enumerate(plans):
                m = super_resolve_array(
                    _oriented(model, plan),
                    x,
                    factors,
                    axis=axis,
                    opts=run,
                    progress=progress,
                    passes=plan,
                    variance_out=var,
                )
                if var is not None:
                    var += m * m
                    second = var.copy() if second is None else np.add(second, var, out=second)
                sr = m if n == 0 else np.add(sr, m, out=sr)
            if len(plans) > 1:
                sr /= np.float32(len(plans))
            if spread_out is not None and second is not None:
                std = _pooled_std(second, sr, len(plans), nm.scale)
                if spread_out.ndim == 4:
                    spread_out[..., t] = std
                else:
                    spread_out[...] = std
            if single:
                # One axis refined: the output's thick-slice averages are made equal to the input
                # (the slice profile's forward model; docs/beyond.md).
                match_slices(sr, x, factors, profile=profile)
            del x
            self._check_output(sr)
            nm.invert_(sr)
            if clamp:  # to this frame's own range, as the bicubic baseline is (overshoot is not signal)
                np.clip(sr, float(frame.min()), float(frame.max()), out=sr)
            if arr.ndim == 3:
                out = sr
            else:
                assert out is not None
                out[..., t] = sr
            del sr
        assert out is not None
        return out, nm, adapted

    def _check_output(self, sr: np.ndarray) -> None:
        """Refuse a network output with NaN/Inf values: clamping would turn them into a plausible-looking
        but made-up image (NaN becomes the minimum, infinity the maximum).

        Raises:
            NonFiniteOutputError: Naming the checkpoint and how many values are not finite.
        """
        flat = sr.reshape(-1)
        step = 1 << 22  # in blocks: no volume-sized mask next to the output
        bad = sum(int(np.count_nonzero(~np.isfinite(flat[i : i + step]))) for i in range(0, flat.size, step))
        if bad:
            raise NonFiniteOutputError(
                self.checkpoint.path,
                f"the network gave {bad} NaN/Inf values of {sr.size} (its weights overflow on this input)",
            )

    def degradation(self, requested: str | None) -> str:
        """The degradation of ``--simulate`` and of the consistency check: ``requested``, else the
        checkpoint's (``mixed`` training counts as ``bicubic``)."""
        degradation = requested or str(self.checkpoint.meta.get("degradation", "bicubic"))
        return evaluation_mode(degradation)

    def check_factors(self, factors: tuple[int, int, int], axis: int = 2) -> None:
        """Refuse, before any study is read, factors that this network cannot produce.

        Raises:
            CheckpointError: A coarse-grid network (ESPCN) asked for passes other than its own factors.
        """
        from mrisr.errors import CheckpointError

        if getattr(self.model, "input_space", "hr") != "lr":
            return
        if isinstance(self.model, AxisESPCN):
            refined = [f for f in factors if f > 1]
            if refined != [self.model.config.factor]:
                raise CheckpointError(
                    self.checkpoint.path,
                    f"this one-axis network refines one axis ×{self.model.config.factor} only, not scale {factors}",
                )
            return
        if self._second is not None:
            factors = split_stages(factors, axis)[0]  # the in-plane stage is this network's
        own = tuple(self.checkpoint.arch.get("factors", ()))
        bad = [fs for _, fs in plan_passes(factors, axis) if tuple(fs) != own]
        if bad:
            raise CheckpointError(
                self.checkpoint.path,
                f"this coarse-grid network refines slices by {own} only; scale {factors} with --axis {axis} "
                f"needs {bad[0]} (use --arch srcnn, or a scale refining the plane of the --axis slices)",
            )

    def default_factors(self, axis: int = 2) -> tuple[int, int, int]:
        """The checkpoint's scale, turned to refine the plane of slices cut across ``axis``."""
        scale = self.checkpoint.scale or (4, 4, 1)
        refined = [f for f in scale if f > 1]
        if len(refined) == 2 and refined[0] == refined[1]:
            return in_plane(refined[0], axis)
        return scale


def _unadapted_wins(info: Any) -> bool:
    """Whether a one-axis network's rejected adaptation leaves the unadapted network to run: it beat
    bicubic on the study's held-out slices. When nothing could be measured (no donor slices, or too
    few to hold one out) bicubic runs: dipy's test_piesno at ×5 (2 thick slices) lost 0.24 dB with
    the unadapted network."""
    if info.val_mse_before is None or info.val_mse_bicubic is None:
        return False
    return bool(info.val_mse_before < info.val_mse_bicubic)


def _oriented(model: nn.Module | None, plan: list[tuple[int, tuple[int, int]]] | None) -> nn.Module | None:
    """``model`` turned to refine the one axis of a one-pass ``plan`` (a one-axis coarse-grid network
    refines its columns or its rows with the same weights); other networks as they are."""
    if model is None or plan is None or not isinstance(model, AxisESPCN):
        return model
    ((_, fs),) = plan
    return model.oriented(fs)


def _pooled_std(second: np.ndarray, mean: np.ndarray, n: int, scale: float) -> np.ndarray:
    """``sqrt(second / n − mean²) · scale``, in place in ``second``: the spread of every view of every
    plan (``second``: the sum over plans of the views' mean square), in physical units."""
    second /= np.float32(n)
    second -= mean * mean
    np.clip(second, 0.0, None, out=second)
    np.sqrt(second, out=second)
    second *= np.float32(scale)
    return second
