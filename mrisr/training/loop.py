"""The training loop: Adam with cosine decay, per-epoch whole-volume validation, checkpoints, resume, DDP.

Output folder::

    split.json    which studies train and which validate
    metrics.csv   one row per epoch: loss, validation PSNR/SSIM of SR and of clamped bicubic, seconds
    curves.png    loss and validation curves (redrawn at most every 2 minutes, and at the end)
    best.pt       weights with the best validation PSNR (no training state)
    last.pt       the latest weights plus ``train_state`` (optimiser, scheduler, epoch, step, RNG states,
                  the running loss sum and count of a stopped epoch)

Under ``torchrun`` the run is data-parallel (DDP, ``gloo`` on the CPU, ``nccl`` on CUDA); only rank 0
validates and writes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from mrisr.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from mrisr.degradation import evaluation_mode
from mrisr.device import resolve_device
from mrisr.fsutil import remove_temporaries
from mrisr.training.config import TrainConfig
from mrisr.training.data import Split, TrainingData, build_pieces, write_split
from mrisr.training.ddp import SkipSampler, dist_env, stop_requested
from mrisr.training.losses import loss_fn
from mrisr.training.patches import PatchDataset
from mrisr.training.plots import PLOT_EVERY_S, plot_curves
from mrisr.training.run_state import (
    RUN_FILES,
    RunState,
    check_init,
    check_resume,
    init_record,
    run_meta,
    write_csv,
)
from mrisr.training.studies import prepare_data
from mrisr.training.tissue import TissueMaps, load_tissue_maps
from mrisr.training.validation import val_factors, validate

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished (or stopped) run produced.

    Attributes:
        out_dir: The output folder.
        best: Path of ``best.pt``.
        last: Path of ``last.pt``.
        step: Optimisation steps done in all.
        epoch: Epochs completed.
        seconds: Training wall time in all (across resumes), s.
        history: The rows of ``metrics.csv``.
        stopped: True when ``Callbacks.should_stop`` ended the run early (``last.pt`` then holds the
            state after the last step done; ``--resume`` continues exactly).
    """

    out_dir: Path
    best: Path
    last: Path
    step: int
    epoch: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    stopped: bool = False


@dataclass(frozen=True)
class Callbacks:
    """Progress hooks (the CLI draws a progress bar with them; the library never prints).

    Attributes:
        on_start: Called once with ``(first_step, total_steps)``.
        on_step: Called after every step with ``(step, loss)``.
        on_epoch: Called with each row written to ``metrics.csv``.
        should_stop: Polled after every step (a SIGTERM flag): when true, the run saves ``last.pt``
            after the step and returns, without validating or writing a row, so that a resumed run
            ends exactly as an uninterrupted one (``best.pt`` and ``metrics.csv`` included).
    """

    on_start: Callable[[int, int], None] | None = None
    on_step: Callable[[int, float], None] | None = None
    on_epoch: Callable[[dict[str, float]], None] | None = None
    should_stop: Callable[[], bool] | None = None


def _start_processes(device: torch.device, world: int, local_rank: int) -> torch.device:
    """This process's device; under ``torchrun`` the process group is started (``nccl`` on CUDA)."""
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def _tissue_for(paths: Sequence[str | Path], cfg: TrainConfig, loaded: TrainingData, split: Split) -> TissueMaps | None:
    """The run's tissue maps, read and checked against its training studies (``None`` without).

    Raises:
        ValueError: Maps without ``tissue_contrast`` or the reverse, or maps on no training study's grid.
        MrisrError: A map cannot be read.
    """
    if not paths:
        if cfg.tissue_contrast > 0:
            raise ValueError("tissue contrast needs tissue probability maps (--tissue-map)")
        return None
    if cfg.tissue_contrast == 0:
        raise ValueError("tissue maps given without a tissue contrast share (--tissue-contrast): they would go unused")
    tissue = load_tissue_maps(paths)
    matched = [sid for sid in split.train if tissue.matches(loaded.studies[sid])]
    if not matched:
        shape = tuple(tissue.maps.shape[1:])
        raise ValueError(f"{Path(paths[0])}: the tissue maps (shape {shape}) lie on the grid of no training study")
    for sid in split.train:
        if sid not in matched:
            log.warning("%s: not on the tissue maps' grid; it trains without tissue contrast", sid)
    return tissue


