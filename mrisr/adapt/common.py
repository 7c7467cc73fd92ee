"""What every per-study adaptation shares: its settings and result, the optimisation loop with
held-out early stopping, held-out splits and the network copy it works on."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from mrisr.degradation import MIXED

log = logging.getLogger(__name__)

#: Default steps of the fine-grid (one-axis) and coarse-grid (in-plane) adaptations.
STEPS_FINE_GRID = 300
STEPS_COARSE_GRID = 1000
#: Default steps of the adaptation of a one-axis coarse-grid network (thick slices,
#: :mod:`mrisr.adapt.axis_net`). Each step costs the same whatever the study's size (at most 16
#: patches of 48×48 voxels; held-out checks every 50 steps on at most 8 slices of 128²), so this
#: bounds the adaptation's time: one step of the shipped ×3 network took 0.14 s of one core on the
#: shared CPU, so 150 steps and 4 checks fit the per-study budget :data:`ADAPT_BUDGET_SECONDS`
#: (docs/performance.md). 300 steps gained 0.02–0.03 dB more on the held-out EPI (docs/beyond.md).
STEPS_AXIS = 150
#: The documented per-study time budget of the default thick-slice adaptation on 2 CPU cores.
ADAPT_BUDGET_SECONDS = 30


@dataclass(frozen=True)
class AdaptConfig:
    """Settings of the adaptation.

    Attributes:
        steps: Optimisation steps (``None``: 300 for a fine-grid network, 1000 for a coarse-grid one,
            :data:`STEPS_AXIS` for a one-axis coarse-grid one).
        lr: Adam learning rate.
        batch_size: Patches per step.
        patch_size: Side of the target patches, in voxels (cut to the plane size).
        val_every: Held-out evaluation every so many steps.
        val_share: Share of the donor planes held out.
        degradation: ``box`` (thick voxels), ``bicubic`` or ``mixed`` (both, alternating).
        seed: Seed of patch sampling and augmentation.
    """

    steps: int | None = None
    lr: float = 1e-3
    batch_size: int = 16
    patch_size: int = 48
    val_every: int = 20
    val_share: float = 0.2
    degradation: str = MIXED
    seed: int = 0


@dataclass(frozen=True)
class AdaptResult:
    """What adaptation did (recorded in the sidecar)."""

    used: bool
    reason: str
    donor_axis: int | None
    factor: int
    steps: int
    best_step: int
    val_mse_bicubic: float | None
    val_mse_before: float | None
    val_mse_after: float | None
    n_train_planes: int
    n_val_planes: int
    seconds: float
    degradation: str
    method: str = "one-axis"
    consistency_ratio: float | None = None
    source: str = ""
    #: Width of the slice profile the donor planes were degraded with, in output voxels (``None``:
    #: ``degradation``, contiguous slices).
    blur_width: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


def effective_steps(config: AdaptConfig, model: nn.Module) -> int:
    """The steps an adaptation of ``model`` runs: ``config.steps``, or the default for its kind."""
    if config.steps is not None:
        return config.steps
    if getattr(getattr(model, "config", None), "name", "") == "axis-espcn":
        return STEPS_AXIS
    return STEPS_COARSE_GRID if getattr(model, "input_space", "hr") == "lr" else STEPS_FINE_GRID


def _with_signal(energy: np.ndarray) -> np.ndarray:
    """Indices of the planes or slices whose standard deviation ``energy`` is at least 5 % of the
    largest (none when all are flat)."""
    return np.flatnonzero(energy > 0.05 * energy.max()) if energy.max() > 0 else np.array([], dtype=int)


def _held_out_stride(val_share: float) -> int:
    """Every how many planes or slices one is held out."""
    return max(2, round(1 / max(val_share, 1e-3)))


def _split_planes(stacks: list[np.ndarray], val_share: float) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Training planes ``(n, h, w)`` and held-out planes ``(n, 1, h, w)`` of each stack.

    Planes with little signal (standard deviation under 5 % of the stack's largest) are dropped;
    every ``1 / val_share``-th of the rest is held out. Stacks left without both are skipped.
    """
    every = _held_out_stride(val_share)
    train_sets: list[torch.Tensor] = []
    val_sets: list[torch.Tensor] = []
    for st in stacks:
        keep = _with_signal(st.reshape(len(st), -1).std(axis=1))
        val_idx = keep[every // 2 :: every]
        train_idx = np.setdiff1d(keep, val_idx)
        if len(val_idx) and len(train_idx):
            train_sets.append(torch.from_numpy(st[train_idx]))
            val_sets.append(torch.from_numpy(st[val_idx])[:, None])
    return train_sets, val_sets


def _fit(
    net: nn.Module,
    params: Iterable[nn.Parameter],
    step_loss: Callable[[int], torch.Tensor],
    val: Callable[[nn.Module], float],
    *,
    steps: int,
    lr: float,
    val_every: int,
) -> tuple[float, float, int]:
    """Adam on ``params`` for ``steps`` steps of ``step_loss(step)``; keeps the weights with the lowest
    ``val`` (checked every ``val_every`` steps and at the end; the starting weights count).

    Returns:
        ``(val before, best val, best step)``; ``net`` is left in eval mode with the best weights.
    """
    net.eval()
    before = val(net)
    best, best_step, best_state = before, 0, copy.deepcopy(net.state_dict())
    opt = torch.optim.Adam(params, lr=lr)
    for it in range(1, steps + 1):
        net.train()
        loss = step_loss(it)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if it % val_every == 0 or it == steps:
            net.eval()
            cur = val(net)
            if cur < best:
                best, best_step, best_state = cur, it, copy.deepcopy(net.state_dict())
    net.load_state_dict(best_state)
    net.eval()
    return before, best, best_step


def _working_copy(model: nn.Module, dev: torch.device) -> nn.Module:
    """A copy of ``model`` on ``dev`` in the default (contiguous) memory format, so that adaptation
    computes the same numbers whatever layout the caller's module was left in."""
    return copy.deepcopy(model).to(dev).to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]


def _rejected(
    reason: str,
    cfg: AdaptConfig,
    t0: float,
    b: int | None = None,
    f: int = 1,
    method: str = "one-axis",
    source: str = "",
) -> AdaptResult:
    """A result for an adaptation that could not run (no losses measured: ``None`` in JSON)."""
    log.info("adaptation not used: %s", reason)
    seconds = round(time.perf_counter() - t0, 3)
    return AdaptResult(
        False, reason, b, f, 0, 0, None, None, None, 0, 0, seconds, cfg.degradation, method, None, source
    )
