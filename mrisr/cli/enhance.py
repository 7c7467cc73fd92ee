"""``mrisr enhance``: super-resolve studies (a thin layer over :mod:`mrisr.enhance`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from mrisr.batch import StopFlag
    from mrisr.discovery import Study
    from mrisr.enhance import EnhanceOptions, Enhancer, StudyResult

from mrisr.cli import EXIT_INTERRUPTED, EXIT_LOCKED, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, app, fail, state
from mrisr.cli.console import MAX_SEED, MAX_THREADS, QUIET, available_cpus, echo, live, log_line, make_console, output
from mrisr.defaults import DEFAULT_ARCH, DEFAULT_DEVICE, DEFAULT_ENSEMBLE


@app.command()
def enhance(
    inputs: Annotated[list[Path], typer.Argument(help="NIfTI, MetaImage, NRRD or DICOM files, or folders of studies.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    scale: Annotated[
        str | None,
        typer.Option(
            help="'4' refines the plane of the --axis slices ×4; '4,4,1' per axis. Default: the checkpoint's."
        ),
    ] = None,
    target_spacing: Annotated[
        str | None,
        typer.Option(
            "--target-spacing",
            help="Voxel size to end on, in mm: one value or three (axes i,j,k). Factors come from each "
            "study's header; a ratio that is not an integer (2.2 -> 1.0 mm) is super-resolved at the next "
            "integer factor, then resampled onto the target grid. Instead of --scale.",
            show_default=False,
        ),
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Checkpoint (.pt). Default: the weights shipped for the scale.")
    ] = None,
    arch: Annotated[
        str,
        typer.Option(help="Shipped network when no --checkpoint: espcn (default: faster, better held out) | srcnn."),
    ] = DEFAULT_ARCH,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = DEFAULT_DEVICE,
    axis: Annotated[int, typer.Option(min=0, max=2, help="Slicing axis of the voxel array.")] = 2,
    fmt: Annotated[str, typer.Option("--format", help="Output format: same | nifti | dicom.")] = "same",
    dtype: Annotated[
        str | None, typer.Option(help="On-disk type, e.g. float32. Default: the input's (8-bit: int16).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Slices per batch (default: by memory).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs.")] = False,
    simulate: Annotated[
        bool,
        typer.Option(help="Inputs are references: degrade by --scale, super-resolve, measure PSNR/SSIM."),
    ] = False,
    degradation: Annotated[
        str | None,
        typer.Option(help="Degradation for --simulate: bicubic | box | kspace (default: checkpoint's)."),
    ] = None,
    save_intermediates: Annotated[
        bool, typer.Option(help="With --simulate, also write LR and bicubic volumes.")
    ] = False,
    figure: Annotated[bool, typer.Option(help="Write <id>_compare.png and <id>_mosaic.png.")] = True,
    save_uncertainty: Annotated[
        bool, typer.Option(help="Write <id>_uncertainty.nii.gz: the spread (std) of the ensemble views per voxel.")
    ] = False,
    save_residual: Annotated[
        bool, typer.Option(help="Write <id>_residual.nii.gz: SR degraded onto the input grid minus the input.")
    ] = False,
    amp: Annotated[bool, typer.Option(help="float16 mixed precision on the GPU (faster; ~1e-3 error).")] = False,
    ensemble: Annotated[
        int,
        typer.Option(help="Views averaged per slice: 1 (the network alone), 2, 4 (flips) or 8 (flips and transposes)."),
    ] = DEFAULT_ENSEMBLE,
    adapt: Annotated[
        bool | None,
        typer.Option(
            "--adapt/--no-adapt",
            help="Fine-tune a copy of the network on each study first (self-supervised). Default: only when "
            "one axis alone is refined (thick slices); --no-adapt never.",
            show_default=False,
        ),
    ] = None,
    adapt_steps: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Steps of the adaptation. Default: 1000 for the in-plane ESPCN, 300 for an SRCNN.",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(min=0, max=MAX_SEED, help="Seed of the adaptation (deterministic on the CPU).")
    ] = 0,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Process only the study with this id (repeatable).")
    ] = None,
    lock_wait: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Seconds to wait at the end for studies another process holds locked (racing workers); "
            "still locked then: not done, exit 4.",
        ),
    ] = 0.0,
    shard: Annotated[
        str | None,
        typer.Option(help="Process shard I/N (0-based) only. Default: SLURM_ARRAY_TASK_ID/_COUNT when set."),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=MAX_THREADS,
            help="CPU threads of the network. Default: SLURM_CPUS_PER_TASK, else the CPUs this process may use.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Super-resolve studies onto a finer grid, in the same place and the same units.

    Without a terminal (a log file), one timestamped line is written per study as it starts and ends.
    """
    import dataclasses

    import torch

    from mrisr.adapt import AdaptConfig
    from mrisr.batch import StopFlag, resolve_shard, select_studies
    from mrisr.degradation import MIXED
    from mrisr.device import resolve_device
    from mrisr.discovery import find_studies
    from mrisr.enhance import EnhanceOptions, Enhancer, parse_factors, resolve_checkpoint, resolve_through_plane
    from mrisr.enhance.spacing import plan_target_spacing
    from mrisr.errors import MrisrError
    from mrisr.geometry import in_plane
    from mrisr.inference import RunOptions

    if target_spacing is not None and scale is not None:
        raise fail("give --scale or --target-spacing, not both")
    if target_spacing is not None and simulate:  # before any header is read (the groups need headers)
        raise fail("--simulate degrades by --scale; it does not take --target-spacing")
    adapt_config = AdaptConfig(steps=adapt_steps, seed=seed, degradation=degradation or MIXED)
    try:
        target = parse_spacing(target_spacing) if target_spacing is not None else None
        factors = parse_factors(scale, axis)
        # Every option is checked here, before any study is looked at (EnhanceOptions.__post_init__);
        # the scale of --target-spacing comes from each study's header (one group of studies per scale).
        base = EnhanceOptions(
            out_dir=out,
            scale=factors,
            axis=axis,
            fmt=fmt,  # type: ignore[arg-type]
            dtype=dtype,
            overwrite=overwrite,
            simulate=simulate,
            degradation=degradation,
            save_intermediates=save_intermediates,
            figure=figure,
            adapt=adapt_config if adapt else None,
            auto_adapt=adapt_config if adapt is None else None,
            lock_wait=lock_wait,
            save_uncertainty=save_uncertainty,
            save_residual=save_residual,
            command=("mrisr", *state.argv) if state.argv is not None else None,
        )
        dev = resolve_device(device)
        shard_sel = resolve_shard(shard, only=only)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if arch not in ("srcnn", "espcn"):
        raise fail(f"--arch must be srcnn or espcn, not {arch!r}")
    try:
        if target is None:  # the networks are known before any study is looked at
            ckpt = resolve_checkpoint(checkpoint, factors, arch=arch, axis=axis)
        studies = find_studies(inputs, outputs=[out])  # mrisr's outputs there are never studies
    except (MrisrError, FileNotFoundError) as exc:
        raise fail(str(exc)) from None
    if not studies:
        raise fail(f"no NIfTI or DICOM studies found in {', '.join(map(str, inputs))}")
    from mrisr.bids import check_derivative_folder

    try:
        check_derivative_folder(out, [(s.path, s.bids) for s in studies if s.bids is not None])
    except ValueError as exc:
        raise fail(str(exc)) from None
    try:
        studies = select_studies(studies, only=only, shard=shard_sel)
    except ValueError as exc:
        raise fail(f"{exc} in {', '.join(map(str, inputs))}") from None
    try:
        run = RunOptions(device=dev, batch_size=batch_size, amp=amp, ensemble=ensemble)
    except ValueError as exc:
        raise fail(str(exc)) from None
    torch.set_num_threads(threads or available_cpus())
    # One enhancer per set of factors, worked out here once: from --scale or the checkpoint, or with
    # --target-spacing from each study's header.
    jobs: list[tuple[Enhancer, EnhanceOptions, list[Study]]] = []
    try:
        if target is None:
            job = Enhancer(ckpt, run, through_plane=resolve_through_plane(factors, axis))
            job_opts = dataclasses.replace(base, scale=factors or job.arrays.default_factors(axis))
            jobs.append((job, job_opts, studies))
        else:
            try:
                groups, unreadable = plan_target_spacing(studies, target)
            except ValueError as exc:
                raise fail(f"--target-spacing {target_spacing}: {exc}") from None
            if unreadable:  # they fail alone, with their reason, when they are loaded
                groups = groups or [(in_plane(4, axis), [])]
                groups[0][1].extend(s for s, _ in unreadable)
            for group, members in groups:
                net = resolve_checkpoint(checkpoint, group, arch=arch, axis=axis)
                job = Enhancer(net, run, through_plane=resolve_through_plane(group, axis))
                jobs.append((job, dataclasses.replace(base, scale=group, target_spacing=target), members))
        for job, job_opts, _ in jobs:
            assert job_opts.scale is not None
            job.arrays.check_factors(job_opts.scale, axis)
    except (ValueError, MrisrError) as exc:
        raise fail(str(exc)) from None
    from mrisr.fsutil import check_writable_folder

    try:
        check_writable_folder(out)
    except OSError as exc:
        raise fail(f"--out {out}: cannot be used as the output folder ({exc.strerror or exc})") from None
    from mrisr import faults

    with StopFlag() as stop:
        results: list[StudyResult] = []
        try:
            with stop.abandonable():
                for job, job_opts, members in jobs:
                    if stop:
                        break
                    with job:
                        _run_with_progress(job, members, job_opts, stop, results)
        except KeyboardInterrupt:  # a second signal: the current study was abandoned
            pass
        except MrisrError as exc:  # the output folder itself failed (lock files cannot be created)
            raise fail(str(exc)) from None
        faults.point("enhance.after-batch")
        failed = [r for r in results if r.status == "failed"]
        locked = [r for r in results if r.status == "locked"]  # not done by this run, no sidecar
        for r in failed + locked:
            echo(f"error: {r.study.id}: {r.error}")
        for r in results:
            if r.note and live():  # without a terminal the study's log line carries it
                echo(f"note: {r.study.id}: {r.note}")
        if output.verbosity > QUIET:
            _summary(results)
        if stop:
            how = " (again: the study in progress was abandoned)" if stop.abandoned else ""
            typer.echo(
                f"interrupted by signal {stop.signum}{how}: {len(results)} of {len(studies)} studies handled", err=True
            )
            raise typer.Exit(EXIT_INTERRUPTED)
    # Locked studies are not done (a rerun does them); failed ones are, with their failure recorded.
    raise typer.Exit(EXIT_LOCKED if locked else EXIT_SOME_FAILED if failed else EXIT_OK)


