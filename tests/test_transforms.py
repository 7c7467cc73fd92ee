"""Normalisation and the MONAI wrappers: recorded, invertible, identical to the plain functions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrisr.degradation import downsample, upsample
from mrisr.monai_transforms import Degraded, NormalizeIntensity, NormalizeIntensityd
from mrisr.transforms import fit_normalization


def test_normalization_maps_foreground_percentile_to_one_and_inverts() -> None:
    rng = np.random.default_rng(0)
    x = np.zeros((40, 40, 10), np.float32)
    x[10:30, 10:30] = rng.uniform(100, 200, (20, 20, 10))
    norm = fit_normalization(x)
    assert norm.offset == 0.0
    fg = x[x > 0]
    assert norm.scale == pytest.approx(np.percentile(fg, 99.5), rel=1e-4)
    np.testing.assert_allclose(norm.invert(norm.apply(x)), x, rtol=1e-5, atol=1e-3)
    assert norm.to_dict()["method"] == "percentile"


def test_normalization_of_signed_data_and_constants() -> None:
    x = np.linspace(-50, 150, 1000, dtype=np.float32).reshape(10, 10, 10)
    norm = fit_normalization(x)
    assert norm.offset == pytest.approx(np.percentile(x, 0.5), rel=1e-4)
    assert fit_normalization(np.full((3, 3, 3), 5.0)).constant
    with pytest.raises(ValueError, match="NaN"):
        fit_normalization(np.array([[[1.0, np.nan]]]))


def test_monai_wrappers_equal_plain_functions() -> None:
    rng = np.random.default_rng(1)
    x = rng.random((16, 12, 4)).astype(np.float32) * 300
    d = NormalizeIntensityd(["img"])({"img": x, "other": 1})
    np.testing.assert_allclose(d["img"], fit_normalization(x).apply(x))
    np.testing.assert_allclose(NormalizeIntensity()(x), d["img"])
    hr = torch.from_numpy(rng.random((1, 16, 12)).astype(np.float32))
    out = Degraded("hr", "inp", (4, 4), "box")({"hr": hr})
    np.testing.assert_allclose(out["inp"].numpy(), upsample(downsample(hr[None], (4, 4), "box"), (16, 12))[0].numpy())
    assert out["inp"].shape == hr.shape
