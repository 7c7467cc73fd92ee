"""Enhancing one whole study: under its lock, decide by the sidecar rule (:mod:`mrisr.sidecar`)
whether it is done already, compute its arrays (:mod:`mrisr.enhance.compute`), write the output,
the maps and the figures under temporary names, and commit them with the sidecar
(:mod:`mrisr.outputs`). A bad study fails alone: :func:`process_study` never raises for it."""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from mrisr import __version__
from mrisr.bids import check_description, derivative_metadata, write_description
from mrisr.discovery import Study
from mrisr.enhance import compute
from mrisr.enhance.compute import Batch, Computed
from mrisr.enhance.maps import draw_figures, write_map
from mrisr.enhance.maps import uncertainty as uncertainty_summary
from mrisr.enhance.options import EnhanceOptions, StudyResult
from mrisr.errors import (
    MrisrError,
    NonFiniteOutputError,
    OutputExistsError,
    OutputWriteError,
    UnreadableFileError,
    UnsupportedDataError,
    plain_numbers,
    printable,
)
from mrisr.fsutil import remove_temporaries, write_json_atomic
from mrisr.geometry import voxel_spacing
from mrisr.io import Volume, as_written, check_finite, default_output_dtype, same_output_format, write_volume
from mrisr.io.nifti_header import warn_if_orientation_unknown
from mrisr.locks import study_lock
from mrisr.outputs import Staging, check_free, check_inside, check_removable, commit_journal, finish_commit, link_out_of
from mrisr.sidecar import Targets, owned_outputs, rerun_differences, standing_result, study_sha256

log = logging.getLogger(__name__)


def process_study(batch: Batch, study: Study, *, loaded: Future[Volume] | None = None) -> StudyResult:
    """Enhance one study under its lock; never raises for a bad study (the result says why).

    Args:
        batch: The network, the options and the factors.
        study: The study.
        loaded: The study's volume, already being read by a prefetching thread.
    """
    out_dir = batch.opts.out_dir
    with study_lock(out_dir, study.id) as lock:
        if not lock:
            # Not done by this run, and not failed: the holder may be making it right now, so no
            # sidecar is written; the caller reports it (and a rerun does it once the lock is free).
            return StudyResult(
                study,
                "locked",
                error=f"{study.path}: not processed: its lock {lock.path} is held by {lock.holder}",
            )
        out_fmt = same_output_format(study.fmt) if batch.opts.fmt == "same" else batch.opts.fmt
        try:
            # A commit that a killed run left half done is finished first (outputs.finish_commit).
            own = {p for t in Targets.every_format(out_dir, study) for p in t.all()}
            finish_commit(commit_journal(out_dir, study.id), out_dir, allowed=own)
            for target in own | {commit_journal(out_dir, study.id)}:
                remove_temporaries(target)  # left by a killed run (the lock keeps other writers away)
            # Not under this study's lock: only the temporaries of writers that are gone.
            for shared in ("dataset_description.json", ".bidsignore"):
                remove_temporaries(out_dir / shared, all_of_them=False)
        except OSError as exc:
            line = f"{out_dir}: cannot finish or clean a previous run of {study.id} ({exc})"
            return StudyResult(study, "failed", error=line)
        return _process_locked(batch, study, out_fmt, loaded)


