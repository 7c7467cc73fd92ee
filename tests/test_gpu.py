"""GPU checks (marked `gpu`, skipped without CUDA): the GPU path agrees with the CPU path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrisr.checkpoint import load_checkpoint, shipped_checkpoint
from mrisr.inference import RunOptions, super_resolve_array

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


ARCHS = pytest.mark.parametrize("arch", ["espcn", "srcnn"])


def _model(arch: str) -> torch.nn.Module:
    path = shipped_checkpoint((4, 4, 1), arch=arch)
    assert path is not None
    return load_checkpoint(path).build()


def _volume() -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:40]
    return np.stack([(np.sin(xx / 4 + k) * np.cos(yy / 5) + 1) / 2 for k in range(6)], -1).astype(np.float32) + (
        rng.normal(0, 0.01, (48, 40, 6)).astype(np.float32)
    )


@ARCHS
def test_fp32_gpu_matches_cpu(arch: str) -> None:
    x = _volume()
    cpu = super_resolve_array(_model(arch), x, (4, 4, 1), opts=RunOptions(device=torch.device("cpu")))
    gpu = super_resolve_array(_model(arch), x, (4, 4, 1), opts=RunOptions(device=torch.device("cuda"), amp=False))
    # TF32 convolutions: about 1e-3 of the signal at most.
    assert np.abs(gpu - cpu).max() < 2e-3 * np.abs(cpu).max()


@ARCHS
def test_ensemble_on_gpu_matches_cpu(arch: str) -> None:
    x = _volume()
    cpu = super_resolve_array(_model(arch), x, (4, 4, 1), opts=RunOptions(device=torch.device("cpu"), ensemble=8))
    gpu = super_resolve_array(_model(arch), x, (4, 4, 1), opts=RunOptions(device=torch.device("cuda"), ensemble=8))
    assert np.abs(gpu - cpu).max() < 2e-3 * np.abs(cpu).max()


@ARCHS
def test_fp16_amp_error_is_small(arch: str) -> None:
    x = _volume()
    ref = super_resolve_array(_model(arch), x, (4, 4, 1), opts=RunOptions(device=torch.device("cpu")))
    amp = super_resolve_array(_model(arch), x, (4, 4, 1), opts=RunOptions(device=torch.device("cuda"), amp=True))
    err = float(np.abs(amp - ref).max() / np.abs(ref).max())
    assert err < 5e-3, err


@ARCHS
def test_tiled_equals_untiled_on_gpu(arch: str) -> None:
    x = _volume()
    dev = torch.device("cuda")
    whole = super_resolve_array(_model(arch), x, (4, 4, 1), opts=RunOptions(device=dev, amp=False))
    tiled = super_resolve_array(
        _model(arch), x, (4, 4, 1), opts=RunOptions(device=dev, amp=False, max_tile_pixels=64 * 64)
    )
    np.testing.assert_allclose(tiled, whole, atol=1e-4)


def test_batches_sized_to_free_memory() -> None:
    from mrisr.inference import BYTES_PER_PIXEL, _batch_size

    opts = RunOptions(device=torch.device("cuda"))
    free_before, _ = torch.cuda.mem_get_info()
    n = _batch_size(opts, 256 * 256)
    free_after, _ = torch.cuda.mem_get_info()
    # Half the free memory over the bytes of one slice (the free memory read before and after).
    want = sorted(min(1024, f // 2 // (256 * 256 * BYTES_PER_PIXEL)) for f in (free_before, free_after))
    assert want[0] <= n <= want[1], (n, want)
