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

import csv
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler
from torch.utils.data.distributed import DistributedSampler

from mrisr.checkpoint import load_checkpoint, save_checkpoint
from mrisr.degradation import crop_array_to_multiple, degrade_volume, evaluation_mode, upsample_volume
from mrisr.device import resolve_device
from mrisr.discovery import Study, find_studies
from mrisr.fsutil import atomic_path
from mrisr.inference import super_resolve_array
from mrisr.metrics import psnr, ssim
from mrisr.models import build_model
from mrisr.training.config import TrainConfig
from mrisr.training.data import (
    SLAB_GAP,
    PatchDataset,
    build_pieces,
    load_studies,
    slab_for,
    split_studies,
    write_split,
)
from mrisr.transforms import normalization_method

log = logging.getLogger(__name__)

PLOT_EVERY_S = 120.0

CSV_FIELDS = (
    "epoch",
    "step",
    "loss",
    "val_psnr_sr",
    "val_psnr_bicubic",
    "val_ssim_sr",
    "val_ssim_bicubic",
    "lr",
    "seconds",
)


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


def _gaussian_kernel(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size, dtype=torch.float32) - (size - 1) / 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_loss(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """``1 - SSIM`` of batches ``(N, 1, H, W)`` (11×11 Gaussian window, σ 1.5, valid convolution)."""
    w = _gaussian_kernel().to(x.device, x.dtype)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = F.conv2d(x, w), F.conv2d(y, w)
    vx = F.conv2d(x * x, w) - mx * mx
    vy = F.conv2d(y * y, w) - my * my
    cxy = F.conv2d(x * y, w) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return 1.0 - s.mean()


def _loss_fn(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if name == "l1":
        return F.l1_loss
    if name == "ssim":
        return ssim_loss
    return F.mse_loss


def _val_factors(cfg: TrainConfig) -> tuple[int, int, int]:
    """Validation factors: the trained ones, with a through-plane factor put on axis 1.

    Validation volumes may be a thin slab of axis-2 slices (one study), so the one-axis degradation
    goes along axis 1, which is as long as the study.
    """
    return (1, cfg.scale, 1) if cfg.through_plane else cfg.factors


def validate(
    model: nn.Module,
    volumes: Sequence[tuple[str, np.ndarray]],
    scale: int | tuple[int, int, int],
    mode: str,
    *,
    axis: int = 2,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Mean PSNR/SSIM of SR and of clamped bicubic over whole normalised validation volumes.

    ``scale`` is ``s`` (in-plane, ``(s, s, 1)``) or per-axis factors. Each volume is cropped to a
    multiple of the factors, degraded by ``mode`` (:func:`mrisr.degradation.degrade_volume`), and
    super-resolved with :func:`mrisr.inference.super_resolve_array` (bicubic, then the network, slice
    by slice across ``axis``). The bicubic baseline is clamped to the low-resolution value range.
    Metrics use the high-resolution volume's range as peak (:mod:`mrisr.metrics`).
    """
    factors = (scale, scale, 1) if isinstance(scale, int) else tuple(int(f) for f in scale)
    rows: list[tuple[float, float, float, float]] = []
    was_training = model.training
    for _, hr in volumes:
        hr = crop_array_to_multiple(hr, factors)
        lr = degrade_volume(hr, factors, mode)
        bic = np.clip(upsample_volume(lr, hr.shape), float(lr.min()), float(lr.max()))
        sr = super_resolve_array(model, lr, factors, axis=axis, device=device)  # type: ignore[arg-type]
        rng = float(hr.max() - hr.min()) or 1.0
        rows.append(
            (
                psnr(sr, hr, data_range=rng),
                psnr(bic, hr, data_range=rng),
                ssim(sr, hr, data_range=rng),
                ssim(bic, hr, data_range=rng),
            )
        )
    model.train(was_training)
    m = np.mean(np.asarray(rows, dtype=np.float64), axis=0)
    return {
        "val_psnr_sr": float(m[0]),
        "val_psnr_bicubic": float(m[1]),
        "val_ssim_sr": float(m[2]),
        "val_ssim_bicubic": float(m[3]),
    }


class _SkipSampler(Sampler[int]):
    """This process's indices of an epoch (a ``DistributedSampler`` without shuffling), minus the first ``skip``."""

    def __init__(self, n: int, rank: int, world: int, skip: int) -> None:
        self.inner: DistributedSampler[int] = DistributedSampler(
            cast(Any, range(n)), num_replicas=world, rank=rank, shuffle=False, drop_last=True
        )
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.inner)[self.skip :])

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)


