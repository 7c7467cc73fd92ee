"""The state and provenance of a run: the network, optimiser and counters that ``last.pt`` saves
(:class:`RunState`), the metadata of its checkpoints (:func:`run_meta`), RNG states, ``metrics.csv``,
and what a resume must match.

A run is resumed only with the settings, training and validation studies it was started with
(:func:`check_resume`); the RNG states saved in ``last.pt`` make the resumed run equal an
uninterrupted one.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from mrisr.checkpoint import Checkpoint
from mrisr.fsutil import atomic_path
from mrisr.models import build_model, build_model_config
from mrisr.training.config import TrainConfig
from mrisr.training.data import Split, TrainingData
from mrisr.transforms import normalization_method

log = logging.getLogger(__name__)

#: The files a run writes into its output folder (each atomically, through a temporary beside it).
RUN_FILES = ("last.pt", "best.pt", "metrics.csv", "split.json", "curves.png")


def blocking_run_files(out: Path) -> list[Path]:
    """The files at :data:`RUN_FILES` names in ``out`` that a *new* run would replace: all but a
    ``split.json`` of mrisr's own (a run killed before its first checkpoint leaves one).

    A new run writes into ``out`` only when this is empty (``--resume`` continues the run instead).
    """
    found = []
    for name in RUN_FILES:
        path = out / name
        if not os.path.lexists(path):
            continue
        if name == "split.json" and _is_own_split(path):
            continue
        found.append(path)
    return found


def _is_own_split(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.stat().st_size < 1 << 24 else None
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and {"seed", "train", "val", "validation"} <= set(data)


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


def rng_state() -> dict[str, Any]:
    """The Python, NumPy and torch RNG states, in a form ``torch.save`` with ``weights_only`` loads."""
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


def set_rng_state(s: dict[str, Any]) -> None:
    """Restore the states :func:`rng_state` returned."""
    py = s["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    n = s["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(s["torch"])


def write_csv(path: Path, rows: Sequence[dict[str, float]]) -> None:
    """Write ``metrics.csv`` atomically (the columns of :data:`CSV_FIELDS`)."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(CSV_FIELDS))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.6g}" if isinstance(r.get(k), float) else r.get(k, "")) for k in CSV_FIELDS})


def read_csv(path: Path) -> list[dict[str, float]]:
    """The rows of ``metrics.csv`` (none when it is absent)."""
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]


#: Settings a resumed run may change: they do not change the weights computed (``max_steps`` ending
#: in the middle of an epoch adds a validation there, which may change which weights best.pt holds).
RESUMABLE_CHANGES = frozenset({"max_steps", "workers", "device"})
#: Settings added after runs were recorded without them: a missing one counts as its default.
ADDED_SETTINGS = ("random_contrast", "bias_field", "noise_prob", "hr_blur", "zoom_out", "tissue_contrast")


def check_resume(
    meta: dict[str, Any],
    cfg: TrainConfig,
    data: list[dict[str, str]],
    *,
    val_data: list[dict[str, str]],
    path: Path,
    tissue_maps: Sequence[dict[str, str]] = (),
    init: dict[str, Any] | None = None,
) -> None:
    """Refuse to resume a run with other settings, training or validation data, or another ``--init``
    checkpoint, than it was started with (an uninterrupted run would not have given the result; the
    optimiser and schedule could not follow, and best.pt would compare validation figures of two
    different sets).

    Raises:
        ValueError: Naming the settings that differ, or the studies that changed.
    """
    new = json.loads(json.dumps(cfg.to_dict()))
    # A setting added to mrisr after the run started counts as its default (what the run did).
    defaults = {k: getattr(TrainConfig, k) for k in ADDED_SETTINGS}
    old = json.loads(json.dumps({**defaults, **(meta.get("train_config") or {})}))
    changed = sorted(k for k in old.keys() | new.keys() if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k))
    if changed:
        diffs = ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise ValueError(f"--resume: {path} was trained with other settings ({diffs}); start a new run")
    was = {(d.get("id"), d.get("sha256")) for d in meta.get("training_data") or []}
    now = {(d["id"], d["sha256"]) for d in data}
    if was != now:
        ids = sorted({i for i, _ in was ^ now})
        raise ValueError(f"--resume: the training studies differ from the run's ({', '.join(map(str, ids))})")
    # Runs recorded before tissue maps existed had none. Their order matters (each map draws its own value).
    if [d.get("sha256") for d in meta.get("tissue_maps") or []] != [d["sha256"] for d in tissue_maps]:
        raise ValueError(f"--resume: the tissue maps differ from the run's ({path} records them in its tissue_maps)")
    was_init = (meta.get("init") or {}).get("sha256")  # runs recorded before --init had none
    now_init = (init or {}).get("sha256")
    if was_init != now_init:

        def named(rec: dict[str, Any] | None) -> str:
            return f"--init {rec['file']} (sha256 {rec['sha256'][:12]}…)" if rec else "no --init"

        raise ValueError(
            f"--resume: {path} started from {named(meta.get('init'))}, this run from {named(init)}; "
            "a resume needs the same --init file, unchanged; start a new run"
        )
    if "validation_sha256" in meta:  # recorded since session 4
        was_v = set((meta["validation_sha256"] or {}).items())
        now_v = {(d["id"], d["sha256"]) for d in val_data}
        if was_v != now_v:
            ids = sorted({i for i, _ in was_v ^ now_v})
            raise ValueError(f"--resume: the validation studies differ from the run's ({', '.join(map(str, ids))})")