def _resumable(
    out: Path,
    cfg: TrainConfig,
    loaded: TrainingData,
    split: Split,
    tissue: TissueMaps | None,
    init: Checkpoint | None,
) -> Checkpoint:
    """``out/last.pt``, checked to continue this run (before anything is written: a refused resume
    leaves the run as it was).

    Raises:
        FileNotFoundError: No ``last.pt``, or one without training state.
        ValueError: Other settings or studies than the run's (:func:`check_resume`).
    """
    ck = load_checkpoint(out / "last.pt")
    if ck.train_state is None:
        raise FileNotFoundError(f"{out / 'last.pt'} holds no training state to resume from")
    check_resume(
        ck.meta,
        cfg,
        loaded.records(split.train),
        val_data=loaded.records(split.val),
        path=out / "last.pt",
        tissue_maps=tissue.records if tissue is not None else (),
        init=init_record(init) if init is not None else None,
    )
    return ck


def _train_epoch(
    run: RunState,
    net: nn.Module,
    loader: DataLoader,
    *,
    device: torch.device,
    max_steps: int,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    on_step: Callable[[int, float], None] | None,
    should_stop: Callable[[], bool] | None,
    distributed: bool,
) -> tuple[int, bool]:
    """The steps of one epoch from ``run.skip`` on; returns ``(batch_in_epoch, stop requested)``."""
    batch_in_epoch = run.skip
    for batch in loader:
        x = batch["input"].to(device, non_blocking=True)
        y = batch["target"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=run.use_amp):
            pred = net(x)
        value = loss(pred.float(), y)
        run.opt.zero_grad(set_to_none=True)
        run.scaler.scale(value).backward()
        run.scaler.step(run.opt)
        run.scaler.update()
        run.sched.step()
        run.step += 1
        batch_in_epoch += 1
        lv = float(value.detach())
        run.loss_sum, run.loss_n = run.loss_sum + lv, run.loss_n + 1
        if on_step:
            on_step(run.step, lv)
        if run.step >= max_steps:
            break
        if stop_requested(should_stop, distributed, device):
            return batch_in_epoch, True
    return batch_in_epoch, False


