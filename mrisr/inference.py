"""Inference: super-resolve normalised volumes slice by slice, on the GPU or the CPU.

The core, :func:`super_resolve_array`, takes a normalised 3D low-resolution array and returns the
normalised array on the refined grid. Slices are cut across ``axis`` (the MONAI transform
:class:`mrisr.monai_transforms.SliceStack`, which training uses too), upsampled by bicubic
interpolation to the target size (a coarse-grid network such as ESPCN takes the slices as they are
and upsamples them itself), passed through the network in batches (and, when a slice is too
large for the memory budget, in overlapping tiles whose halo covers the network's receptive field, so
tiled and untiled results agree), and stacked back.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from mrisr.defaults import DEFAULT_ENSEMBLE as DEFAULT_ENSEMBLE  # re-exported (older callers)
from mrisr.degradation import upsample
from mrisr.device import resolve_device
from mrisr.passes import Passes, plan_passes

log = logging.getLogger(__name__)

#: Bytes of activations per output pixel that the default SRCNN needs (64 + 32 + 1 float32 maps,
#: plus input and bicubic copies), used to size batches.
BYTES_PER_PIXEL = 4 * (64 + 32 + 4)
CPU_BUDGET_BYTES = 512 * 2**20


def receptive_radius(model: nn.Module) -> int:
    """Sum of the half kernel sizes of the model's convolutions (the halo for exact tiling)."""
    return sum(m.kernel_size[0] // 2 for m in model.modules() if isinstance(m, nn.Conv2d))


@dataclass(frozen=True)
class RunOptions:
    """How the network is run.

    Attributes:
        device: Torch device.
        batch_size: Slices per batch; ``None`` sizes batches to the memory budget.
        amp: Use float16 autocast on CUDA (ignored on the CPU). Off by default: fp16's error against
            fp32 is about 1e-3 of the signal maximum (bfloat16's about 8e-3), at the limit of what
            the project accepts; fp32 convolutions already use TF32 on recent GPUs.
        channels_last: Use the channels-last memory format (faster for these convolutions on both
            CPU and GPU: 17 vs 24 ms for 8 slices of 64² on the 2-core CPU).
        max_tile_pixels: Slices with more output pixels than this are processed in tiles.
        ensemble: Geometric self-ensemble: each slice is run in this many flipped/transposed views
            (1, 2, 4 or 8; :func:`ensemble_views`) and the outputs, turned back, are averaged.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int | None = None
    amp: bool = False
    channels_last: bool = True
    max_tile_pixels: int = 4096 * 4096
    ensemble: int = 1

    def __post_init__(self) -> None:
        if self.ensemble not in (1, 2, 4, 8):
            raise ValueError(f"ensemble must be 1, 2, 4 or 8, not {self.ensemble}")

    def budget_bytes(self) -> int:
        """Memory available for activations."""
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return int(free * 0.5)
        return CPU_BUDGET_BYTES


def _batch_size(opts: RunOptions, pixels: int) -> int:
    if opts.batch_size:
        return max(1, int(opts.batch_size))
    return max(1, min(1024, opts.budget_bytes() // max(1, pixels * BYTES_PER_PIXEL)))


Tile = tuple[tuple[slice, slice], tuple[slice, slice], tuple[slice, slice]]


def _tiles(h: int, w: int, tile: int, halo: int) -> Iterator[Tile]:
    """Tiles of an ``h×w`` image: (input window with halo, output window, output part of the input window)."""
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(h, y0 + tile), min(w, x0 + tile)
            ya, xa = max(0, y0 - halo), max(0, x0 - halo)
            yb, xb = min(h, y1 + halo), min(w, x1 + halo)
            window = (slice(ya, yb), slice(xa, xb))
            target = (slice(y0, y1), slice(x0, x1))
            local = (slice(y0 - ya, y1 - ya), slice(x0 - xa, x1 - xa))
            yield window, target, local


def _scaled(s: slice, f: int) -> slice:
    """The fine-grid slice covering the coarse slice ``s`` (``f`` fine voxels per coarse voxel)."""
    return slice(s.start * f, s.stop * f)


View = tuple[bool, bool, bool]


def ensemble_views(n: int, symmetric: bool = True) -> list[View]:
    """The ``(flip rows, flip columns, transpose)`` views of an ``n``-member ensemble.

    ``1``: the slice itself; ``2``: and its transpose; ``4``: the four flips; ``8``: the flips of the
    slice and of its transpose. A transpose swaps the two axes of the plane, so it is used only when
    ``symmetric`` (both refined by the same factor); otherwise flips stand in for it.
    """
    flips = [(False, False, False), (True, False, False), (False, True, False), (True, True, False)]
    if n == 1:
        return flips[:1]
    if n == 2:
        return [flips[0], (False, False, True) if symmetric else flips[2]]
    if n == 4 or not symmetric:
        return flips
    return flips + [(a, b, True) for a, b, _ in flips]


def _view(x: torch.Tensor, v: View) -> torch.Tensor:
    if v[0]:
        x = x.flip(-2)
    if v[1]:
        x = x.flip(-1)
    return x.transpose(-1, -2) if v[2] else x


def _unview(y: torch.Tensor, v: View) -> torch.Tensor:
    if v[2]:
        y = y.transpose(-1, -2)
    if v[1]:
        y = y.flip(-1)
    return y.flip(-2) if v[0] else y


class SliceRunner:
    """Runs a network over batches of 2D slices ``(N, 1, H, W)`` with the options given."""

    def __init__(self, model: nn.Module, opts: RunOptions) -> None:
        self.opts = opts
        # A copy: moving or re-laying out the caller's module in place would change what later code
        # (per-study adaptation of the same network) computes, down to the last bits.
        self.model = copy.deepcopy(model).to(opts.device).eval()
        self.halo = receptive_radius(model)
        self.cuda = opts.device.type == "cuda"
        self.lr_space = getattr(model, "input_space", "hr") == "lr"
        cfg = getattr(model, "config", None)
        self.out_per_in: tuple[int, int] = tuple(cfg.factors) if self.lr_space and cfg is not None else (1, 1)
        if opts.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.amp_dtype = torch.float16

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, *, symmetric: bool = True) -> torch.Tensor:
        """Network output for ``x`` (float32, on any device); returns float32 on ``x``'s device.

        With an ensemble, the mean over the views of :func:`ensemble_views` (``symmetric``: the
        network refines both axes of the plane alike, so transposed views are allowed).
        """
        views = ensemble_views(self.opts.ensemble, symmetric)
        if len(views) == 1:
            return self._run(x)
        # Views are made, run and summed on the device: one copy in, one copy out.
        xd = x.to(self.opts.device, non_blocking=True)
        acc = _unview(self._run(xd), views[0]).clone(memory_format=torch.contiguous_format)  # never x itself
        for v in views[1:]:
            acc += _unview(self._run(_view(xd, v).contiguous()), v)
        return acc.div_(len(views)).to(x.device)

    @torch.inference_mode()
    def mean_and_variance(self, x: torch.Tensor, *, symmetric: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`__call__`, and the per-pixel population variance of the views' outputs.

        The mean is the same as :meth:`__call__`'s up to float32 rounding; the variance is
        ``mean(y²) − mean(y)²`` over the views (clipped at 0; all zeros for a single view).
        """
        views = ensemble_views(self.opts.ensemble, symmetric)
        xd = x.to(self.opts.device, non_blocking=True)
        y = _unview(self._run(xd), views[0])
        acc = y.clone(memory_format=torch.contiguous_format)
        acc2 = y * y
        for v in views[1:]:
            y = _unview(self._run(_view(xd, v).contiguous()), v)
            acc += y
            acc2 += y * y
        acc.div_(len(views))
        var = acc2.div_(len(views)).sub_(acc * acc).clamp_min_(0.0)
        return acc.to(x.device), var.to(x.device)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h * w * self.out_per_in[0] * self.out_per_in[1] > self.opts.max_tile_pixels:
            return self._tiled(x)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        src_device = x.device
        xd = x.to(self.opts.device, non_blocking=True)
        if self.opts.channels_last:
            xd = xd.contiguous(memory_format=torch.channels_last)
        if self.cuda and self.opts.amp:
            with torch.autocast("cuda", dtype=self.amp_dtype):
                y = self.model(xd)
        else:
            y = self.model(xd)
        return y.float().to(src_device).contiguous()

    def _tiled(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        fh, fw = self.out_per_in
        tile = max(8, math.isqrt(self.opts.max_tile_pixels // (fh * fw)) - 2 * self.halo)
        out = x.new_empty((*x.shape[:-2], h * fh, w * fw))
        for (wy, wx), (ty, tx), (ly, lx) in _tiles(h, w, tile, self.halo):
            y = self._forward(x[..., wy, wx])
            out[..., _scaled(ty, fh), _scaled(tx, fw)] = y[..., _scaled(ly, fh), _scaled(lx, fw)]
        return out


def _plane_pass(
    x: np.ndarray,
    factors: tuple[int, int],
    slice_axis: int,
    runner: SliceRunner | None,
    progress: Callable[[int], None] | None,
    variance_out: np.ndarray | None = None,
) -> np.ndarray:
    """Upscale the two axes other than ``slice_axis`` of a 3D array by ``factors`` (bicubic + net).

    ``variance_out`` (the output's shape, float32), when given, receives the variance of the
    ensemble views per voxel (zeros without a network).
    """
    from mrisr.monai_transforms import SliceStack  # MONAI: imported when the first slices are cut

    slices = SliceStack(slice_axis)
    var_moved = None if variance_out is None else slices(variance_out)  # a view: written in place
    moved = slices(x)
    n, h, w = moved.shape
    oh, ow = h * factors[0], w * factors[1]
    out = np.empty((n, oh, ow), dtype=np.float32)
    bs = _batch_size(runner.opts, oh * ow) if runner is not None else 64
    for start in range(0, n, bs):
        stop = min(n, start + bs)
        batch = torch.from_numpy(np.ascontiguousarray(moved[start:stop], dtype=np.float32))[:, None]
        if runner is not None and runner.lr_space:
            if tuple(factors) != runner.out_per_in:
                raise ValueError(
                    f"this low-resolution-grid network upsamples by {runner.out_per_in}, not {tuple(factors)}"
                )
            y, var = _apply(runner, batch, factors, var_moved is not None)  # the network upsamples itself
        else:
            up = upsample(batch, (oh, ow))
            y, var = _apply(runner, up, factors, var_moved is not None) if runner is not None else (up, None)
        out[start:stop] = y[:, 0].numpy()
        if var_moved is not None:
            var_moved[start:stop] = 0.0 if var is None else var[:, 0].numpy()
        if progress is not None:
            progress(stop - start)
    return slices.inverse(out)


def _apply(
    runner: SliceRunner, x: torch.Tensor, factors: tuple[int, int], variance: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    symmetric = factors[0] == factors[1]
    if variance:
        return runner.mean_and_variance(x, symmetric=symmetric)
    return runner(x, symmetric=symmetric), None


def super_resolve_array(
    model: nn.Module | None,
    x: np.ndarray,
    factors: tuple[int, int, int],
    *,
    axis: int = 2,
    device: torch.device | str = "cpu",
    batch_size: int | None = None,
    opts: RunOptions | None = None,
    progress: Callable[[int], None] | None = None,
    passes: Passes | None = None,
    variance_out: np.ndarray | None = None,
) -> np.ndarray:
    """Super-resolve a normalised 3D array.

    Args:
        model: The network (``None`` gives plain bicubic interpolation through the same path).
        x: Low-resolution array ``(i, j, k)``, normalised float32.
        factors: Integer refinement per axis.
        axis: Slicing axis: slices are cut across it and their plane upscaled.
        device: Torch device (ignored when ``opts`` is given).
        batch_size: Slices per batch (ignored when ``opts`` is given).
        opts: Full run options.
        progress: Called with the number of slices done after each batch.
        passes: ``[(slice_axis, (f_a, f_b)), ...]`` to run instead of :func:`mrisr.passes.plan_passes`
            (one-axis passes for a network adapted to one-axis degradation).
        variance_out: Float32 array of the output's shape that receives, per voxel, the variance of
            the ensemble views of the last pass (the spread that the ensemble averages away;
            earlier passes feed it their mean). Zeros without a network or with one view.

    Returns:
        Float32 array of shape ``(i·f0, j·f1, k·f2)``.
    """
    if x.ndim != 3:
        raise ValueError(f"expected a 3D array, got shape {x.shape}")
    run_opts = opts or RunOptions(device=resolve_device(device), batch_size=batch_size)
    runner = SliceRunner(model, run_opts) if model is not None else None
    out = np.asarray(x, dtype=np.float32)
    plan = passes if passes is not None else plan_passes(tuple(int(f) for f in factors), axis)  # type: ignore[arg-type]
    for n, (cut, fs) in enumerate(plan):
        last = n == len(plan) - 1
        out = _plane_pass(out, fs, cut, runner, progress, variance_out if last else None)
    return out