def _process_locked(batch: Batch, study: Study, out_fmt: str, loaded: Future[Volume] | None) -> StudyResult:
    t0 = time.perf_counter()
    opts = batch.opts
    targets = Targets.for_study(opts.out_dir, study, out_fmt)
    out_path, sidecar = targets.output, targets.sidecar
    try:
        if study.problem is not None:
            raise UnreadableFileError(study.path, study.problem)
        in_sha = study_sha256(study.files)
        old, old_sidecar = standing_result(opts.out_dir, study, targets)
        if not (opts.overwrite or opts.redo) and old is not None:
            diffs = rerun_differences(old, input_sha256=in_sha, request=batch.request(out_fmt))
            if not diffs and old_sidecar == sidecar and out_path.exists():
                return StudyResult(study, "skipped", sidecar=sidecar, output=out_path)
            # The same request whose output was deleted is simply made again (nothing to protect).
            if diffs:
                raise OutputExistsError(
                    old_sidecar, f"done with another request ({'; '.join(diffs)}); use --overwrite to replace it"
                )
        # Only what mrisr's own records name is replaced or removed (a kill leaves the journal, which
        # was carried out before this): refuse early, before the work, for the main output and sidecar.
        # Nothing is written through a link out of OUT, and an owned series folder that now holds a
        # file of the user's is neither replaced nor removed.
        owned = owned_outputs(opts.out_dir, study)
        check_inside(_written(targets, opts), opts.out_dir)
        check_free(
            [out_path, sidecar],
            owned,
            overwrite=opts.overwrite,
            staged_dirs={out_path} if out_fmt == "dicom" else (),
            root=opts.out_dir,
        )
        check_removable([p for p in owned if p not in (out_path, sidecar)], root=opts.out_dir)
        if study.bids is not None and out_fmt == "nifti":
            check_description(opts.out_dir)  # a raw dataset's description of the user's is never rewritten
        staging = Staging()
        try:
            record = _make_outputs(batch, study, out_fmt, targets, in_sha=in_sha, loaded=loaded, staging=staging)
            record["seconds"] = round(time.perf_counter() - t0, 3)
            stale = [p for t in Targets.every_format(opts.out_dir, study) for p in t.all()]
            journal = commit_journal(opts.out_dir, study.id)
            with _writing(sidecar):
                staging.commit(journal, sidecar, record, stale, owned=owned, overwrite=opts.overwrite)
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
        # One line that keeps the reason: a newline in a file name is escaped, one in a library's
        # message becomes a space (cutting at the first newline lost the reason).
        line = printable(f"{where}: {' '.join(reason.split())}")
        log.debug("study %s failed", study.id, exc_info=True)
        seconds = round(time.perf_counter() - t0, 3)
        # A failure replaces no done result (a failed --overwrite leaves the old one, as a kill does).
        # Nor is a file of the user's at the sidecar's path replaced by the failure record.
        no_result = standing_result(opts.out_dir, study, targets)[0] is None
        sidecar_free = link_out_of(sidecar, opts.out_dir) is None and (
            not os.path.lexists(sidecar) or sidecar in owned_outputs(opts.out_dir, study)
        )
        if not isinstance(exc, OutputExistsError) and no_result and sidecar_free:
            _write_failure(batch, study, sidecar, line, seconds)
        return StudyResult(study, "failed", seconds, error=line, sidecar=sidecar)


def _written(targets: Targets, opts: EnhanceOptions) -> list[Path]:
    """The target paths this run may write for a study (the others are left alone)."""
    paths = [targets.output, targets.sidecar]
    paths += [targets.figure, targets.mosaic] if opts.figure else []
    paths += [targets.lowres, targets.bicubic] if opts.simulate and opts.save_intermediates else []
    paths += [targets.uncertainty] if opts.save_uncertainty else []
    paths += [targets.residual] if opts.save_residual else []
    return paths