def init_record(ck: Checkpoint) -> dict[str, Any]:
    """What a run records of the checkpoint its weights started from (``meta["init"]``)."""
    name = ck.path.name if ck.path is not None else ""
    return {"file": name, "sha256": ck.sha256, "steps": ck.meta.get("steps")}


def _arch_record(arch: dict[str, Any]) -> dict[str, Any]:
    """An architecture record in its current plain-JSON form (defaults of older files filled in)."""
    try:
        return cast(dict[str, Any], json.loads(json.dumps(build_model_config(arch).to_dict())))
    except (KeyError, TypeError, ValueError):
        return cast(dict[str, Any], json.loads(json.dumps(arch)))


def check_init(ck: Checkpoint, cfg: TrainConfig) -> None:
    """Refuse a warm start from a checkpoint whose network, or scale, is not the run's.

    Raises:
        ValueError: Naming what differs and the options that would match the file.
    """
    have = _arch_record(ck.arch)
    want = _arch_record(cfg.model.to_dict())
    keys = sorted(have.keys() | want.keys())
    diffs = [f"{k} {have.get(k)!r} (here {want.get(k)!r})" for k in keys if have.get(k) != want.get(k)]
    if ck.scale is not None and ck.scale != cfg.factors:  # an SRCNN's layers do not show its scale
        diffs.append(f"scale {list(ck.scale)} (here {list(cfg.factors)})")
    if diffs:
        raise ValueError(
            f"--init {ck.path}: its network is not this run's: {', '.join(diffs)}; {_options_for(have, ck)}"
        )


def _options_for(arch: dict[str, Any], ck: Checkpoint) -> str:
    """The ``mrisr train`` options that build ``arch`` at ``ck``'s scale (for the refusal's hint)."""
    opts = [f"--arch {arch.get('name', 'srcnn')}"]
    if ck.scale is not None:
        thick = [f for f in ck.scale if f != 1]
        through = ck.scale[0] == 1 and ck.scale[1] == 1 and ck.scale[2] != 1
        opts.append(f"--scale {thick[0] if thick else 1}" + (" --through-plane" if through else ""))
    if "kernel_sizes" in arch:
        opts.append("--kernel-sizes " + ",".join(map(str, arch["kernel_sizes"])))
    if "filters" in arch:
        opts.append("--filters " + ",".join(map(str, arch["filters"])))
    opts.append("--residual" if arch.get("residual", True) else "--no-residual")
    opts.append(f"--padding {arch.get('padding_mode', 'replicate')}")
    return "it needs " + " ".join(opts)


