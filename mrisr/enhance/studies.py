"""Enhancing whole studies: load, enhance, write the output, the figure and the sidecar under the
study's lock; a bad study fails alone (:class:`StudyBatch`, a part of :class:`~mrisr.enhance.Enhancer`)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mrisr import __version__
from mrisr.bids import derivative_metadata, write_description
from mrisr.checkpoint import Checkpoint
from mrisr.degradation import bicubic_frames, crop_to_multiple, degrade_frames
from mrisr.discovery import Study
from mrisr.enhance.maps import consistency as consistency_maps
from mrisr.enhance.maps import draw_figures, write_map
from mrisr.enhance.maps import uncertainty as uncertainty_summary
from mrisr.enhance.options import EnhanceOptions, StudyResult
from mrisr.enhance.spacing import slice_profile
from mrisr.errors import (
    MrisrError,
    NonFiniteOutputError,
    OutputExistsError,
    UnreadableFileError,
    UnsupportedDataError,
    plain_numbers,
)
from mrisr.fsutil import remove_temporaries, sha256_files, write_json_atomic
from mrisr.geometry import coarsen_affine, refine_affine, target_grid, voxel_spacing
from mrisr.inference import RunOptions
from mrisr.io import Volume, as_written, check_finite, default_output_dtype, write_volume
from mrisr.io.nifti_header import warn_if_orientation_unknown
from mrisr.locks import study_lock
from mrisr.metrics import evaluate
from mrisr.outputs import (
    Staging,
    Targets,
    commit_journal,
    finish_commit,
    standing_result,
)
from mrisr.resample import resample_to_grid
from mrisr.transforms import Normalization

log = logging.getLogger(__name__)

#: How often a study locked by another process is tried again while waiting for it (``lock_wait``).
LOCK_POLL_S = 1.0


def _output_from(adapted: dict[str, Any] | None) -> str:
    """Which network made the output: ``network``, ``adapted network`` or ``bicubic``; for two
    stages (``2,2,5``) one of those per stage, ``"<in-plane> in-plane, <one-axis> through-plane"``."""
    if adapted is None:
        return "network"
    own = "bicubic" if adapted.get("fallback") == "bicubic" else "network"
    if adapted.get("used"):
        own = "adapted network"
    if adapted.get("stage") == "through-plane":
        return f"{_output_from(adapted.get('in_plane'))} in-plane, {own} through-plane"
    return own


def _note(adapted: dict[str, Any] | None, factors: Sequence[int], axis: int) -> str | None:
    """One line for the console when part of the output is bicubic or an adaptation was rejected."""
    if adapted is None:
        return None
    notes = []
    inner = _note(adapted.get("in_plane"), factors, axis) if adapted.get("stage") == "through-plane" else None
    if inner:
        notes.append(f"in-plane: {inner}")
    if not adapted.get("used") and "reason" in adapted:
        refined = [a for a, f in enumerate(factors) if f > 1]
        if adapted.get("stage") == "through-plane":
            refined = [axis]
        reason = str(adapted.get("reason"))
        if adapted.get("fallback") == "bicubic":
            where = ", ".join(map(str, refined))
            notes.append(f"bicubic along axis {where}: adaptation rejected ({reason})")
        elif adapted.get("fallback") is not None:
            notes.append(f"adaptation rejected ({reason}); the unadapted {adapted['fallback']} ran")
        elif adapted.get("reason") == "--no-adapt" and adapted.get("stage") == "through-plane":
            notes.append("through-plane network not adapted (--no-adapt)")
    return "; ".join(notes) or None


def _db(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f} dB"


class StudyBatch:
    """The study-level half of :class:`~mrisr.enhance.Enhancer` (which provides the attributes and
    the array-level methods declared here)."""

    checkpoint: Checkpoint
    run: RunOptions
    through_plane: Checkpoint | None
    _background: ThreadPoolExecutor

    # Provided by Enhancer (array level); declared here for type checking only.
    enhance_array: Callable[..., tuple[np.ndarray, Normalization, dict[str, Any] | None]]
    default_factors: Callable[[int], tuple[int, int, int]]
    degradation: Callable[[EnhanceOptions], str]
    _request: Callable[[EnhanceOptions, tuple[int, int, int], str], dict[str, Any]]
    _request_differences: Callable[[Any, EnhanceOptions, tuple[int, int, int], str], list[str]]

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
        with study_lock(opts.out_dir, study.id) as lock:
            if not lock:
                # Not done by this run, and not failed: the holder may be making it right now, so no
                # sidecar is written; the caller reports it (and a rerun does it once the lock is free).
                return StudyResult(
                    study,
                    "locked",
                    error=f"{study.path}: not processed: its lock {lock.path} is held by {lock.holder}",
                )
            out_fmt = study.fmt if opts.fmt == "same" else opts.fmt
            targets = Targets.for_study(opts.out_dir, study, out_fmt)
            try:
                # A commit that a killed run left half done is finished first (outputs.finish_commit).
                finish_commit(commit_journal(opts.out_dir, study.id), opts.out_dir)
                own = {p for t in Targets.every_format(opts.out_dir, study) for p in t.all()}
                for target in own | {commit_journal(opts.out_dir, study.id)}:
                    remove_temporaries(target)  # left by a killed run (the lock keeps other writers away)
                # Not under this study's lock: only the temporaries of writers that are gone.
                for shared in ("dataset_description.json", ".bidsignore"):
                    remove_temporaries(opts.out_dir / shared, all_of_them=False)
            except OSError as exc:
                line = f"{opts.out_dir}: cannot finish or clean a previous run of {study.id} ({exc})"
                return StudyResult(study, "failed", error=line)
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
        try:
            if study.problem is not None:
                raise UnreadableFileError(study.path, study.problem)
            in_sha = sha256_files(study.files)
            old, old_sidecar = standing_result(opts.out_dir, study, targets)
            if not opts.overwrite and old is not None:
                diffs = [] if old.get("input", {}).get("sha256") == in_sha else ["input: another file (sha256)"]
                diffs += self._request_differences(old.get("request"), opts, factors, out_fmt)
                if not diffs and old_sidecar == sidecar and out_path.exists():
                    return StudyResult(study, "skipped", sidecar=sidecar, output=out_path)
                # The same request whose output was deleted is simply made again (nothing to protect).
                if diffs:
                    raise OutputExistsError(
                        old_sidecar, f"done with another request ({'; '.join(diffs)}); use --overwrite to replace it"
                    )
            # An output without a 'done' sidecar is what a killed run leaves: it is redone.
            staging = Staging()
            try:
                record = self._process(study, opts, factors, out_fmt, targets, in_sha, progress, loaded, staging)
                record["seconds"] = round(time.perf_counter() - t0, 3)
                stale = [p for t in Targets.every_format(opts.out_dir, study) for p in t.all()]
                staging.commit(commit_journal(opts.out_dir, study.id), sidecar, record, stale)
            except BaseException:
                staging.discard()
                raise
            return StudyResult(
                study,
                "done",
                record["seconds"],
                sidecar=sidecar,
                output=out_path,
                metrics=record.get("metrics") or {},
                output_from=record.get("output_from"),
                fallback=(record.get("adapt") or {}).get("fallback"),
                note=record.get("note"),
            )
        except Exception as exc:
            # Specific errors carry the file and a reason; anything else (a library raising an
            # exception type we do not know) still fails this study alone, with its type named.
            reason = exc.reason if isinstance(exc, MrisrError) else plain_numbers(f"{type(exc).__name__}: {exc}")
            # A file named by the error, else the study's own files (for a series spread over several
            # folders, those folders: its common folder alone, maybe ".", would name nothing).
            where = study.where(exc.path if isinstance(exc, MrisrError) else None)
            if isinstance(exc, NonFiniteOutputError):  # about the checkpoint, but for this study
                where, reason = study.location, f"{reason} (checkpoint {exc.path})"
            line = f"{where}: {reason}".splitlines()[0]
            log.debug("study %s failed", study.id, exc_info=True)
            seconds = round(time.perf_counter() - t0, 3)
            # A failure replaces no done result (a failed --overwrite leaves the old one, as a kill does).
            if not isinstance(exc, OutputExistsError) and standing_result(opts.out_dir, study, targets)[0] is None:
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
        loaded: Future[Volume] | None,
        staging: Staging,
    ) -> dict[str, Any]:
        """Make the study's outputs under ``staging``'s temporary names; returns the sidecar record."""
        out_path = targets.output
        resampled: dict[str, Any] | None = None
        profile: tuple[float, float, float] | None = None
        vol = loaded.result() if loaded is not None else study.load()
        check_finite(vol.data, study.path)
        warn_if_orientation_unknown(vol)
        if out_fmt == "dicom" and vol.data.ndim == 4:
            raise UnsupportedDataError(study.path, "4D data cannot be written as one DICOM series; use --format nifti")
        out_dtype = np.dtype(opts.dtype) if opts.dtype else default_output_dtype(vol.dtype)
        if out_fmt == "dicom":
            from mrisr.io.dicom import check_dicom_grid, dicom_as_written

            check_dicom_grid(vol)  # refining keeps the directions: a sheared grid fails before the SR

            def written(a: np.ndarray) -> np.ndarray:
                return dicom_as_written(a, vol.dtype)  # a DICOM series has its own 16-bit value rule
        else:

            def written(a: np.ndarray) -> np.ndarray:
                return as_written(a, out_dtype)

        metrics: dict[str, float] | None = None
        extra_paths: dict[str, str] = {}
        degradation = self.degradation(opts)
        # The ensemble spread needs one more output-sized volume: only when asked.
        out_shape = tuple(n * f for n, f in zip(vol.data.shape[:3], factors, strict=True)) + vol.data.shape[3:]
        spread = np.zeros(out_shape, dtype=np.float32) if opts.save_uncertainty else None
        if opts.simulate:
            ref_vol = crop_to_multiple(vol, factors)
            ref = np.asarray(ref_vol.data, dtype=np.float32)
            if float(ref.max()) == float(ref.min()):
                raise UnsupportedDataError(study.path, "a constant image: --simulate has no data range to measure")
            # The low-resolution scan as the input's type would store it (values, not whole units).
            # Within the true scan's value range (bicubic downsampling overshoots: a magnitude scan's
            # simulated low-resolution copy would hold negative values), then as the input's type
            # would store it (values, not whole units).
            lr = np.clip(degrade_frames(ref, factors, degradation), float(ref.min()), float(ref.max()))
            lr = as_written(lr, vol.dtype).astype(np.float32, copy=False)
            lr_affine = coarsen_affine(ref_vol.affine, factors)
            if spread is not None:
                spread = np.zeros(ref.shape, dtype=np.float32)
            sr, norm, adapted = self.enhance_array(
                lr,
                factors,
                axis=opts.axis,
                clamp=opts.clamp,
                adapt=opts.adapt,
                auto_adapt=opts.auto_adapt,
                spacing=voxel_spacing(lr_affine),
                progress=progress,
                spread_out=spread,
            )
            sr_out = written(sr)  # what the file will hold: metrics are of the file
            bic = bicubic_frames(lr, ref.shape, float(lr.min()), float(lr.max()))
            bic_out = written(bic)

            metrics = evaluate(
                sr_out.astype(np.float64),  # a 4D study stays 4D: 3D SSIM filters each frame on its own
                bic_out.astype(np.float64),
                ref.astype(np.float64),
                scale=max(factors[0], factors[1]),
            )
            out_vol = ref_vol.with_data(sr, ref_vol.affine)
            sr_affine = ref_vol.affine  # the grid of sr (and of the ensemble spread)
            if opts.save_intermediates:
                from mrisr.io.nifti import write_nifti

                lr_path, bic_path = targets.lowres, targets.bicubic
                write_nifti(ref_vol.with_data(lr, lr_affine), staging.path(lr_path), dtype=out_dtype)
                write_nifti(ref_vol.with_data(bic, ref_vol.affine), staging.path(bic_path), dtype=out_dtype)
                extra_paths = {"lowres": lr_path.name, "bicubic": bic_path.name}
            in_vol = ref_vol.with_data(lr, lr_affine)
            consistency, residual = consistency_maps(sr_out, lr, factors, degradation)
            figure_arrays: dict[str, np.ndarray | None] = {"reference": ref, "bicubic": bic_out, "sr": sr_out}
            lr_shape = list(lr.shape)
        else:
            profile = slice_profile(vol)
            sr, norm, adapted = self.enhance_array(
                vol.data,
                factors,
                axis=opts.axis,
                clamp=opts.clamp,
                adapt=opts.adapt,
                auto_adapt=opts.auto_adapt,
                spacing=vol.spacing,
                profile=profile,
                progress=progress,
                spread_out=spread,
            )
            # The writer stores the float result itself (a scaling for integer types, see
            # mrisr.io.encode_values); the checks below see the values as the file will hold them.
            sr_out = written(sr)
            fine_affine = refine_affine(vol.affine, factors)
            sr_affine = fine_affine  # --target-spacing may resample the output, not sr and its spread
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
            in_vol = vol
            consistency, residual = consistency_maps(sr_out, lr, factors, degradation)
            del sr_out
            # The figure shows the float result (the file holds it up to its scaling); bicubic is
            # interpolated for the shown plane only.
            figure_arrays = {"reference": None, "bicubic": None, "sr": sr}
            lr_shape = list(vol.data.shape)
        uncertainty = None
        if spread is not None:
            uncertainty = self._uncertainty_record(spread, figure_arrays["sr"], factors, adapted)  # type: ignore[arg-type]
        figure_arrays |= {"lowres": lr, "residual": residual, "uncertainty": spread}
        # The figure is drawn in a helper thread while the volume is compressed and written.
        figure = (
            self._background.submit(
                draw_figures,
                staging.path(targets.figure),
                staging.path(targets.mosaic),
                title=study.id,
                arrays=figure_arrays,
                metrics=metrics,
                affine=out_vol.affine,
                factors=factors,
                network=str(self.checkpoint.arch.get("name", "srcnn")).upper(),
                output_from=_output_from(adapted),
                notes={"views": str(self.run.ensemble), "consistency PSNR": _db(consistency["psnr_lr"])},
            )
            if opts.figure
            else None
        )
        try:
            write_volume(
                out_vol, staging.path(out_path), out_fmt, out_dtype, description=_description(factors, opts.simulate)
            )
            if spread is not None and uncertainty is not None:
                write_map(out_vol.with_data(spread, sr_affine), staging.path(targets.uncertainty))
                uncertainty["map"] = _relative(targets.uncertainty, targets.sidecar)
            if opts.save_residual:
                write_map(in_vol.with_data(residual, in_vol.affine), staging.path(targets.residual))
                consistency["map"] = _relative(targets.residual, targets.sidecar)
            del residual, spread
        except BaseException:
            # The figure thread writes a staged file: wait for it, so that the discard removes it.
            if figure is not None:
                with contextlib.suppress(Exception):
                    figure.result()
            raise
        made = figure is not None and figure.result()
        # Relative to the sidecar's folder (a BIDS derivative keeps its figures in sub-*/figures/).
        figure_name = _relative(targets.figure, targets.sidecar) if made else None
        mosaic_name = _relative(targets.mosaic, targets.sidecar) if made else None
        record = {
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
            "checkpoint_through_plane": (
                {"path": str(tp.path), "sha256": tp.sha256, "model": tp.arch} if (tp := self.through_plane) else None
            ),
            "model": self.checkpoint.arch,
            "output_from": _output_from(adapted),
            "note": _note(adapted, factors, opts.axis),
            "refined_axes": [a for a, f in enumerate(factors) if f > 1],
            "target_spacing": list(opts.target_spacing) if opts.target_spacing else None,
            "resampled": resampled,
            "slice_profile": list(profile) if profile else None,
            "request": self._request(opts, factors, out_fmt),
            "mrisr_version": __version__,
            "scale": list(factors),
            "axis": opts.axis,
            "normalization": norm.to_dict(),
            "degradation": degradation,
            "device": str(self.run.device),
            "amp": bool(self.run.amp and self.run.device.type == "cuda"),
            "ensemble": self.run.ensemble,
            "simulate": opts.simulate,
            "metrics": metrics,
            "consistency": consistency,
            "uncertainty": uncertainty,
            "adapt": adapted,
            "figure": figure_name,
            "mosaic": mosaic_name,
            "command": list(opts.command) if opts.command else None,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        if study.bids is not None and out_fmt == "nifti":
            record = {**self._bids_metadata(study, opts, factors, vol, out_vol), **record}
        return record

    def _bids_metadata(
        self, study: Study, opts: EnhanceOptions, factors: tuple[int, int, int], vol: Volume, out_vol: Volume
    ) -> dict[str, Any]:
        """The BIDS half of a derivative's sidecar (:func:`mrisr.bids.derivative_metadata`)."""
        assert study.bids is not None
        root = study.path.parents[len(study.bids.parts) - 1]
        link = write_description(opts.out_dir, root, str(self.checkpoint.arch.get("name", "")))
        what = f"{_description(factors, opts.simulate)} of the source"
        grids = ((vol.affine, vol.shape3), (out_vol.affine, out_vol.shape3))
        return derivative_metadata(study.path, root, link, description=what, grids=grids)

    def _uncertainty_record(
        self, spread: np.ndarray, sr: np.ndarray, factors: tuple[int, int, int], adapted: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """The sidecar's ``uncertainty``: ``None`` when no spread exists (one view, or no network ran)."""
        if self.run.ensemble == 1 or _output_from(adapted) == "bicubic":
            log.info("no ensemble spread: %s", "one view" if self.run.ensemble == 1 else "bicubic fallback")
            return None
        return uncertainty_summary(spread, sr, factors, self.run.ensemble)

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
                if on_done is not None and res.status != "locked":
                    on_done(res)
            if nxt is not None:
                nxt.cancel()
        # Studies another process held are tried again at the end, for up to opts.lock_wait seconds:
        # a lock released meanwhile (a racing worker that finished the study) gives the usual
        # result, usually 'skipped'.
        deadline = time.monotonic() + opts.lock_wait
        retried = [k for k, res in enumerate(results) if res.status == "locked"]
        pending = list(retried)
        while pending:
            for k in list(pending):
                if should_stop is not None and should_stop():
                    break
                results[k] = self.process(results[k].study, opts, progress=on_slices)
                if results[k].status != "locked":
                    pending.remove(k)
            if not pending or time.monotonic() >= deadline or (should_stop is not None and should_stop()):
                break
            time.sleep(min(LOCK_POLL_S, max(0.0, deadline - time.monotonic())))
        if on_done is not None:
            for k in retried:
                on_done(results[k])
        return results


def _relative(path: Path, sidecar: Path) -> str:
    """``path`` relative to the sidecar's folder (how the sidecar names its files)."""
    return Path(os.path.relpath(path, sidecar.parent)).as_posix()


def _description(factors: tuple[int, int, int], simulate: bool) -> str:
    """The output header's ``descrip``: mrisr's version and the scale (NIfTI keeps 80 bytes)."""
    what = "SR of a simulated x" if simulate else "SR x"
    return f"mrisr {__version__} {what}{'x'.join(map(str, factors))}"