def _rng_state() -> dict[str, Any]:
    version, state, gauss = random.getstate()
    np_state = cast(tuple[Any, ...], np.random.get_state())
    return {
        "python": {"version": version, "state": list(state), "gauss": gauss},
        "numpy": {
            "key": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }


def _set_rng_state(s: dict[str, Any]) -> None:
    py = s["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    n = s["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(s["torch"])


def _stop_requested(cb: Callbacks, distributed: bool, device: torch.device) -> bool:
    """``cb.should_stop()``, agreed by all processes of a distributed run (any one stops them all)."""
    if cb.should_stop is None:  # the same on every process
        return False
    flag = bool(cb.should_stop())
    if distributed:
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        flag = bool(t.item() > 0)
    return flag


def _dist_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the ``torchrun`` environment (``(0, 1, 0)`` without it)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _write_csv(path: Path, rows: Sequence[dict[str, float]]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(CSV_FIELDS))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.6g}" if isinstance(r.get(k), float) else r.get(k, "")) for k in CSV_FIELDS})


def _read_csv(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]


def plot_curves(rows: Sequence[dict[str, float]], path: Path) -> None:
    """Loss and validation PSNR/SSIM (SR against bicubic) per epoch, as a PNG (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in rows]
    fig, axs = plt.subplots(1, 3, figsize=(13, 3.6))
    axs[0].plot(ep, [r["loss"] for r in rows], "o-")
    axs[0].set(title="training loss", xlabel="epoch")
    for ax, key, unit in ((axs[1], "psnr", "dB"), (axs[2], "ssim", "")):
        if all(f"val_{key}_sr" in r for r in rows):
            ax.plot(ep, [r[f"val_{key}_sr"] for r in rows], "o-", label="SR")
            ax.plot(ep, [r[f"val_{key}_bicubic"] for r in rows], "s--", label="bicubic (clamped)")
            ax.legend()
        ax.set(title=f"validation {key.upper()} {unit}".strip(), xlabel="epoch")
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.14, top=0.9, wspace=0.28)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def _training_data(
    loaded: dict[str, dict[str, Any]], studies: Sequence[Study], ids: Sequence[str]
) -> list[dict[str, str]]:
    by_id = {s.id: s for s in studies}
    return [{"id": i, "file": by_id[i].path.name, "sha256": loaded[i]["sha256"]} for i in ids]


#: Settings a resumed run may change: they do not change the weights computed (``max_steps`` ending
#: in the middle of an epoch adds a validation there, which may change which weights best.pt holds).
RESUMABLE_CHANGES = frozenset({"max_steps", "workers", "device"})


def _check_resume(
    meta: dict[str, Any],
    cfg: TrainConfig,
    data: list[dict[str, str]],
    val_data: list[dict[str, str]],
    path: Path,
) -> None:
    """Refuse to resume a run with other settings, training or validation data than it was started
    with (an uninterrupted run would not have given the result; the optimiser and schedule could not
    follow, and best.pt would compare validation figures of two different sets).

    Raises:
        ValueError: Naming the settings that differ, or the studies that changed.
    """
    old = json.loads(json.dumps(meta.get("train_config") or {}))
    new = json.loads(json.dumps(cfg.to_dict()))
    changed = sorted(k for k in old.keys() | new.keys() if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k))
    if changed:
        diffs = ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise ValueError(f"--resume: {path} was trained with other settings ({diffs}); start a new run")
    was = {(d.get("id"), d.get("sha256")) for d in meta.get("training_data") or []}
    now = {(d["id"], d["sha256"]) for d in data}
    if was != now:
        ids = sorted({i for i, _ in was ^ now})
        raise ValueError(f"--resume: the training studies differ from the run's ({', '.join(map(str, ids))})")
    if "validation_sha256" in meta:  # recorded since session 4
        was_v = set((meta["validation_sha256"] or {}).items())
        now_v = {(d["id"], d["sha256"]) for d in val_data}
        if was_v != now_v:
            ids = sorted({i for i, _ in was_v ^ now_v})
            raise ValueError(f"--resume: the validation studies differ from the run's ({', '.join(map(str, ids))})")


def train(
    data: Sequence[str | Path],
    out_dir: str | Path,
    cfg: TrainConfig,
    *,
    resume: bool = False,
    callbacks: Callbacks | None = None,
) -> TrainResult:
    """Train an SRCNN on the studies found under ``data`` and write the run into ``out_dir``.

    Args:
        data: Files and folders of NIfTI/DICOM studies (see :func:`mrisr.discovery.find_studies`).
        out_dir: Output folder (created).
        cfg: The run's configuration.
        resume: Continue from ``out_dir/last.pt`` (same configuration): weights, optimiser, scheduler,
            step and RNG states are restored; the result equals an uninterrupted run.
        callbacks: Progress hooks.

    Returns:
        The run's summary.

    Raises:
        FileNotFoundError: If ``data`` does not exist, holds no study, or ``resume`` finds no ``last.pt``.
    """
    cb = callbacks or Callbacks()
    out = Path(out_dir)
    rank, world, local_rank = _dist_env()
    distributed = world > 1
    device = resolve_device(cfg.device)
    if distributed:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    main = rank == 0
    if main:
        out.mkdir(parents=True, exist_ok=True)

    studies = find_studies(list(data), exclude=[out])
    if not studies:
        raise FileNotFoundError(f"no NIfTI or DICOM study under {', '.join(map(str, data))}")
    loaded, errors = load_studies(studies, cfg.workers)
    factors = _val_factors(cfg)
    for s in studies:  # validation degrades whole volumes by the factors: each axis must hold a block
        shape = loaded[s.id]["frames"][0].shape if s.id in loaded else None
        if shape is not None and any(n < f for n, f in zip(shape, factors, strict=True)):
            errors.append(f"{s.path}: shape {tuple(shape)} is smaller than the scale {factors}")
            del loaded[s.id]
    for line in errors:
        log.error("skipping %s", line)
    studies = [s for s in studies if s.id in loaded]
    if not studies:
        raise FileNotFoundError(f"no usable study under {', '.join(map(str, data))} ({len(errors)} could not be read)")
    split = split_studies([s.id for s in studies], cfg.val_fraction, cfg.seed)
    if len(studies) == 1 and cfg.val_fraction > 0:
        depth = loaded[studies[0].id]["frames"][0].shape[2]
        slab = slab_for(depth, cfg.val_fraction)
        split = type(split)(split.train, split.val, slab)
        if slab is None:
            log.warning("ONLY ONE STUDY and it is too thin for a held-out slab: no validation")
        elif main:
            log.warning(
                "ONLY ONE STUDY: validating on a held-out slab of its axis-2 slices %d:%d (training skips "
                "%d slices either side); validation figures come from the training subject and are optimistic",
                slab[0],
                slab[1],
                SLAB_GAP,
            )
    ck = None
    if resume:  # checked before anything is written: a refused resume leaves the run as it was
        ck = load_checkpoint(out / "last.pt")
        if ck.train_state is None:
            raise FileNotFoundError(f"{out / 'last.pt'} holds no training state to resume from")
        _check_resume(
            ck.meta,
            cfg,
            _training_data(loaded, studies, split.train),
            _training_data(loaded, studies, split.val),
            out / "last.pt",
        )
    if main:
        write_split(out / "split.json", split, cfg.seed)
    pieces, val_volumes = build_pieces(loaded, split, cfg)
    val_mode = evaluation_mode(cfg.degradation)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model.to_dict()).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.total_steps, eta_min=cfg.lr * cfg.min_lr_ratio)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    step, epoch, skip, seconds, best_psnr = 0, 0, 0, 0.0, -math.inf
    # The loss summed over the steps of the epoch so far (a stop mid-epoch saves it: the resumed
    # epoch's row then averages every step of the epoch, as the uninterrupted run's does).
    loss_sum, loss_n = 0.0, 0
    best_metrics: dict[str, float] = {}
    history: list[dict[str, float]] = []
    if ck is not None and ck.train_state is not None:
        model.load_state_dict(ck.state_dict)
        ts = ck.train_state
        opt.load_state_dict(ts["optimizer"])
        sched.load_state_dict(ts["scheduler"])
        if use_amp and ts.get("scaler"):
            scaler.load_state_dict(ts["scaler"])
        step, epoch, skip = int(ts["step"]), int(ts["epoch"]), int(ts["batch_in_epoch"])
        seconds, best_psnr = float(ts["seconds"]), float(ts["best_val_psnr"])
        best_metrics = dict(ts.get("best_metrics", {}))
        loss_sum, loss_n = float(ts.get("loss_sum", 0.0)), int(ts.get("loss_n", 0))
        _set_rng_state(ts["rng"])
        history = [r for r in _read_csv(out / "metrics.csv") if r.get("step", 0) <= step]
        log.info("resuming from step %d (epoch %d, batch %d)", step, epoch, skip)
    net: nn.Module = model
    if distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)

    per_epoch = cfg.steps_per_epoch * cfg.batch_size * world
    dataset = PatchDataset(pieces, cfg, per_epoch)
    loss_fn = _loss_fn(cfg.loss)
    max_steps = cfg.total_steps if cfg.max_steps is None else min(cfg.total_steps, cfg.max_steps)
    arch = cfg.model.to_dict()
    if main and cb.on_start:
        cb.on_start(step, max_steps)

    def meta(extra: dict[str, Any]) -> dict[str, Any]:
        return {
            "scale": list(cfg.factors),
            "normalization": normalization_method(),
            "degradation": cfg.degradation,
            "training_data": _training_data(loaded, studies, split.train),
            "validation_data": list(split.val) or ([v[0] for v in val_volumes] if split.slab else []),
            "validation_sha256": {d["id"]: d["sha256"] for d in _training_data(loaded, studies, split.val)},
            "patch_size": cfg.hr_patch,
            "steps": step,
            "epochs": epoch,
            "seconds": round(seconds, 1),
            "best_val": best_metrics,
            "device": device.type if not distributed else f"{device.type} x{world}",
            "train_config": cfg.to_dict(),
            **extra,
        }

    def state(batch_in_epoch: int, running: tuple[float, int] = (0.0, 0)) -> dict[str, Any]:
        return {
            "loss_sum": running[0],
            "loss_n": running[1],
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "scaler": scaler.state_dict() if use_amp else {},
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "step": step,
            "seconds": seconds,
            "best_val_psnr": best_psnr,
            "best_metrics": best_metrics,
            "rng": _rng_state(),
        }

    net.train()
    t0 = last_plot = time.perf_counter()
    stopping = False
    while step < max_steps and epoch < cfg.epochs:
        dataset.epoch = epoch
        sampler = _SkipSampler(per_epoch, rank, world, skip * cfg.batch_size)
        loader = DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            sampler=sampler,
            num_workers=cfg.workers,
            pin_memory=device.type == "cuda",
            drop_last=True,
        )
        batch_in_epoch = skip
        for batch in loader:
            x = batch["input"].to(device, non_blocking=True)
            y = batch["target"].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                pred = net(x)
            loss = loss_fn(pred.float(), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            batch_in_epoch += 1
            lv = float(loss.detach())
            loss_sum, loss_n = loss_sum + lv, loss_n + 1
            if main and cb.on_step:
                cb.on_step(step, lv)
            if step >= max_steps:
                break
            if _stop_requested(cb, distributed, device):
                stopping = True
                break
        skip = 0
        if stopping and batch_in_epoch < cfg.steps_per_epoch:
            # Mid-epoch: the state after this step only; the epoch's validation and row come when a
            # resumed run finishes the epoch, as they would have without the stop.
            seconds += time.perf_counter() - t0
            if main:
                save_checkpoint(
                    out / "last.pt", model, arch, meta({}), train_state=state(batch_in_epoch, (loss_sum, loss_n))
                )
                log.warning("stopped at step %d (epoch %d, batch %d); --resume continues", step, epoch, batch_in_epoch)
            break
        if batch_in_epoch >= cfg.steps_per_epoch:
            epoch, batch_in_epoch = epoch + 1, 0
        seconds_now = seconds + time.perf_counter() - t0
        if main:
            row: dict[str, float] = {
                "epoch": epoch + batch_in_epoch / cfg.steps_per_epoch,
                "step": float(step),
                "loss": loss_sum / max(1, loss_n),
                "lr": float(sched.get_last_lr()[0]),
            }
            if val_volumes:
                row.update(validate(model, val_volumes, _val_factors(cfg), val_mode, axis=cfg.val_axis, device=device))
            row["seconds"] = round(seconds_now, 1)
            history.append(row)
            improved = not val_volumes or row["val_psnr_sr"] > best_psnr
            if improved:
                best_psnr = row.get("val_psnr_sr", best_psnr)
                best_metrics = {k: float(v) for k, v in row.items() if k.startswith("val_")} | {"step": float(step)}
            seconds = seconds_now
            t0 = time.perf_counter()
            if improved:
                save_checkpoint(out / "best.pt", model, arch, meta({}))
            train_state = state(batch_in_epoch)
            # The row first: a kill between the two leaves a row past last.pt's step, which a resume
            # drops and writes again (the other order could lose the row for good).
            _write_csv(out / "metrics.csv", history)
            save_checkpoint(out / "last.pt", model, arch, meta({}), train_state=train_state)
            finished = step >= max_steps or epoch >= cfg.epochs
            # Drawing costs seconds on a busy CPU: redraw at most every PLOT_EVERY_S, and at the end.
            if finished or time.perf_counter() - last_plot >= PLOT_EVERY_S:
                plot_curves(history, out / "curves.png")
                last_plot = time.perf_counter()
            log.info(
                "epoch %.2f step %d loss %.5f %s",
                row["epoch"],
                step,
                row["loss"],
                " ".join(f"{k} {v:.4f}" for k, v in row.items() if k.startswith("val_")),
            )
            if cb.on_epoch:
                cb.on_epoch(row)
        loss_sum, loss_n = 0.0, 0
        if distributed:
            torch.distributed.barrier()
        if stopping:
            break
    if distributed:
        torch.distributed.destroy_process_group()
    return TrainResult(out, out / "best.pt", out / "last.pt", step, epoch, seconds, history, stopping)
