"""``mrisr train``: train an SRCNN on a folder of studies (a thin layer over :mod:`mrisr.training`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from mrisr.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, app, fail
from mrisr.cli.console import MAX_SEED, MAX_THREADS, available_cpus, live, log_line, make_console


def _ints(text: str, name: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise fail(f"--{name} takes comma-separated integers, not {text!r}") from None


def _share(help_text: str) -> Any:
    """A ``--option`` that is a share of the training patches (a probability in [0, 1])."""
    return typer.Option(min=0.0, max=1.0, help=help_text)


@app.command()
def train(
    data: Annotated[list[Path], typer.Argument(help="Folders or files of NIfTI/DICOM training studies.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (checkpoints, metrics, curves).")],
    scale: Annotated[int, typer.Option(min=1, help="In-plane factor s (trains for s,s,1).")] = 4,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs of the cosine learning-rate schedule.")] = 10,
    steps_per_epoch: Annotated[int, typer.Option(min=1, help="Optimisation steps per epoch.")] = 200,
    max_steps: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many steps in all (the schedule still follows --epochs).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Patches per step (per process).")] = 16,
    patch_size: Annotated[int, typer.Option(min=2, help="High-resolution patch side in voxels.")] = 64,
    lr: Annotated[float, typer.Option(min=0.0, help="Peak learning rate (Adam, cosine decay).")] = 1e-3,
    val_fraction: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="Fraction of studies held out (without --val).")
    ] = 0.1,
    val: Annotated[
        list[Path] | None,
        typer.Option(
            "--val",
            help="Folder or file of validation studies (repeatable): they validate and never train, "
            "also inside DATA; --val-fraction is then unused.",
        ),
    ] = None,
    degradation: Annotated[
        str, typer.Option(help="bicubic | box | kspace | mixed (bicubic or box per patch).")
    ] = "bicubic",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Seed of the split, the weights and the patches.")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.pt.")] = False,
    init: Annotated[
        str | None,
        typer.Option(
            "--init",
            help="Start from this checkpoint's weights (same network and scale), or 'shipped' for the packaged "
            "file of this --arch, --scale and --through-plane: fine-tuning. The schedule starts afresh.",
        ),
    ] = None,
    workers: Annotated[int, typer.Option(min=0, help="Data-loader worker processes.")] = 0,
    arch: Annotated[
        str,
        typer.Option(
            help="srcnn (on the fine grid) | espcn (on the coarse grid, ~5x fewer operations) | axis-espcn "
            "(coarse grid, one axis: with --through-plane)."
        ),
    ] = "srcnn",
    kernel_sizes: Annotated[
        str | None,
        typer.Option(
            help="Kernel size of each layer (default: 9,1,5 for srcnn, 5,3,3 for espcn, 3,3,3,3,3 for axis-espcn)."
        ),
    ] = None,
    filters: Annotated[str, typer.Option(help="Filters of the hidden layers, e.g. 64,32.")] = "64,32",
    residual: Annotated[bool, typer.Option(help="Predict the residual over bicubic.")] = True,
    padding: Annotated[str, typer.Option(help="Convolution padding: replicate | reflect | zeros.")] = "replicate",
    loss: Annotated[str, typer.Option(help="mse | l1 | ssim")] = "mse",
    axes: Annotated[
        str | None, typer.Option(help="Slice axes, e.g. 2 or 0,1,2 (default: all three if near-isotropic).")
    ] = None,
    invert_prob: Annotated[float, _share("Share of patches with tissue contrast inverted in the head.")] = 0.5,
    random_contrast: Annotated[float, _share("Share of patches given a random tissue contrast in the head.")] = 0.0,
    tissue_contrast: Annotated[
        float, _share("Share of patches re-synthesised from the --tissue-map maps (one random value per tissue).")
    ] = 0.0,
    tissue_map: Annotated[
        list[Path] | None,
        typer.Option(help="Tissue probability map (NIfTI, 0-1) on the training studies' grid; repeat for each tissue."),
    ] = None,
    bias_field: Annotated[float, _share("Share of patches multiplied by a smooth random gain (coil bias).")] = 0.0,
    hr_blur: Annotated[float, _share("Share of patches smoothed (Gaussian, 0.3-1 voxel) before degradation.")] = 0.0,
    zoom_out: Annotated[float, _share("Share of patches cut 1-2x wider and shrunk (smaller anatomy per voxel).")] = 0.0,
    augment: Annotated[bool, typer.Option(help="Flips, rotations, gamma, intensity scaling, noise.")] = True,
    noise_std: Annotated[
        float, typer.Option(min=0.0, help="Largest std of the Gaussian noise added to a patch (normalised units).")
    ] = 0.02,
    noise_prob: Annotated[float, _share("Share of patches that get noise.")] = 0.3,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=MAX_THREADS,
            help="Torch CPU threads. Default: SLURM_CPUS_PER_TASK, else the CPUs this process may use.",
        ),
    ] = None,
    through_plane: Annotated[
        bool,
        typer.Option(
            "--through-plane",
            help="Train for thick slices (enhance --scale 1,1,s): one-axis degradation; srcnn or axis-espcn.",
        ),
    ] = False,
) -> None:
    """Train an SRCNN on degraded/original patch pairs; writes best.pt, last.pt, metrics.csv, curves.png."""
    import torch
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from mrisr.batch import StopFlag
    from mrisr.device import resolve_device
    from mrisr.errors import MrisrError
    from mrisr.models import AxisESPCNConfig, ESPCNConfig, SRCNNConfig

    torch.set_num_threads(threads or available_cpus())
    from mrisr.training import Callbacks, TrainConfig
    from mrisr.training import train as run_training

    try:
        model: SRCNNConfig | ESPCNConfig | AxisESPCNConfig
        if arch == "axis-espcn":
            if not through_plane:
                raise fail("--arch axis-espcn refines one axis: it needs --through-plane")
            model = AxisESPCNConfig(
                factors=(1, scale),
                kernel_sizes=_ints(kernel_sizes or "3,3,3,3,3", "kernel-sizes"),
                filters=_ints(filters, "filters"),
                residual=residual,
                padding_mode=padding,
            )
        elif arch == "espcn":
            model = ESPCNConfig(
                factors=(scale, scale),
                kernel_sizes=_ints(kernel_sizes or "5,3,3", "kernel-sizes"),
                filters=_ints(filters, "filters"),
                residual=residual,
                padding_mode=padding,
            )
        elif arch == "srcnn":
            model = SRCNNConfig(
                kernel_sizes=_ints(kernel_sizes or "9,1,5", "kernel-sizes"),
                filters=_ints(filters, "filters"),
                residual=residual,
                padding_mode=padding,
            )
        else:
            raise fail(f"--arch must be srcnn, espcn or axis-espcn, not {arch!r}")
        cfg = TrainConfig(
            scale=scale,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            max_steps=max_steps,
            batch_size=batch_size,
            patch_size=patch_size,
            lr=lr,
            val_fraction=val_fraction,
            degradation=degradation,
            device=device,
            seed=seed,
            workers=workers,
            model=model,
            loss=loss,
            axes=_ints(axes, "axes") if axes else None,
            invert_prob=invert_prob,
            random_contrast=random_contrast,
            tissue_contrast=tissue_contrast,
            bias_field=bias_field,
            hr_blur=hr_blur,
            zoom_out=zoom_out,
            augment=augment,
            noise_std=noise_std,
            noise_prob=noise_prob,
            through_plane=through_plane,
        )
    except ValueError as exc:
        raise fail(str(exc)) from None
    try:
        resolve_device(device)
    except ValueError as exc:
        raise fail(str(exc)) from None
    init_path: Path | None = None
    if init == "shipped":  # the packaged weights of this network (./shipped names a file of that name)
        from mrisr.checkpoint import WEIGHTS_DIR, shipped_checkpoint, shipped_name

        init_path = shipped_checkpoint(cfg.factors, arch=arch)
        if init_path is None:
            raise fail(f"--init shipped: mrisr ships no {shipped_name(cfg.factors, arch=arch)} (in {WEIGHTS_DIR})")
    elif init is not None:
        if not init.strip():
            raise fail("--init: empty; give a checkpoint file or 'shipped'")
        init_path = Path(init)
    if out.exists() and not out.is_dir():
        raise fail(f"--out {out}: cannot be used as the output folder (not a folder)")
    if resume and not (out / "last.pt").is_file():
        raise fail(f"--resume: {out / 'last.pt'} does not exist")
    if not resume and (out / "last.pt").exists():
        raise fail(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    from mrisr.training.run_state import blocking_run_files

    # A new run replaces none of the user's files (a best.pt of another run, a metrics.csv of theirs).
    blocking = [] if resume else blocking_run_files(out)
    if blocking:
        raise fail(f"{blocking[0]}: a new run would replace this file; choose another --out")
    main_rank = int(os.environ.get("RANK", 0)) == 0
    # One line per epoch, written here only (the library's own epoch log line is for --verbose).
    show_bar = main_rank and live()
    progress = Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("loss {task.fields[loss]:.5f}"),
        TextColumn("{task.fields[val]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not show_bar,
        console=make_console(stderr=True),
    )
    task = progress.add_task("train", total=None, loss=float("nan"), val="")
    total_steps = [0]

    def on_start(first: int, total: int) -> None:
        total_steps[0] = total
        progress.update(task, completed=first, total=total)
        if main_rank and not show_bar:
            log_line(f"train {'resumes at' if first else 'starts:'} step {first} of {total} in {out}")

    def on_epoch(row: dict[str, float]) -> None:
        if not main_rank:
            return
        val = ""
        if "val_psnr_sr" in row:
            val = f"val PSNR {row['val_psnr_sr']:.2f} dB (bicubic {row['val_psnr_bicubic']:.2f})"
            progress.update(task, val=val)
        line = f"epoch {row['epoch']:.2f} step {int(row['step'])}/{total_steps[0]} loss {row['loss']:.5f} {val}"
        if show_bar:
            progress.console.print(line.rstrip(), highlight=False)
        else:
            log_line(line.rstrip())

    stop = StopFlag("the current step")
    callbacks = Callbacks(
        on_start=on_start,
        on_step=lambda step, value: progress.update(task, completed=step, loss=value),
        on_epoch=on_epoch,
        should_stop=lambda: bool(stop),
    )
    from mrisr.fsutil import check_writable_folder, missing_folders, remove_if_empty

    created = missing_folders(out)  # removed again if the run writes nothing (no data: nothing to train)
    try:
        check_writable_folder(out)
    except OSError as exc:
        raise fail(f"--out {out}: cannot be used as the output folder ({exc.strerror or exc})") from None
    try:
        with stop, progress:
            try:
                with stop.abandonable():
                    result = run_training(
                        data,
                        out,
                        cfg,
                        resume=resume,
                        callbacks=callbacks,
                        tissue_maps=tissue_map or (),
                        val_data=val or (),
                        init=init_path,
                    )
            except KeyboardInterrupt:  # a second signal: the step in progress was abandoned
                if main_rank:
                    typer.echo(
                        f"interrupted by signal {stop.signum} (again: the step in progress was abandoned); "
                        f"--resume continues from the last saved state in {out / 'last.pt'}",
                        err=True,
                    )
                raise typer.Exit(EXIT_INTERRUPTED) from None
    except (MrisrError, FileNotFoundError, ValueError) as exc:
        remove_if_empty(created)
        raise fail(str(exc), EXIT_USAGE) from None
    if result.stopped:
        if main_rank:
            typer.echo(f"stopped by signal {stop.signum} after step {result.step}; --resume continues", err=True)
        raise typer.Exit(EXIT_INTERRUPTED)
    if main_rank:
        typer.echo(f"{result.step} steps in {result.seconds:.0f} s; best: {result.best}; last: {result.last}")
    raise typer.Exit(EXIT_OK)
