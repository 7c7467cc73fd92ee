"""Thick slices: the refined output is made to agree with the input's slices (``match_slices``),
with block means for contiguous slices and the stated slice profile otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrisr.adapt.one_axis import match_slices, profile_matrix
from mrisr.cli import main


def _smooth(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    x = rng.normal(size=shape).cumsum(axis=2).cumsum(axis=0)
    return (x - x.min()).astype(np.float32)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_block_means_equal_the_input_and_truth_gets_closer(axis: int) -> None:
    rng = np.random.default_rng(0)
    truth = _smooth(rng, (12, 15, 18))
    factors = tuple(3 if a == axis else 1 for a in range(3))
    moved = np.moveaxis(truth, axis, -1)
    thick = np.moveaxis(moved.reshape(*moved.shape[:-1], -1, 3).mean(-1), -1, axis)
    guess = truth + rng.normal(scale=2.0, size=truth.shape).astype(np.float32)
    before = float(np.mean((guess - truth) ** 2))
    out = match_slices(guess, thick, factors)
    assert out is guess  # in place
    moved = np.moveaxis(out, axis, -1)
    means = np.moveaxis(moved.reshape(*moved.shape[:-1], -1, 3).mean(-1), -1, axis)
    np.testing.assert_allclose(means, thick, atol=1e-4)
    # Projection onto a set that holds the truth: the error drops (by about the 1/3 share of the
    # noise that lives in the block means).
    after = float(np.mean((out - truth) ** 2))
    assert after < 0.75 * before


def test_stated_profile_with_a_gap_is_matched() -> None:
    rng = np.random.default_rng(1)
    truth = _smooth(rng, (6, 7, 20))
    p = profile_matrix(20, 4, 2.0).numpy()  # slices half as thick as their spacing (a gap)
    thick = truth @ p.T
    guess = truth + rng.normal(scale=1.0, size=truth.shape).astype(np.float32)
    out = match_slices(guess.copy(), thick, (1, 1, 4), profile=(1.0, 1.0, 0.5))
    np.testing.assert_allclose(out @ p.T, thick, rtol=1e-4, atol=1e-3)
    # Only the voxels the profile sees move: fine voxels in the gaps (0 and 3 of each 4) stay.
    moved = np.abs(out - guess).reshape(6, 7, 5, 4).max(axis=(0, 1, 2))
    assert moved[0] < 1e-5 and moved[3] < 1e-5 and moved[1] > 1e-3 and moved[2] > 1e-3


def test_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="expected 4 × 3"):
        match_slices(np.zeros((2, 2, 11), np.float32), np.zeros((2, 2, 4), np.float32), (1, 1, 3))


@pytest.mark.parametrize(("args", "fallback"), [(["--no-adapt"], None), (["--adapt-steps", "2"], "bicubic")])
def test_enhance_thick_slices_output_averages_back_to_the_input(
    tmp_path: Path, args: list[str], fallback: str | None
) -> None:
    """The network's output (``--no-adapt``) and the bicubic fallback (an adaptation of 2 steps is
    rejected on this rough phantom) both come out slice-consistent."""
    rng = np.random.default_rng(2)
    fine = _smooth(rng, (32, 32, 24))
    fine = fine / fine.max() * 800 + 100
    thick = fine.reshape(32, 32, 8, 3).mean(-1).astype(np.float32)
    src = tmp_path / "thick.nii.gz"
    nib.save(nib.Nifti1Image(thick, np.diag([1.0, 1.0, 3.0, 1.0])), str(src))
    out = tmp_path / "out"
    code = main(["enhance", str(src), "--out", str(out), "--scale", "1,1,3", "--no-figure", "--device", "cpu",
                 "--ensemble", "1", *args])  # fmt: skip
    assert code == 0
    sr = np.asarray(nib.load(str(out / "thick_sr.nii.gz")).dataobj, dtype=np.float64)
    side = json.loads((out / "thick_sr.json").read_text())
    assert side["adapt"]["slice_consistency"] == {"profile_width": 3.0}  # recorded with --no-adapt too
    assert side["adapt"].get("fallback") == fallback
    # Clamping to the input's range may move a few voxels; the block means agree elsewhere.
    means = sr.reshape(32, 32, 8, 3).mean(-1)
    assert np.median(np.abs(means - thick)) < 1e-3 * 800
