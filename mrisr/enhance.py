"""Enhancing studies: the tool's main job, usable from Python and wrapped by ``mrisr enhance``.

For each study: load → robust intensity normalisation (recorded) → slices across the slicing axis →
bicubic ×scale → SRCNN (or the coarse-grid ESPCN on the slices themselves) → slices reassembled →
normalisation inverted → clamped to the input's value range → cast back to the input dtype →
written on the refined grid from :mod:`mrisr.geometry`, then a JSON sidecar (written last, it marks the study as done).

With ``simulate=True`` each input is a high-resolution *reference*: it is degraded by the scale, then
super-resolved back onto its own grid, and PSNR/SSIM of SR and of bicubic against it go into the
sidecar.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch import nn

from mrisr import __version__
from mrisr.adapt import STEPS_FINE_GRID, AdaptConfig, adapt_model, effective_steps, pass_plans
from mrisr.batch import study_lock
from mrisr.checkpoint import Checkpoint, load_checkpoint, shipped_checkpoint
from mrisr.discovery import Study
from mrisr.errors import MrisrError, OutputExistsError, UnreadableFileError, UnsupportedDataError
from mrisr.frames import as3d, bicubic_frames, crop_to_multiple, degrade_frames, first_frame, frames_of
from mrisr.fsutil import TMP_MARK, remove_path, sha256_files, write_json_atomic
from mrisr.geometry import as_factors, coarsen_affine, in_plane, refine_affine, voxel_spacing
from mrisr.inference import RunOptions, count_slices, resolve_device, super_resolve_array
from mrisr.io import Volume, cast_to_dtype
from mrisr.metrics import evaluate, psnr
from mrisr.outputs import Targets, read_sidecar, write_bids_description, write_volume
from mrisr.transforms import Normalization, fit_normalization

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
        dtype: Output dtype; ``None`` keeps the input's (integers rounded and clipped).
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


@dataclass
class StudyResult:
    """Outcome of one study: ``status`` is ``done``, ``skipped`` or ``failed``."""

    study: Study
    status: str
    seconds: float = 0.0
    error: str | None = None
    sidecar: Path | None = None
    output: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)


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


def _output_from(adapted: dict[str, Any] | None) -> str:
    """Which network made the output: ``network``, ``adapted network`` or ``bicubic``."""
    if adapted is None:
        return "network"
    if adapted.get("used"):
        return "adapted network"
    return "bicubic" if adapted.get("fallback") == "bicubic" else "network"


class Enhancer:
    """Super-resolves studies with one network, loaded once for all of them.

    Args:
        checkpoint: The network and its metadata.
        run: Device and batching options.
    """

    def __init__(self, checkpoint: Checkpoint, run: RunOptions | None = None) -> None:
        self.checkpoint = checkpoint
        self.run = run or RunOptions(device=resolve_device("auto"))
        self.model = checkpoint.build()
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mrisr-figure")

    # -- arrays -------------------------------------------------------------------------------------
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
        progress: Callable[[int], None] | None = None,
    ) -> tuple[np.ndarray, Normalization, dict[str, Any] | None]:
        """Super-resolve a 3D or 4D array in physical units.

        A constant array comes out constant; non-negative input gives non-negative output. With
        ``adapt``, a copy of the network is first fine-tuned on the (first frame of the) array
        (:mod:`mrisr.adapt`): a fine-grid network on the axis that voxel ``spacing`` (mm) shows fine
        enough, a coarse-grid one (ESPCN) in-plane on the slice axis ``axis``. When one axis alone
        is refined (thick slices), ``auto_adapt`` is used when ``adapt`` is not, and a rejected
        adaptation gives bicubic interpolation: on held-out EPI the template-trained networks, in-plane
        or through-plane, were worse than bicubic along the slice axis until adapted (docs/beyond.md).

        Returns:
            Float32 SR array, the normalisation used, and what adaptation did (``None`` without it).
        """
        arr = np.asarray(data)
        nm = norm or fit_normalization(arr)
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
                self.model, nm.apply(frames[0]), factors, spacing, config=adapt, device=self.run.device, axis=axis
            )
            adapted = {**info.to_dict(), "config": asdict(adapt)}
            if info.used and info.method == "coarse-grid":
                model = adapted_net  # the usual in-plane passes (and ensemble), with the tuned first layer
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
                adapted["fallback"] = str(self.checkpoint.arch.get("name", "srcnn"))
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
            sr = super_resolve_array(model, x, factors, axis=axis, opts=self.run, progress=progress, passes=plans[0])
            for plan in plans[1:]:
                sr += super_resolve_array(model, x, factors, axis=axis, opts=self.run, progress=progress, passes=plan)
            if len(plans) > 1:
                sr /= np.float32(len(plans))
            del x
            nm.invert_(sr)
            # Clamp to this frame's own range, as the bicubic baseline is (overshoot is not signal).
            lo, hi = float(frame.min()), float(frame.max()) if clamp else np.inf
            np.clip(sr, lo, hi, out=sr)
            if arr.ndim == 3:
                out = sr
            else:
                assert out is not None
                out[..., t] = sr
            del sr
        assert out is not None
        return out, nm, adapted

    def _request(self, opts: EnhanceOptions, factors: tuple[int, int, int]) -> dict[str, Any]:
        """What was asked beyond input and checkpoint (as JSON reads it back): a rerun skips a study
        only when this matches its sidecar's."""

        def resolved(cfg: AdaptConfig | None, steps: int) -> dict[str, Any] | None:
            return {**asdict(cfg), "steps": steps} if cfg else None

        req = {
            "scale": list(factors),
            "axis": opts.axis,
            "adapt": resolved(opts.adapt, effective_steps(opts.adapt, self.model)) if opts.adapt else None,
            # Only one-axis refinement adapts automatically, and only fine-grid networks do that.
            "auto_adapt": resolved(
                opts.auto_adapt, (opts.auto_adapt.steps if opts.auto_adapt else None) or STEPS_FINE_GRID
            ),
            "ensemble": self.run.ensemble,
        }
        return dict(json.loads(json.dumps(req)))

    def _same_request(self, old: Any, opts: EnhanceOptions, factors: tuple[int, int, int]) -> bool:
        """Whether a sidecar's ``request`` asked for what ``opts`` asks (sidecars of mrisr before the
        in-plane ESPCN adaptation also carry ``adapt_base_sha256``, null when ``--adapt`` was off)."""
        if not isinstance(old, dict):
            return False
        if "adapt_base_sha256" in old and old["adapt_base_sha256"] is None:
            old = {k: v for k, v in old.items() if k != "adapt_base_sha256"}
        return bool(old == self._request(opts, factors))

    def check_factors(self, factors: tuple[int, int, int], axis: int = 2) -> None:
        """Refuse, before any study is read, factors that this network cannot produce.

        Raises:
            CheckpointError: A coarse-grid network (ESPCN) asked for passes other than its own factors.
        """
        from mrisr.errors import CheckpointError
        from mrisr.inference import plan_passes

        if getattr(self.model, "input_space", "hr") != "lr":
            return
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

    # -- studies ------------------------------------------------------------------------------------
    def process(
        self,
        study: Study,
        opts: EnhanceOptions,
        *,
        progress: Callable[[int], None] | None = None,
        loaded: Future[Volume] | None = None,
    ) -> StudyResult:
        """Enhance one study under its lock; never raises for a bad study (the result says why).

        Args:
            study: The study.
            opts: What to produce.
            progress: Called with the number of slices done.
            loaded: The study's volume, already being read by a prefetching thread.
        """
        with study_lock(opts.out_dir, study.id) as mine:
            if not mine:
                return StudyResult(study, "locked", error=f"{study.path}: another process holds its lock")
            out_fmt = study.fmt if opts.fmt == "same" else opts.fmt
            targets = Targets.for_study(opts.out_dir, study, out_fmt)
            for target in targets.all():
                for tmp in target.parent.glob(f".{target.name}{TMP_MARK}*"):  # left by a killed run
                    remove_path(tmp)
            return self._process_locked(study, opts, out_fmt, targets, progress, loaded)

    def _process_locked(
        self,
        study: Study,
        opts: EnhanceOptions,
        out_fmt: str,
        targets: Targets,
        progress: Callable[[int], None] | None,
        loaded: Future[Volume] | None,
    ) -> StudyResult:
        t0 = time.perf_counter()
        factors = opts.scale or self.default_factors(opts.axis)
        out_path, sidecar = targets.output, targets.sidecar
        if study.bids is not None and out_fmt == "nifti":
            write_bids_description(opts.out_dir, str(self.checkpoint.arch.get("name", "")))
        try:
            if study.problem is not None:
                raise UnreadableFileError(study.path, study.problem)
            in_sha = sha256_files(study.files)
            old = read_sidecar(sidecar) if sidecar.exists() else None
            if not opts.overwrite and (old is not None or out_path.exists()):
                if (
                    old is not None
                    and old.get("status") == "done"
                    and old.get("input", {}).get("sha256") == in_sha
                    and old.get("checkpoint", {}).get("sha256") == self.checkpoint.sha256
                    and old.get("simulate", False) == opts.simulate
                    and self._same_request(old.get("request"), opts, factors)
                    and out_path.exists()
                ):
                    return StudyResult(study, "skipped", sidecar=sidecar, output=out_path)
                if old is not None and old.get("status") == "done":
                    raise OutputExistsError(
                        out_path, "output exists (from another input, checkpoint or settings); use --overwrite"
                    )
                # An output without a 'done' sidecar is what a killed run leaves: it is redone.
            record = self._process(study, opts, factors, out_fmt, targets, in_sha, progress, loaded)
            record["seconds"] = round(time.perf_counter() - t0, 3)
            write_json_atomic(sidecar, record)
            return StudyResult(
                study,
                "done",
                record["seconds"],
                sidecar=sidecar,
                output=out_path,
                metrics=record.get("metrics") or {},
            )
        except Exception as exc:
            # Specific errors carry the file and a reason; anything else (a library raising an
            # exception type we do not know) still fails this study alone, with its type named.
            reason = exc.reason if isinstance(exc, MrisrError) else f"{type(exc).__name__}: {exc}"
            where = str(exc.path) if isinstance(exc, MrisrError) and exc.path is not None else str(study.path)
            line = f"{where}: {reason}".splitlines()[0]
            log.debug("study %s failed", study.id, exc_info=True)
            seconds = round(time.perf_counter() - t0, 3)
            if not isinstance(exc, OutputExistsError):
                self._write_failure(study, opts, sidecar, line, seconds)
            return StudyResult(study, "failed", seconds, error=line, sidecar=sidecar)

    def _write_failure(self, study: Study, opts: EnhanceOptions, sidecar: Path, line: str, seconds: float) -> None:
        record = {
            "study": study.id,
            "status": "failed",
            "error": line,
            "input": {"path": str(study.path), "format": study.fmt},
            "checkpoint": {"path": str(self.checkpoint.path), "sha256": self.checkpoint.sha256},
            "mrisr_version": __version__,
            "simulate": opts.simulate,
            "device": str(self.run.device),
            "seconds": seconds,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        try:
            write_json_atomic(sidecar, record)
        except OSError:
            log.warning("could not write failure sidecar %s", sidecar)

    def _process(
        self,
        study: Study,
        opts: EnhanceOptions,
        factors: tuple[int, int, int],
        out_fmt: str,
        targets: Targets,
        in_sha: str,
        progress: Callable[[int], None] | None,
        loaded: Future[Volume] | None = None,
    ) -> dict[str, Any]:
        out_path = targets.output
        vol = loaded.result() if loaded is not None else study.load()
        if not np.isfinite(vol.data).all():
            bad = int((~np.isfinite(vol.data)).sum())
            raise UnsupportedDataError(study.path, f"{bad} NaN/Inf voxels of {vol.data.size}")
        if out_fmt == "dicom" and vol.data.ndim == 4:
            raise UnsupportedDataError(study.path, "4D data cannot be written as one DICOM series; use --format nifti")
        out_dtype = np.dtype(opts.dtype) if opts.dtype else vol.dtype
        metrics: dict[str, float] | None = None
        consistency: dict[str, float] | None = None
        extra_paths: dict[str, str] = {}
        figure_arrays: dict[str, np.ndarray | None] = {}
        degradation = opts.degradation or str(self.checkpoint.meta.get("degradation", "bicubic"))
        if degradation == "mixed":
            degradation = "bicubic"
        if opts.simulate:
            ref_vol = crop_to_multiple(vol, factors)
            ref = np.asarray(ref_vol.data, dtype=np.float32)
            lr = degrade_frames(ref, factors, degradation)
            if np.issubdtype(vol.dtype, np.integer):
                lr = cast_to_dtype(lr, vol.dtype).astype(np.float32)
            lr_affine = coarsen_affine(ref_vol.affine, factors)
            sr, norm, adapted = self.enhance_array(
                lr,
                factors,
                axis=opts.axis,
                clamp=opts.clamp,
                adapt=opts.adapt,
                auto_adapt=opts.auto_adapt,
                spacing=voxel_spacing(lr_affine),
                progress=progress,
            )
            sr_out = cast_to_dtype(sr, out_dtype)
            bic = bicubic_frames(lr, ref.shape, float(lr.min()), float(lr.max()))
            bic_out = cast_to_dtype(bic, out_dtype)

            metrics = evaluate(
                as3d(sr_out).astype(np.float64),
                as3d(bic_out).astype(np.float64),
                as3d(ref).astype(np.float64),
                scale=max(factors[0], factors[1]),
            )
            out_vol = ref_vol.with_data(sr_out, ref_vol.affine)
            if opts.save_intermediates:
                from mrisr.io.nifti import write_nifti

                lr_path, bic_path = targets.lowres, targets.bicubic
                write_nifti(ref_vol.with_data(cast_to_dtype(lr, out_dtype), lr_affine), lr_path, dtype=out_dtype)
                write_nifti(ref_vol.with_data(bic_out, ref_vol.affine), bic_path, dtype=out_dtype)
                extra_paths = {"lowres": lr_path.name, "bicubic": bic_path.name}
            figure_arrays = {"reference": ref, "lowres": lr, "bicubic": bic_out, "sr": sr_out}
            lr_shape = list(lr.shape)
        else:
            sr, norm, adapted = self.enhance_array(
                vol.data,
                factors,
                axis=opts.axis,
                clamp=opts.clamp,
                adapt=opts.adapt,
                auto_adapt=opts.auto_adapt,
                spacing=vol.spacing,
                progress=progress,
            )
            sr_out = cast_to_dtype(sr, out_dtype)
            del sr
            out_vol = vol.with_data(sr_out, refine_affine(vol.affine, factors))
            lr = np.asarray(vol.data, dtype=np.float32)
            back = degrade_frames(sr_out, factors, degradation)
            rng = float(lr.max() - lr.min()) or 1.0
            consistency = {"psnr_lr": round(psnr(back, lr, data_range=rng), 4), "degradation": degradation}  # type: ignore[dict-item]
            figure_arrays = _middle_slices(lr, sr_out, factors, opts.axis)
            lr_shape = list(vol.data.shape)
        # The figure is drawn in a helper thread while the volume is compressed and written.
        figure = (
            self._background.submit(self._figure, study, targets.figure, figure_arrays, metrics)
            if opts.figure
            else None
        )
        write_volume(out_vol, out_path, out_fmt, out_dtype)
        figure_name = figure.result() if figure is not None else None
        return {
            "study": study.id,
            "status": "done",
            "error": None,
            "input": {
                "path": str(study.path),
                "sha256": in_sha,
                "format": study.fmt,
                "shape": list(vol.data.shape),
                "spacing": list(vol.spacing),
                "lowres_shape": lr_shape,
            },
            "output": {
                "path": out_path.name,
                "format": out_fmt,
                "shape": list(out_vol.data.shape),
                "spacing": list(voxel_spacing(out_vol.affine)),
                "affine": out_vol.affine.round(6).tolist(),
                "dtype": str(out_dtype),
                **extra_paths,
            },
            "checkpoint": {"path": str(self.checkpoint.path), "sha256": self.checkpoint.sha256},
            "model": self.checkpoint.arch,
            "output_from": _output_from(adapted),
            "request": self._request(opts, factors),
            "mrisr_version": __version__,
            "scale": list(factors),
            "axis": opts.axis,
            "normalization": norm.to_dict(),
            "degradation": degradation if (opts.simulate or consistency) else None,
            "device": str(self.run.device),
            "amp": bool(self.run.amp and self.run.device.type == "cuda"),
            "ensemble": self.run.ensemble,
            "simulate": opts.simulate,
            "metrics": metrics,
            "consistency": consistency,
            "adapt": adapted,
            "figure": figure_name,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }

    def _figure(
        self,
        study: Study,
        path: Path,
        arrays: dict[str, np.ndarray | None],
        metrics: dict[str, float] | None,
    ) -> str | None:
        try:
            from mrisr.figures import compare_figure
        except ImportError:  # figures are optional (matplotlib missing on a lean install)
            return None
        sr = arrays["sr"]
        bic = arrays["bicubic"]
        assert sr is not None and bic is not None
        compare_figure(
            path,
            reference=first_frame(arrays.get("reference")),
            lowres=first_frame(arrays.get("lowres")),
            bicubic=first_frame(bic),  # type: ignore[arg-type]
            sr=first_frame(sr),  # type: ignore[arg-type]
            metrics=metrics,
            title=study.id,
            sr_label=str(self.checkpoint.arch.get("name", "srcnn")).upper(),
        )
        return path.name

    def enhance(
        self,
        studies: Sequence[Study],
        opts: EnhanceOptions,
        *,
        on_start: Callable[[Study, int], None] | None = None,
        on_slices: Callable[[int], None] | None = None,
        on_done: Callable[[StudyResult], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[StudyResult]:
        """Enhance ``studies`` in order; bad studies fail alone and the batch goes on.

        The next study is read by a background thread while the current one computes. When
        ``should_stop`` turns true (SIGTERM/SIGINT) the loop stops after the current study.
        """
        opts.out_dir.mkdir(parents=True, exist_ok=True)
        results: list[StudyResult] = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mrisr-read") as pool:
            nxt: Future[Volume] | None = pool.submit(studies[0].load) if studies else None
            if opts.figure:  # matplotlib's import (about a second) overlaps with the first study
                from mrisr import figures

                self._background.submit(figures.preload)
            for n, study in enumerate(studies):
                current = nxt
                nxt = pool.submit(studies[n + 1].load) if n + 1 < len(studies) else None
                if should_stop is not None and should_stop():
                    break
                if on_start is not None:
                    on_start(study, n)
                res = self.process(study, opts, progress=on_slices, loaded=current)
                results.append(res)
                if on_done is not None:
                    on_done(res)
            if nxt is not None:
                nxt.cancel()
        return results


def _middle_slices(
    lr: np.ndarray, sr: np.ndarray, factors: tuple[int, int, int], axis: int
) -> dict[str, np.ndarray | None]:
    """The middle slice across ``axis`` of input, bicubic and SR (first frame), as depth-1 volumes.

    The figure needs only these, so no full-size bicubic volume is made for it. The SR slice is the
    fine slice at the centre of the middle input slice.
    """
    lo = np.moveaxis(lr if lr.ndim == 3 else lr[..., 0], axis, 2)
    hi = np.moveaxis(sr if sr.ndim == 3 else sr[..., 0], axis, 2)
    k = lo.shape[2] // 2
    f = factors[axis]
    mid = lo[:, :, k : k + 1]
    plane = [a for a in range(3) if a != axis]
    bic = bicubic_frames(
        mid, (mid.shape[0] * factors[plane[0]], mid.shape[1] * factors[plane[1]], 1), float(mid.min()), float(mid.max())
    )
    sr_k = f * k + (f - 1) // 2
    return {"reference": None, "lowres": mid, "bicubic": bic, "sr": hi[:, :, sr_k : sr_k + 1]}


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