def train(
    data: Sequence[str | Path],
    out_dir: str | Path,
    cfg: TrainConfig,
    *,
    resume: bool = False,
    callbacks: Callbacks | None = None,
    tissue_maps: Sequence[str | Path] = (),
    val_data: Sequence[str | Path] = (),
    init: str | Path | None = None,
) -> TrainResult:
    """Train an SRCNN on the studies found under ``data`` and write the run into ``out_dir``.

    Args:
        data: Files and folders of NIfTI/DICOM studies (see :func:`mrisr.discovery.find_studies`).
        out_dir: Output folder (created).
        cfg: The run's configuration.
        resume: Continue from ``out_dir/last.pt`` (same configuration): weights, optimiser, scheduler,
            step and RNG states are restored; the result equals an uninterrupted run.
        callbacks: Progress hooks.
        tissue_maps: Tissue probability maps (NIfTI) for ``cfg.tissue_contrast``, used with the
            training studies on their grid (:func:`mrisr.training.tissue.load_tissue_maps`).
        val_data: Files and folders of the validation studies; they never train, also where ``data``
            holds them. Without, ``cfg.val_fraction`` of the studies validate.
        init: A checkpoint of the same architecture to start from instead of random weights (a warm
            start, e.g. fine-tuning a shipped network on one's own studies); the optimiser and
            learning-rate schedule start afresh. Recorded in the checkpoints' ``meta["init"]``; a
            resume must name the same file.

    Returns:
        The run's summary.

    Raises:
        FileNotFoundError: If ``data`` does not exist, holds no study, or ``resume`` finds no ``last.pt``.
        CheckpointError: ``init`` is missing, unreadable or no checkpoint.
        ValueError: ``init`` holds another architecture than ``cfg.model``.
    """
    cb = callbacks or Callbacks()
    init_ck = None
    if init is not None:  # before anything is read or written: a wrong --init costs nothing
        init_ck = load_checkpoint(init)
        check_init(init_ck, cfg)
    out = Path(out_dir)
    rank, world, local_rank = dist_env()
    distributed = world > 1
    device = _start_processes(resolve_device(cfg.device), world, local_rank)
    main = rank == 0
    # The data first: a folder without studies leaves no --out behind.
    loaded, split = prepare_data(data, out, cfg, main=main, not_studies=tissue_maps, val_data=val_data)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:  # what a killed run was writing (SIGKILL: its atomic write never cleaned up)
            for tmp in remove_temporaries(out / name, all_of_them=False):
                log.info("removed %s, left by a killed run", tmp)
    tissue = _tissue_for(tissue_maps, cfg, loaded, split)
    ck = _resumable(out, cfg, loaded, split, tissue, init_ck) if resume else None
    if main:
        write_split(out / "split.json", split, cfg.seed)
    pieces, val_volumes = build_pieces(loaded, split, cfg, tissue)
    val_mode = evaluation_mode(cfg.degradation)
    run = RunState.start(cfg, device, init_ck)  # a resume then restores its own weights over init's
    if ck is not None:
        run.restore(ck, out / "metrics.csv")
    elif init_ck is not None:
        log.info("weights start from %s (--init)", init_ck.path)
    net: nn.Module = run.model
    if distributed:
        net = nn.parallel.DistributedDataParallel(run.model, device_ids=[local_rank] if device.type == "cuda" else None)

    per_epoch = cfg.steps_per_epoch * cfg.batch_size * world
    dataset = PatchDataset(pieces, cfg, per_epoch)
    loss = loss_fn(cfg.loss)
    max_steps = cfg.total_steps if cfg.max_steps is None else min(cfg.total_steps, cfg.max_steps)
    arch = cfg.model.to_dict()
    device_name = device.type if not distributed else f"{device.type} x{world}"
    val_names = [v[0] for v in val_volumes]
    if main and cb.on_start:
        cb.on_start(run.step, max_steps)

    def save(path: Path, train_state: dict[str, Any] | None = None) -> None:
        meta = run_meta(
            run,
            loaded,
            split,
            val_names=val_names,
            device=device_name,
            tissue_maps=tissue.records if tissue is not None else (),
        )
        save_checkpoint(path, run.model, arch, meta, train_state=train_state)

    net.train()
    t0 = last_plot = time.perf_counter()
    stopping = False
    while run.step < max_steps and run.epoch < cfg.epochs:
        dataset.epoch = run.epoch
        loader = DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            sampler=SkipSampler(per_epoch, rank, world, run.skip * cfg.batch_size),
            num_workers=cfg.workers,
            pin_memory=device.type == "cuda",
            drop_last=True,
        )
        batch_in_epoch, stopping = _train_epoch(
            run,
            net,
            loader,
            device=device,
            max_steps=max_steps,
            loss=loss,
            on_step=cb.on_step if main else None,
            should_stop=cb.should_stop,
            distributed=distributed,
        )
        run.skip = 0
        if stopping and batch_in_epoch < cfg.steps_per_epoch:
            # Mid-epoch: the state after this step only; the epoch's validation and row come when a
            # resumed run finishes the epoch, as they would have without the stop.
            run.seconds += time.perf_counter() - t0
            if main:
                save(out / "last.pt", run.train_state(batch_in_epoch, (run.loss_sum, run.loss_n)))
                log.warning(
                    "stopped at step %d (epoch %d, batch %d); --resume continues", run.step, run.epoch, batch_in_epoch
                )
            break
        if batch_in_epoch >= cfg.steps_per_epoch:
            run.epoch, batch_in_epoch = run.epoch + 1, 0
        seconds_now = run.seconds + time.perf_counter() - t0
        if main:
            row: dict[str, float] = {
                "epoch": run.epoch + batch_in_epoch / cfg.steps_per_epoch,
                "step": float(run.step),
                "loss": run.loss_sum / max(1, run.loss_n),
                "lr": float(run.sched.get_last_lr()[0]),
            }
            if val_volumes:
                row.update(
                    validate(run.model, val_volumes, val_factors(cfg), val_mode, axis=cfg.val_axis, device=device)
                )
            row["seconds"] = round(seconds_now, 1)
            run.history.append(row)
            improved = not val_volumes or row["val_psnr_sr"] > run.best_psnr
            if improved:
                run.best_psnr = row.get("val_psnr_sr", run.best_psnr)
                run.best_metrics = {k: float(v) for k, v in row.items() if k.startswith("val_")} | {
                    "step": float(run.step)
                }
            run.seconds = seconds_now
            t0 = time.perf_counter()
            if improved:
                save(out / "best.pt")
            train_state = run.train_state(batch_in_epoch)
            # The row first: a kill between the two leaves a row past last.pt's step, which a resume
            # drops and writes again (the other order could lose the row for good).
            write_csv(out / "metrics.csv", run.history)
            save(out / "last.pt", train_state)
            finished = run.step >= max_steps or run.epoch >= cfg.epochs
            # Drawing costs seconds on a busy CPU: redraw at most every PLOT_EVERY_S, and at the end.
            if finished or time.perf_counter() - last_plot >= PLOT_EVERY_S:
                plot_curves(run.history, out / "curves.png")
                last_plot = time.perf_counter()
            log.info(
                "epoch %.2f step %d loss %.5f %s",
                row["epoch"],
                run.step,
                row["loss"],
                " ".join(f"{k} {v:.4f}" for k, v in row.items() if k.startswith("val_")),
            )
            if cb.on_epoch:
                cb.on_epoch(row)
        run.loss_sum, run.loss_n = 0.0, 0
        if distributed:
            torch.distributed.barrier()
        if stopping:
            break
    if distributed:
        torch.distributed.destroy_process_group()
    return TrainResult(out, out / "best.pt", out / "last.pt", run.step, run.epoch, run.seconds, run.history, stopping)