@dataclass
class RunState:
    """The network, its optimiser and the counters of a run: what ``last.pt`` saves and restores."""

    cfg: TrainConfig
    model: nn.Module
    opt: torch.optim.Adam
    sched: torch.optim.lr_scheduler.CosineAnnealingLR
    scaler: torch.amp.GradScaler
    use_amp: bool
    step: int = 0
    epoch: int = 0
    skip: int = 0
    seconds: float = 0.0
    best_psnr: float = -math.inf
    # The loss summed over the steps of the epoch so far (a stop mid-epoch saves it: the resumed
    # epoch's row then averages every step of the epoch, as the uninterrupted run's does).
    loss_sum: float = 0.0
    loss_n: int = 0
    best_metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    #: ``{"file", "sha256", "steps"}`` of the checkpoint the weights started from (``--init``), else None.
    init: dict[str, Any] | None = None

    @classmethod
    def start(cls, cfg: TrainConfig, device: torch.device, init: Checkpoint | None = None) -> RunState:
        """A fresh run: Adam with cosine decay on the network seeded with ``cfg.seed``, or on the
        weights of ``init`` (a warm start; the optimiser and schedule still start afresh), which the
        caller has checked with :func:`check_init`.

        Raises:
            ValueError: ``init``'s weights do not fit ``cfg.model``.
        """
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model.to_dict())
        record = None
        if init is not None:
            try:
                model.load_state_dict(init.state_dict)
            except RuntimeError as exc:
                raise ValueError(f"--init {init.path}: its weights do not fit its architecture ({exc})") from None
            record = init_record(init)
        model = model.to(device)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=cfg.total_steps, eta_min=cfg.lr * cfg.min_lr_ratio
        )
        use_amp = device.type == "cuda"
        return cls(cfg, model, opt, sched, torch.amp.GradScaler("cuda", enabled=use_amp), use_amp, init=record)

    def restore(self, ck: Checkpoint, metrics_csv: Path) -> None:
        """Continue from a checkpoint with training state (weights, optimiser, counters, RNG states)."""
        ts = ck.train_state
        if ts is None:
            raise ValueError(f"{ck.path} holds no training state to resume from")
        self.model.load_state_dict(ck.state_dict)
        self.opt.load_state_dict(ts["optimizer"])
        self.sched.load_state_dict(ts["scheduler"])
        if self.use_amp and ts.get("scaler"):
            self.scaler.load_state_dict(ts["scaler"])
        self.step, self.epoch, self.skip = int(ts["step"]), int(ts["epoch"]), int(ts["batch_in_epoch"])
        self.seconds, self.best_psnr = float(ts["seconds"]), float(ts["best_val_psnr"])
        self.best_metrics = dict(ts.get("best_metrics", {}))
        self.loss_sum, self.loss_n = float(ts.get("loss_sum", 0.0)), int(ts.get("loss_n", 0))
        set_rng_state(ts["rng"])
        self.history = [r for r in read_csv(metrics_csv) if r.get("step", 0) <= self.step]
        log.info("resuming from step %d (epoch %d, batch %d)", self.step, self.epoch, self.skip)

    def train_state(self, batch_in_epoch: int, running: tuple[float, int] = (0.0, 0)) -> dict[str, Any]:
        """What ``last.pt`` holds to resume from."""
        return {
            "loss_sum": running[0],
            "loss_n": running[1],
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict() if self.use_amp else {},
            "epoch": self.epoch,
            "batch_in_epoch": batch_in_epoch,
            "step": self.step,
            "seconds": self.seconds,
            "best_val_psnr": self.best_psnr,
            "best_metrics": self.best_metrics,
            "rng": rng_state(),
        }


def run_meta(
    run: RunState,
    loaded: TrainingData,
    split: Split,
    *,
    val_names: list[str],
    device: str,
    tissue_maps: Sequence[dict[str, str]] = (),
) -> dict[str, Any]:
    """The checkpoint metadata of a run (its provenance: settings, studies, progress).

    Args:
        run: The run's state now.
        loaded: Its studies.
        split: Which of them train and which validate.
        val_names: Names of the validation volumes (the held-out slab of a single study).
        device: The device, as recorded (``cpu``, ``cuda``, ``cuda x4`` under DDP).
        tissue_maps: ``{"file", "sha256"}`` of the run's tissue probability maps, in order.
    """
    cfg = run.cfg
    return {
        "scale": list(cfg.factors),
        "normalization": normalization_method(),
        "degradation": cfg.degradation,
        "training_data": loaded.records(split.train),
        "tissue_maps": list(tissue_maps),
        "validation_data": list(split.val) or (val_names if split.slab else []),
        "validation_sha256": {d["id"]: d["sha256"] for d in loaded.records(split.val)},
        "patch_size": cfg.hr_patch,
        "steps": run.step,
        "epochs": run.epoch,
        "seconds": round(run.seconds, 1),
        "best_val": run.best_metrics,
        "device": device,
        "train_config": cfg.to_dict(),
        "init": run.init,
    }
