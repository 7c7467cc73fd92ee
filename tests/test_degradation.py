"""Degradation models: shapes, voxel-centre geometry and the k-space crop, checked against hand values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mrisr.degradation import (
    degrade_and_upsample,
    degrade_volume,
    downsample,
    draw_mode,
    evaluation_mode,
    kspace_indices,
    modes_of,
)


def _ramp(h: int, w: int) -> torch.Tensor:
    """Slice whose value is the row index: ``x[r, c] = r``, shape ``(1, 1, h, w)``, float64."""
    return torch.arange(h, dtype=torch.float64)[:, None].expand(h, w)[None, None].clone()


@pytest.mark.parametrize("mode", ["bicubic", "box", "kspace"])
@pytest.mark.parametrize("factors", [(2, 2), (4, 4), (3, 1), (2, 4)])
def test_shape(mode: str, factors: tuple[int, int]) -> None:
    x = torch.rand(2, 1, 24, 24, generator=torch.Generator().manual_seed(0))
    y = downsample(x, factors, mode)
    assert y.shape == (2, 1, 24 // factors[0], 24 // factors[1])
    assert y.dtype == x.dtype


@pytest.mark.parametrize("mode", ["bicubic", "box"])
@pytest.mark.parametrize("f", [2, 3, 4])
def test_ramp_lands_at_coarse_voxel_centres(mode: str, f: int) -> None:
    h = 12 * f
    y = downsample(_ramp(h, 8), (f, 1), mode)[0, 0, :, 0].numpy()
    centres = f * np.arange(h // f) + (f - 1) / 2
    # Box is exact everywhere; antialiased bicubic is exact where its kernel does not reach the edge.
    inner = slice(None) if mode == "box" else slice(2, -2)
    np.testing.assert_allclose(y[inner], centres[inner], atol=1e-4)


def test_box_is_block_mean() -> None:
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    y = downsample(x, (2, 2), "box")[0, 0]
    assert torch.equal(y, torch.tensor([[2.5, 4.5], [10.5, 12.5]]))


def test_kspace_samples_band_limited_signal_at_centres() -> None:
    f, h, k = 4, 32, 3  # a cosine of 3 cycles is well inside the coarse band (8 samples)
    r = torch.arange(h, dtype=torch.float64)
    x = torch.cos(2 * math.pi * k * r / h)[:, None].expand(h, 4)[None, None].clone()
    y = downsample(x, (f, 1), "kspace")[0, 0, :, 0]
    centres = f * torch.arange(h // f, dtype=torch.float64) + (f - 1) / 2
    torch.testing.assert_close(y, torch.cos(2 * math.pi * k * centres / h), atol=1e-10, rtol=0)


@pytest.mark.parametrize(("fh", "fw"), [(4, 4), (2, 4), (3, 1)])
def test_kspace_keeps_low_frequencies_exactly(fh: int, fw: int) -> None:
    # Odd coarse sizes: the kept band is Hermitian-symmetric, so the real LR carries it exactly.
    mh, mw = 9, 7
    h, w = fh * mh, fw * mw
    x = torch.randn(1, 1, h, w, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lr = downsample(x, (fh, fw), "kspace")
    got = torch.fft.fft2(lr)[0, 0] * (fh * fw)
    ky = torch.fft.fftfreq(h, dtype=torch.float64)
    kx = torch.fft.fftfreq(w, dtype=torch.float64)
    shift = torch.exp(2j * math.pi * (ky[:, None] * (fh - 1) / 2 + kx[None, :] * (fw - 1) / 2))
    want = (torch.fft.fft2(x)[0, 0] * shift)[kspace_indices(h, mh)][:, kspace_indices(w, mw)]
    torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-9)
    # The high frequencies are gone: the LR has no content beyond its own band by construction, and
    # the kept band is not the trivial one (the spectrum is far from zero).
    assert want.abs().mean() > 1.0


def test_kspace_indices_order() -> None:
    assert kspace_indices(8, 4).tolist() == [0, 1, 6, 7]
    assert kspace_indices(9, 3).tolist() == [0, 1, 8]


def test_unknown_mode_and_indivisible_size_raise() -> None:
    x = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="unknown degradation"):
        downsample(x, (2, 2), "nearest")
    with pytest.raises(ValueError, match="not divisible"):
        downsample(x, (3, 3), "box")


def test_degrade_volume_crops_and_keeps_axis2() -> None:
    x = np.arange(10 * 9 * 5, dtype=np.float32).reshape(10, 9, 5)
    y = degrade_volume(x, (4, 4, 1), "box")
    assert y.shape == (2, 2, 5)
    # Block (0:4, 0:4) of slice k=3, averaged.
    assert y[0, 0, 3] == pytest.approx(float(x[:4, :4, 3].mean()))


@pytest.mark.parametrize("mode", ["bicubic", "box", "kspace"])
def test_degrade_patch_returns_input_on_the_fine_grid(mode: str) -> None:
    hr = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    x = degrade_and_upsample(hr, (4, 4), mode)
    assert x.shape == hr.shape
    # A constant patch stays constant through degradation and bicubic upsampling.
    c = degrade_and_upsample(torch.full((1, 1, 16, 16), 0.7), (4, 4), mode)
    torch.testing.assert_close(c, torch.full_like(c, 0.7), atol=1e-5, rtol=0)
    # The degraded input has lost detail: it is not the HR patch.
    assert float((x - hr).abs().mean()) > 0.05


def test_box_degradation_of_a_volume_is_its_block_means() -> None:
    x = np.random.default_rng(3).random((10, 9, 5)).astype(np.float32)
    y = degrade_volume(x, (4, 4, 1), "box")
    want = x[:8, :8].reshape(2, 4, 2, 4, 5).mean(axis=(1, 3))  # cropped to 8×8, then 4×4 blocks
    np.testing.assert_allclose(y, want, rtol=1e-6)
    thick = degrade_volume(x, (1, 3, 5), "box")  # two axes: blocks of 1×3×5
    np.testing.assert_allclose(thick, x[:, :9].reshape(10, 3, 3, 1, 5).mean(axis=(2, 4)), rtol=1e-6)


@pytest.mark.parametrize("mode", ["bicubic", "box", "kspace"])
def test_one_axis_degradation_works_along_that_axis_alone(mode: str) -> None:
    x = np.random.default_rng(4).random((6, 5, 16)).astype(np.float32)
    y = degrade_volume(x, (1, 1, 4), mode)
    assert y.shape == (6, 5, 4)
    # Each line along axis 2 is degraded on its own: one line alone gives the same values...
    alone = degrade_volume(x[2:3, 3:4], (1, 1, 4), mode)
    np.testing.assert_allclose(y[2:3, 3:4], alone, atol=1e-6)
    # ...and the means over the axes left alone commute with the degradation (a linear map per line).
    np.testing.assert_allclose(
        y.mean(axis=(0, 1)), degrade_volume(x.mean(axis=(0, 1), keepdims=True), (1, 1, 4), mode)[0, 0], atol=1e-5
    )
    if mode == "box":
        np.testing.assert_allclose(y, x.reshape(6, 5, 4, 4).mean(axis=3), rtol=1e-6)
    if mode == "bicubic":  # torch's antialiased bicubic along one axis, called directly
        line = torch.from_numpy(x.reshape(30, 1, 1, 16))
        want = torch.nn.functional.interpolate(line, size=(1, 4), mode="bicubic", antialias=True, align_corners=False)
        np.testing.assert_allclose(y, want.numpy().reshape(6, 5, 4), atol=1e-6)


def test_mixed_is_bicubic_or_box_and_counts_as_bicubic() -> None:
    assert modes_of("mixed") == ("bicubic", "box") and modes_of("kspace") == ("kspace",)
    assert evaluation_mode("mixed") == "bicubic" and evaluation_mode("box") == "box"
    rng = np.random.default_rng(0)
    drawn = [draw_mode("mixed", rng) for _ in range(400)]
    assert set(drawn) == {"bicubic", "box"} and 150 < drawn.count("box") < 250
    # One draw per mixed patch and none otherwise: the generators of the patch pipeline stay in step.
    a, b = np.random.default_rng(1), np.random.default_rng(1)
    assert draw_mode("box", a) == "box" and a.random() == b.random()
    draw_mode("mixed", a)
    b.random()
    assert a.random() == b.random()