def _write_failure(batch: Batch, study: Study, sidecar: Path, line: str, seconds: float) -> None:
    arrays = batch.arrays
    record = {
        "study": study.id,
        "status": "failed",
        "error": line,
        "input": {"path": str(study.path), "format": study.fmt},
        "checkpoint": {"path": str(arrays.checkpoint.path), "sha256": arrays.checkpoint.sha256},
        "mrisr_version": __version__,
        "simulate": batch.opts.simulate,
        "device": str(arrays.run.device),
        "seconds": seconds,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        write_json_atomic(sidecar, record)
    except OSError:
        log.warning("could not write failure sidecar %s", sidecar)


def _make_outputs(
    batch: Batch,
    study: Study,
    out_fmt: str,
    targets: Targets,
    *,
    in_sha: str,
    loaded: Future[Volume] | None,
    staging: Staging,
) -> dict[str, Any]:
    """Make the study's outputs under ``staging``'s temporary names; returns the sidecar record."""
    opts = batch.opts
    vol = loaded.result() if loaded is not None else study.load()
    check_finite(vol.data, study.path)
    warn_if_orientation_unknown(vol)
    if out_fmt == "dicom" and vol.data.ndim == 4:
        raise UnsupportedDataError(study.path, "4D data cannot be written as one DICOM series; use --format nifti")
    out_dtype = np.dtype(opts.dtype) if opts.dtype else default_output_dtype(vol.dtype)
    stored_dtype = out_dtype
    if out_fmt == "dicom":
        from mrisr.io.dicom import check_dicom_grid, dicom_as_written, dicom_stored_dtype

        check_dicom_grid(vol)  # refining keeps the directions: a sheared grid fails before the SR
        # The sidecar records the type the series holds (16-bit integers with a rescale, not a float).
        if opts.dtype and np.dtype(opts.dtype) != dicom_stored_dtype(vol.dtype):
            log.warning(
                "%s: --dtype %s is not written as DICOM: the series holds %s with a rescale (use --format nifti)",
                study.id,
                opts.dtype,
                dicom_stored_dtype(vol.dtype),
            )
        stored_dtype = dicom_stored_dtype(vol.dtype)

        def written(a: np.ndarray) -> np.ndarray:
            return dicom_as_written(a, vol.dtype)  # a DICOM series has its own 16-bit value rule
    else:

        def written(a: np.ndarray) -> np.ndarray:
            return as_written(a, out_dtype)

    if opts.simulate:
        made = compute.simulate(batch, vol, written, where=study.path)
    else:
        made = compute.enhance(batch, vol, written)
    files = _write_files(batch, study, made, targets, out_fmt=out_fmt, out_dtype=out_dtype, staging=staging)
    record = _record(batch, study, made, targets, vol=vol, in_sha=in_sha, out_fmt=out_fmt, out_dtype=stored_dtype)
    record["output"] |= files.pop("output")
    record |= files
    if study.bids is not None and out_fmt == "nifti":
        record = {**_bids_metadata(batch, study, vol, made.out_vol), **record}
    return record


def _write_files(
    batch: Batch,
    study: Study,
    made: Computed,
    targets: Targets,
    *,
    out_fmt: str,
    out_dtype: np.dtype,
    staging: Staging,
) -> dict[str, Any]:
    """Write the output, the intermediates, the maps and (in a helper thread) the figures, staged;
    returns the sidecar's entries that name them (``output`` holds those of the ``output`` entry)."""
    opts, factors = batch.opts, batch.factors
    uncertainty = _uncertainty_record(batch, made)
    named: dict[str, Any] = {"output": {}, "uncertainty": uncertainty, "consistency": made.consistency}
    for key, vol in made.intermediates.items():
        from mrisr.io.nifti import write_nifti

        path = getattr(targets, key)
        with _writing(path):
            write_nifti(vol, staging.path(path), dtype=out_dtype)
        named["output"][key] = path.name
    arrays = made.figure_arrays | {"residual": made.residual, "uncertainty": made.spread}
    figure: Future[bool] | None = None
    if opts.figure:
        # Staged here, in turn (the order of the commit's moves), not in the helper thread.
        paths = (staging.path(targets.figure), staging.path(targets.mosaic))

        def draw() -> bool:
            return draw_figures(
                *paths,
                title=study.id,
                arrays=arrays,
                metrics=made.metrics,
                affine=made.out_vol.affine,
                factors=factors,
                network=batch.arrays.network.upper(),
                output_from=compute.output_from(made.adapted),
                notes={"views": str(batch.arrays.run.ensemble), "consistency PSNR": _db(made.consistency["psnr_lr"])},
            )

        # The figure is drawn in a helper thread while the volume is compressed and written.
        figure = batch.background.submit(draw) if batch.background is not None else _now(draw)
    try:
        description = _description(factors, opts.simulate)
        with _writing(targets.output):
            write_volume(made.out_vol, staging.path(targets.output), out_fmt, out_dtype, description=description)
        if made.spread is not None and uncertainty is not None:
            with _writing(targets.uncertainty):
                write_map(made.out_vol.with_data(made.spread, made.sr_affine), staging.path(targets.uncertainty))
            uncertainty["map"] = _relative(targets.uncertainty, targets.sidecar)
        if opts.save_residual:
            with _writing(targets.residual):
                write_map(made.in_vol.with_data(made.residual, made.in_vol.affine), staging.path(targets.residual))
            made.consistency["map"] = _relative(targets.residual, targets.sidecar)
    except BaseException:
        # The figure thread writes a staged file: wait for it, so that the discard removes it.
        if figure is not None:
            with contextlib.suppress(Exception):
                figure.result()
        raise
    with _writing(targets.figure):
        drawn = figure is not None and figure.result()
    # Relative to the sidecar's folder (a BIDS derivative keeps its figures in sub-*/figures/).
    named["figure"] = _relative(targets.figure, targets.sidecar) if drawn else None
    named["mosaic"] = _relative(targets.mosaic, targets.sidecar) if drawn else None
    return named


@contextlib.contextmanager
def _writing(final: Path) -> Iterator[None]:
    """Name ``final`` (the output's final path, not its temporary name, nor the input) in any
    :class:`OSError` raised while it is written: a full disk fails the study with that name."""
    try:
        yield
    except OSError as exc:
        raise OutputWriteError(final, f"cannot write this output ({exc.strerror or exc})") from exc


def _now(draw: Callable[[], bool]) -> Future[bool]:
    """A future already holding ``draw()`` (drawn in turn, without a helper thread)."""
    done: Future[bool] = Future()
    done.set_result(draw())
    return done


def _record(
    batch: Batch,
    study: Study,
    made: Computed,
    targets: Targets,
    *,
    vol: Volume,
    in_sha: str,
    out_fmt: str,
    out_dtype: np.dtype,
) -> dict[str, Any]:
    """The study's done sidecar (:mod:`mrisr.sidecar`), but for the files it names."""
    opts, arrays, factors, out_vol = batch.opts, batch.arrays, batch.factors, made.out_vol
    run, tp = arrays.run, arrays.through_plane
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
            "lowres_shape": made.lowres_shape,
        },
        "output": {
            "path": targets.output.name,
            "format": out_fmt,
            "shape": list(out_vol.data.shape),
            "spacing": list(voxel_spacing(out_vol.affine)),
            "affine": out_vol.affine.round(6).tolist(),
            "dtype": str(out_dtype),
        },
        "checkpoint": {"path": str(arrays.checkpoint.path), "sha256": arrays.checkpoint.sha256},
        "checkpoint_through_plane": {"path": str(tp.path), "sha256": tp.sha256, "model": tp.arch} if tp else None,
        "model": arrays.checkpoint.arch,
        "output_from": compute.output_from(made.adapted),
        "note": compute.note(made.adapted, factors, opts.axis),
        "refined_axes": [a for a, f in enumerate(factors) if f > 1],
        "target_spacing": list(opts.target_spacing) if opts.target_spacing else None,
        "resampled": made.resampled,
        "slice_profile": list(made.profile) if made.profile else None,
        "request": batch.request(out_fmt),
        "mrisr_version": __version__,
        "scale": list(factors),
        "axis": opts.axis,
        "normalization": made.norm.to_dict(),
        "degradation": batch.degradation,
        "device": str(run.device),
        "amp": bool(run.amp and run.device.type == "cuda"),
        "ensemble": run.ensemble,
        "simulate": opts.simulate,
        "metrics": made.metrics,
        "consistency": made.consistency,
        "uncertainty": None,
        "adapt": made.adapted,
        "figure": None,
        "mosaic": None,
        "command": list(opts.command) if opts.command else None,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _bids_metadata(batch: Batch, study: Study, vol: Volume, out_vol: Volume) -> dict[str, Any]:
    """The BIDS half of a derivative's sidecar (:func:`mrisr.bids.derivative_metadata`)."""
    assert study.bids is not None
    root = study.path.parents[len(study.bids.parts) - 1]
    link = write_description(batch.opts.out_dir, root, str(batch.arrays.checkpoint.arch.get("name", "")))
    what = f"{_description(batch.factors, batch.opts.simulate)} of the source"
    grids = ((vol.affine, vol.shape3), (out_vol.affine, out_vol.shape3))
    return derivative_metadata(study.path, root, link, description=what, grids=grids)


def _uncertainty_record(batch: Batch, made: Computed) -> dict[str, Any] | None:
    """The sidecar's ``uncertainty``: ``None`` when no spread exists (one view, or no network ran)."""
    if made.spread is None:
        return None
    ensemble = batch.arrays.run.ensemble
    if ensemble == 1 or compute.output_from(made.adapted) == "bicubic":
        log.info("no ensemble spread: %s", "one view" if ensemble == 1 else "bicubic fallback")
        return None
    return uncertainty_summary(made.spread, made.figure_arrays["sr"], batch.factors, ensemble)  # type: ignore[arg-type]


def _db(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f} dB"


def _relative(path: Path, sidecar: Path) -> str:
    """``path`` relative to the sidecar's folder (how the sidecar names its files)."""
    return Path(os.path.relpath(path, sidecar.parent)).as_posix()


def _description(factors: tuple[int, int, int], simulate: bool) -> str:
    """The output header's ``descrip``: mrisr's version and the scale (NIfTI keeps 80 bytes)."""
    what = "SR of a simulated x" if simulate else "SR x"
    return f"mrisr {__version__} {what}{'x'.join(map(str, factors))}"
