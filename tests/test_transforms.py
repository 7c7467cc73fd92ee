"""Normalisation and the MONAI wrappers: recorded, invertible, identical to the plain functions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrisr.degradation import downsample, upsample
from mrisr.monai_transforms import Degraded, PercentileNormalize, PercentileNormalized
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
    d = PercentileNormalized(["img"])({"img": x, "other": 1})
    np.testing.assert_allclose(d["img"], fit_normalization(x).apply(x))
    np.testing.assert_allclose(PercentileNormalize()(x), d["img"])
    hr = torch.from_numpy(rng.random((1, 16, 12)).astype(np.float32))
    out = Degraded("hr", "inp", (4, 4), "box")({"hr": hr})
    np.testing.assert_allclose(out["inp"].numpy(), upsample(downsample(hr[None], (4, 4), "box"), (16, 12))[0].numpy())
    assert out["inp"].shape == hr.shape


@pytest.mark.parametrize("signed", [False, True])
def test_percentile_normalize_is_the_plain_rule_bit_for_bit_and_inverts(signed: bool) -> None:
    rng = np.random.default_rng(2)
    x = (rng.random((20, 18, 6)) * 900 - (300 if signed else 0)).astype(np.int16)
    plain = fit_normalization(x)
    t = PercentileNormalized(["img"])
    d = t({"img": x, "other": 7})
    assert d["img"].dtype == np.float32 and d["other"] == 7
    np.testing.assert_array_equal(d["img"], plain.apply(x))  # identical float32, not merely close
    np.testing.assert_array_equal(PercentileNormalize()(x), plain.apply(x))
    assert t.normalization(d, "img") == plain
    assert plain.offset != 0.0 if signed else plain.offset == 0.0  # both branches of the rule
    back = t.inverse(d)
    assert back["img"].dtype == np.float32
    np.testing.assert_array_equal(back["img"], plain.invert(plain.apply(x)))
    np.testing.assert_allclose(back["img"], x, atol=1e-3 * float(np.abs(x).max()))
    assert back["img_transforms"] == []  # the record is used up
    with pytest.raises(RuntimeError):  # another instance did not record it
        PercentileNormalized(["img"]).inverse(t({"img": x}))


def test_mrisr_transform_names_do_not_clash_with_monai() -> None:
    import monai.transforms

    import mrisr.monai_transforms as ours

    names = {
        n for n in vars(ours) if isinstance(getattr(ours, n), type) and getattr(ours, n).__module__ == ours.__name__
    }
    assert names == {"Degrade", "Degraded", "PercentileNormalize", "PercentileNormalized", "SliceStack", "SliceStackd"}
    assert not names & set(dir(monai.transforms))


def test_slice_stack_is_a_view_and_inverts() -> None:
    from mrisr.monai_transforms import SliceStack, SliceStackd

    x = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    for axis in (0, 1, 2):
        t = SliceStack(axis)
        stack = t(x)
        others = [n for a, n in enumerate(x.shape) if a != axis]
        assert stack.shape == (x.shape[axis], *others)
        np.testing.assert_array_equal(stack[3], np.take(x, 3, axis=axis))  # slice 3 across the axis
        assert np.shares_memory(stack, x)
        np.testing.assert_array_equal(t.inverse(stack), x)
    refined = SliceStack(1).inverse(np.zeros((5, 8, 12), np.float32))  # refined slices go back in place
    assert refined.shape == (8, 5, 12)
    d = SliceStackd(["img"], 2)({"img": x, "other": 1})
    assert d["img"].shape == (6, 4, 5) and d["other"] == 1
    np.testing.assert_array_equal(SliceStackd(["img"], 2).inverse(d)["img"], x)
    with pytest.raises(ValueError, match="0, 1 or 2"):
        SliceStack(3)


def test_inference_and_training_cut_slices_with_the_same_transform(monkeypatch: pytest.MonkeyPatch) -> None:
    from mrisr.inference import super_resolve_array
    from mrisr.monai_transforms import SliceStack
    from mrisr.training import PatchDataset, TrainConfig
    from mrisr.training.data import Piece

    axes: list[int] = []
    real = SliceStack.__call__

    def counting(self: SliceStack, data: np.ndarray) -> np.ndarray:
        axes.append(self.axis)
        return real(self, data)

    monkeypatch.setattr(SliceStack, "__call__", counting)
    x = np.random.default_rng(0).random((6, 5, 4)).astype(np.float32)
    super_resolve_array(None, x, (2, 2, 1), axis=2)
    assert axes == [2]
    axes.clear()
    cfg = TrainConfig(scale=2, patch_size=4, augment=False, device="cpu")
    ds = PatchDataset([Piece(x, (0,), 0.1)], cfg, length=2)
    ds[0]
    assert axes and set(axes) == {0}
