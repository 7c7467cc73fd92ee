"""The pieces of benchmarks/bench_peers.py that its figures rest on: slice profiles and grid mapping."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_peers


def test_profiles_are_the_stated_kernels() -> None:
    box = bench_peers.profile_matrix(15, 3, "box")
    gap = bench_peers.profile_matrix(15, 3, "gap")
    gauss = bench_peers.profile_matrix(15, 3, "gauss")
    for p in (box, gap, gauss):
        assert p.shape == (5, 15)
        np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(box[2, 6:9], 1 / 3)
    assert box[2].sum() == pytest.approx(box[2, 6:9].sum())
    # a slab 2 voxels thick centred on the block of 3: overlaps 1/2, 1, 1/2 (ECLARE's rect of width 2)
    np.testing.assert_allclose(gap[2, 5:10], [0, 0.25, 0.5, 0.25, 0])
    # Gaussian of FWHM 3 voxels centred on voxel 7, taps to +-3: half the peak at +-1.5 voxels
    d = np.arange(-3, 4)
    w = np.exp(-4 * np.log(2) * d**2 / 9.0)
    np.testing.assert_allclose(gauss[2, 4:11], w / w.sum())
    assert gauss[2, :4].sum() == 0 and gauss[2, 11:].sum() == 0


def test_degrade_box_is_the_block_mean_rounded() -> None:
    hr = np.arange(2 * 2 * 6, dtype=np.int16).reshape(2, 2, 6) * 7
    lr = bench_peers.degrade(hr, 3, "box")
    assert lr.dtype == np.int16
    np.testing.assert_array_equal(lr, np.rint(hr.reshape(2, 2, 2, 3).mean(axis=3)))


def test_outputs_are_mapped_through_world_coordinates() -> None:
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(4, 5, 6))
    truth_aff = np.diag([2.0, 2.0, 1.0, 1.0])
    # the same voxels stored with axes 0 and 1 reversed (as a RAS output of an LPS series)
    flipped = truth[::-1, ::-1]
    aff = truth_aff @ np.array([[-1, 0, 0, 3], [0, -1, 0, 4], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    np.testing.assert_array_equal(bench_peers.on_truth_grid(flipped, aff, truth_aff, truth.shape), truth)
    # half a voxel off along the slices is refused, not scored
    shifted = truth_aff @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0.5], [0, 0, 0, 1.0]])
    with pytest.raises(RuntimeError, match="not the truth's"):
        bench_peers.on_truth_grid(truth, shifted, truth_aff, truth.shape)
