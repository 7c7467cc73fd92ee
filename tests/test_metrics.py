"""Tests of mrisr.metrics against analytic values, brute force and MONAI's interior SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mrisr import metrics
from mrisr.metrics import METRIC_KEYS, evaluate, foreground_mask, psnr, ssim, ssim3d, ssim_map


@pytest.fixture
def ref() -> np.ndarray:
    rng = np.random.default_rng(0)
    r = rng.random((24, 20, 6))
    r[0, 0, 0] = 0.0
    r[1, 0, 0] = 1.0
    return r


def test_psnr_known_noise(ref: np.ndarray) -> None:
    sigma = 0.05
    signs = np.where(np.random.default_rng(1).random(ref.shape) < 0.5, -1.0, 1.0)
    x = ref + sigma * signs
    # MSE is exactly sigma², data range exactly 1.
    assert psnr(x, ref) == pytest.approx(-20.0 * math.log10(sigma), abs=1e-6)
    assert psnr(x, ref, data_range=2.0) == pytest.approx(20.0 * math.log10(2.0 / sigma), abs=1e-6)


def test_psnr_default_range_is_reference_range() -> None:
    ref = np.array([[[10.0, 20.0], [30.0, 50.0]]])  # range 40
    x = ref + np.array([[[2.0, -2.0], [2.0, -2.0]]])  # MSE 4
    assert psnr(x, ref) == pytest.approx(10 * math.log10(40.0**2 / 4.0), abs=1e-9)
    # swapping roles changes the range (x: 12..48 → 36)
    assert psnr(ref, x) == pytest.approx(10 * math.log10(36.0**2 / 4.0), abs=1e-9)


def test_psnr_masked_by_hand() -> None:
    ref = np.zeros((4, 4, 1))
    ref[3, 3, 0] = 2.0  # range 2
    x = ref.copy()
    x[0, 0, 0] = 1.0
    x[0, 1, 0] = 1.0
    x[3, 0, 0] = 5.0  # outside the mask
    mask = np.zeros_like(ref, dtype=bool)
    mask[0, :, 0] = True  # 4 voxels, errors 1, 1, 0, 0 → MSE 0.5
    assert psnr(x, ref, mask=mask) == pytest.approx(10 * math.log10(4.0 / 0.5), abs=1e-9)
    assert psnr(ref, ref) == math.inf


def test_psnr_errors(ref: np.ndarray) -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(ref[:-1], ref)
    with pytest.raises(ValueError, match="data range"):
        psnr(ref, np.ones_like(ref))
    with pytest.raises(ValueError, match="no voxel"):
        psnr(ref, ref, mask=np.zeros(ref.shape, dtype=bool))


def test_gaussian_window() -> None:
    w = metrics.gaussian_window()
    assert w.shape == (11,)
    assert w.sum() == pytest.approx(1.0)
    assert w[5] / w[4] == pytest.approx(math.exp(1 / (2 * 1.5**2)))


def _brute_ssim_at(a: np.ndarray, b: np.ndarray, i: int, j: int, r: float) -> float:
    """SSIM at one pixel of a 2D image with the full 11×11 window and symmetric padding."""
    pa = np.pad(a, 5, mode="symmetric")
    pb = np.pad(b, 5, mode="symmetric")
    g = metrics.gaussian_window()
    w2 = np.outer(g, g)
    wa = pa[i : i + 11, j : j + 11]
    wb = pb[i : i + 11, j : j + 11]
    mu_a, mu_b = (w2 * wa).sum(), (w2 * wb).sum()
    va = (w2 * (wa - mu_a) ** 2).sum()
    vb = (w2 * (wb - mu_b) ** 2).sum()
    cov = (w2 * (wa - mu_a) * (wb - mu_b)).sum()
    c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2
    return float((2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2)))


def test_ssim_map_matches_brute_force(ref: np.ndarray) -> None:
    x = ref + 0.1 * np.random.default_rng(2).standard_normal(ref.shape)
    smap = ssim_map(x, ref, data_range=1.0, axes=(0, 1))
    for i, j, k in [(0, 0, 0), (12, 10, 3), (23, 19, 5), (2, 17, 1)]:
        expect = _brute_ssim_at(x[:, :, k], ref[:, :, k], i, j, 1.0)
        assert smap[i, j, k] == pytest.approx(expect, abs=1e-12)


def test_ssim_interior_matches_monai(ref: np.ndarray) -> None:
    torch = pytest.importorskip("torch")
    from monai.metrics import SSIMMetric

    x = ref + 0.1 * np.random.default_rng(3).standard_normal(ref.shape)
    smap = ssim_map(x, ref, data_range=1.0, axes=(0, 1))
    ours = smap[5:-5, 5:-5, :].mean(axis=(0, 1))
    m = SSIMMetric(spatial_dims=2, data_range=1.0, kernel_type="gaussian", win_size=11, kernel_sigma=1.5)
    # MONAI takes (N, C, H, W): one item per slice.
    xt = torch.from_numpy(np.moveaxis(x, 2, 0)[:, None]).double()
    rt = torch.from_numpy(np.moveaxis(ref, 2, 0)[:, None]).double()
    res = m(xt, rt)
    assert isinstance(res, torch.Tensor)
    theirs = res.numpy().ravel()
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_ssim_identical_and_ordering(ref: np.ndarray) -> None:
    rng = np.random.default_rng(4)
    noise = rng.standard_normal(ref.shape)
    assert ssim(ref, ref) == pytest.approx(1.0, abs=1e-12)
    assert ssim3d(ref, ref) == pytest.approx(1.0, abs=1e-12)
    s_small = ssim(ref + 0.02 * noise, ref)
    s_big = ssim(ref + 0.2 * noise, ref)
    assert 1.0 > s_small > s_big > 0.0
    s3_small = ssim3d(ref + 0.02 * noise, ref)
    s3_big = ssim3d(ref + 0.2 * noise, ref)
    assert 1.0 > s3_small > s3_big > 0.0
    for axis in (0, 1):
        assert ssim(ref + 0.2 * noise, ref, axis=axis) < ssim(ref + 0.02 * noise, ref, axis=axis) < 1.0


def test_ssim_constant_images_by_hand() -> None:
    # Flat images: variances and covariance vanish, SSIM is the luminance term alone.
    ref = np.ones((8, 8, 2))
    x = ref.copy()
    x[:, :, 0] = 0.5
    c1 = 0.01**2
    lum = (2 * 0.5 * 1.0 + c1) / (0.25 + 1.0 + c1)
    assert ssim(x, ref, data_range=1.0) == pytest.approx((lum + 1.0) / 2, abs=1e-12)
    mask = np.zeros(ref.shape, dtype=bool)
    mask[:, :, 0] = True
    assert ssim(x, ref, data_range=1.0, mask=mask) == pytest.approx(lum, abs=1e-12)
    # Per-slice means are averaged with equal weight, whatever the number of masked pixels.
    mask[0, 0, 1] = True
    assert ssim(x, ref, data_range=1.0, mask=mask) == pytest.approx((lum + 1.0) / 2, abs=1e-12)
    # 3D on flat volumes: the luminance term again; a flat x against a flat ref.
    assert ssim3d(np.full((6, 5, 4), 0.5), np.ones((6, 5, 4)), data_range=1.0) == pytest.approx(lum, abs=1e-12)


def test_ssim3d_masked_and_4d(ref: np.ndarray) -> None:
    x = ref + 0.1 * np.random.default_rng(5).standard_normal(ref.shape)
    smap = ssim_map(x, ref, data_range=1.0, axes=(0, 1, 2))
    mask = np.zeros(ref.shape, dtype=bool)
    mask[3:9, 4:7, 2] = True
    assert ssim3d(x, ref, data_range=1.0, mask=mask) == pytest.approx(smap[mask].mean(), abs=1e-12)
    x4 = np.stack([x, ref], axis=-1)
    r4 = np.stack([ref, ref], axis=-1)
    assert ssim3d(x4, r4, data_range=1.0) == pytest.approx((smap.mean() + 1.0) / 2, abs=1e-12)
    assert ssim(x4, r4, data_range=1.0) == pytest.approx((ssim(x, ref, data_range=1.0) + 1) / 2, abs=1e-12)
    with pytest.raises(ValueError, match="3D"):
        ssim(ref[:, :, 0], ref[:, :, 0])


def test_foreground_mask_fills_holes_not_notches() -> None:
    ref = np.zeros((12, 12, 1))
    ref[2:10, 2:10, 0] = 100.0
    ref[4:8, 4:8, 0] = 0.0  # enclosed hole → filled
    ref[2:6, 9, 0] = 0.0  # a notch at the edge: open along -i and +j → stays background
    ref[0, 0, 0] = 5.0  # below 10% of P99 (P99 = 100) → background
    m = foreground_mask(ref)
    assert m[4:8, 4:8, 0].all()
    assert not m[0, 0, 0]
    assert not m[2:6, 9, 0].any()
    assert m.sum() == 64 - 4
    u = np.zeros((12, 12, 1))
    u[2:10, 2:10, 0] = 100.0
    u[2:8, 4:8, 0] = 0.0  # a U open towards -i: the inside is not enclosed along axis 0
    mu = foreground_mask(u)
    assert not mu[2:8, 4:8, 0].any()
    assert mu.sum() == 64 - 24
    cropped = foreground_mask(ref, border=3)
    expect = np.zeros_like(m)
    expect[3:9, 3:9, 0] = True
    np.testing.assert_array_equal(cropped, expect)
    assert not foreground_mask(ref, border=6).any()


def test_evaluate(ref: np.ndarray) -> None:
    rng = np.random.default_rng(6)
    vol = np.zeros((20, 20, 4))
    vol[3:17, 4:16, :] = 1.0 + ref[3:17, 4:16, :4]
    bic = vol + 0.1 * rng.standard_normal(vol.shape)
    sr = vol + 0.03 * rng.standard_normal(vol.shape)
    out = evaluate(sr, bic, vol, scale=2)
    assert tuple(out) == METRIC_KEYS
    assert out["psnr_sr"] > out["psnr_bicubic"]
    assert out["ssim_sr"] > out["ssim_bicubic"]
    assert out["ssim3d_sr"] > out["ssim3d_bicubic"]
    mask = foreground_mask(vol, border=2)
    assert out["psnr_sr_masked"] == pytest.approx(psnr(sr, vol, mask=mask), abs=1e-12)
    assert out["ssim_bicubic_masked"] == pytest.approx(ssim(bic, vol, mask=mask), abs=1e-12)
    same = evaluate(vol, bic, vol, scale=4)
    assert same["psnr_sr"] == math.inf
    assert same["ssim_sr"] == pytest.approx(1.0)
    assert same["ssim_sr_masked"] == pytest.approx(1.0)
    tiny = evaluate(vol[:6, :6], bic[:6, :6], vol[:6, :6], scale=4)
    assert math.isnan(tiny["psnr_sr_masked"])