def _run_with_progress(
    enhancer: Enhancer, studies: list[Study], opts: EnhanceOptions, stop: StopFlag, results: list[StudyResult]
) -> None:
    """Run the batch with a live display at a terminal, else with one line per study start and end;
    each study's result is appended to ``results`` when it is known (so that they survive an
    abandoned study)."""
    if not live():
        n = len(studies)

        def log_done(res: StudyResult) -> None:
            results.append(res)
            log_line(study_line(res))

        enhancer.enhance(
            studies,
            opts,
            on_start=lambda study, k: log_line(f"start {study.id} ({k + 1}/{n}) {study.location}"),
            on_done=log_done,
            should_stop=lambda: bool(stop),
        )
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
        console=make_console(stderr=True),
    ) as bar:
        t_studies = bar.add_task("studies", total=len(studies))
        t_slices = bar.add_task("slices", total=None)

        def on_start(study: Study, _: int) -> None:
            bar.update(t_slices, description=f"{study.id}", completed=0, total=None)

        def on_done(res: StudyResult) -> None:
            results.append(res)
            bar.advance(t_studies)

        enhancer.enhance(
            studies,
            opts,
            on_start=on_start,
            on_slices=lambda n: bar.advance(t_slices, n),
            on_done=on_done,
            should_stop=lambda: bool(stop),
        )


def study_line(res: StudyResult) -> str:
    """The log line of a finished study: status, id, seconds, what made the output, the gain if measured.

    For example ``done sub-01_T1w 12.3 s by network PSNR +2.13 dB over bicubic``, or
    ``failed bad 0.1 s: data/bad.nii.gz: 1 NaN/Inf voxels of 432``.
    """
    head = f"{res.status} {res.study.id} {res.seconds:.1f} s"
    if res.status == "failed":
        return f"{head}: {res.error}"
    if res.status != "done":
        return f"{head}: {res.error}" if res.error else head
    parts = [head, f"by {res.output_from}" if res.output_from else ""]
    if res.note:  # bicubic used, or an adaptation rejected, and why
        parts.append(f"({res.note})")
    elif res.fallback:
        parts.append(f"(adaptation rejected: fell back to {res.fallback})")
    m = res.metrics or {}
    if "psnr_sr" in m and "psnr_bicubic" in m:
        parts.append(f"PSNR {m['psnr_sr'] - m['psnr_bicubic']:+.2f} dB over bicubic ({m['psnr_sr']:.2f} dB)")
    return " ".join(p for p in parts if p)


def _summary(results: list[StudyResult]) -> None:
    from rich.table import Table

    table = Table(title="mrisr enhance")
    for col in ("study", "status", "seconds", "PSNR bicubic", "PSNR SR", "output / reason"):
        table.add_column(col, overflow="fold")  # long ids and reasons wrap; nothing is cut off
    for r in results:
        m = r.metrics or {}
        table.add_row(
            r.study.id,
            r.status,
            f"{r.seconds:.1f}",
            f"{m['psnr_bicubic']:.2f}" if "psnr_bicubic" in m else "",
            f"{m['psnr_sr']:.2f}" if "psnr_sr" in m else "",
            (str(r.output.name if r.output else "") + (f" ({r.note})" if r.note else ""))
            if r.status not in ("failed", "locked")
            else str(r.error),
        )
    make_console(stderr=True).print(table)


def parse_spacing(text: str) -> tuple[float, float, float]:
    """``"1"`` or ``"1,1,2.5"`` (mm) as three positive finite floats.

    Raises:
        ValueError: Not one or three numbers, or one that is not positive and finite.
    """
    import math

    try:
        vals = [float(p) for p in text.replace("x", ",").split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"--target-spacing takes one or three numbers in mm, got {text!r}") from None
    if len(vals) not in (1, 3) or not all(math.isfinite(v) and v > 0 for v in vals):
        raise ValueError(f"--target-spacing takes one or three positive numbers in mm, got {text!r}")
    return (vals[0], vals[0], vals[0]) if len(vals) == 1 else (vals[0], vals[1], vals[2])


__all__ = ["EXIT_USAGE", "enhance", "parse_spacing"]
