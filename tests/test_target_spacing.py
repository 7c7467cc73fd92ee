"""``--target-spacing``: factors from the header, the centred target grid and the resampling onto it.

Expected world coordinates are computed here from the voxel directions and lengths in mm (edge of
the field of view plus half-voxels), not with the affine algebra of :mod:`mrisr.geometry`.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import GRIDS

from mrisr.geometry import factors_for_spacing, fov_corner_world, target_grid, voxel_to_world
from mrisr.resample import resample_to_grid


def _directions(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cols = affine[:3, :3]
    lengths = np.linalg.norm(cols, axis=0)
    return cols / lengths, lengths


def _expected_centre(affine: np.ndarray, shape: tuple[int, ...], target: tuple[float, ...], idx: tuple[int, ...]):
    """World position of target voxel ``idx``: from the input's first FOV corner, walk along each
    direction by the left-out margin plus ``(i + 0.5)`` target voxels."""
    units, lengths = _directions(affine)
    corner = affine[:3, 3] - 0.5 * (units * lengths).sum(axis=1)  # outer corner of voxel (0, 0, 0)
    pos = corner.copy()
    for a in range(3):
        fov = shape[a] * lengths[a]
        m = int(np.floor(fov / target[a] + 1e-3))
        margin = (fov - m * target[a]) / 2
        pos += units[:, a] * (margin + (idx[a] + 0.5) * target[a])
    return pos


def test_factors_round_up_non_integer_ratios() -> None:
    assert factors_for_spacing((2.0, 2.0, 2.2), (1.0, 1.0, 1.0)) == (2, 2, 3)
    assert factors_for_spacing((2.0, 2.0, 5.0), (1.0, 1.0, 1.0)) == (2, 2, 5)
    assert factors_for_spacing((1.0, 1.0, 4.0), (1.0, 1.0, 1.0)) == (1, 1, 4)
    assert factors_for_spacing((2.0002, 1.0, 1.0), (1.0, 1.0, 1.0)) == (2, 1, 1)  # header rounding


@pytest.mark.parametrize(
    ("spacing", "target", "why"),
    [((2.0, 2.0, 2.0), (3.0, 1.0, 1.0), "coarser"), ((1.0, 1.0, 7.0), (1.0, 1.0, 1.0), "at most")],
)
def test_factors_refuse_what_cannot_be_served(spacing, target, why) -> None:
    with pytest.raises(ValueError, match=why):
        factors_for_spacing(spacing, target)


@pytest.mark.parametrize("grid", ["oblique", "lps", "sagittal", "left_handed"])
def test_target_grid_corner_and_centre_voxels(grid: str) -> None:
    shape, affine = GRIDS[grid]
    target = (0.5, 0.4, 1.0)
    aff_t, shape_t = target_grid(affine, shape, target)
    _, lengths = _directions(affine)
    # the number of voxels is floor(fov / t) on every axis
    assert shape_t == tuple(int(np.floor(n * s / t + 1e-3)) for n, s, t in zip(shape, lengths, target, strict=True))
    assert np.allclose(np.linalg.norm(aff_t[:3, :3], axis=0), target)
    for idx in [(0, 0, 0), tuple(n - 1 for n in shape_t), (0, shape_t[1] - 1, 0), tuple(n // 2 for n in shape_t)]:
        got = voxel_to_world(aff_t, np.array(idx, dtype=float))
        assert np.allclose(got, _expected_centre(affine, shape, target, idx), atol=1e-9), idx


def test_target_grid_worked_example_of_the_docs() -> None:
    """docs/geometry.md: 2 × 2 × 2.2 mm, 4 × 4 × 7 voxels, first centre at (10, 20, 30) mm → 1 mm."""
    affine = np.diag([2.0, 2.0, 2.2, 1.0])
    affine[:3, 3] = (10.0, 20.0, 30.0)
    aff_t, shape_t = target_grid(affine, (4, 4, 7), (1.0, 1.0, 1.0))
    assert shape_t == (8, 8, 15)  # 15.4 mm of slices hold 15 whole 1 mm voxels
    # FOV along k: 28.9 ... 44.3 mm; 0.4 mm left out, 0.2 at each end: first centre 28.9 + 0.2 + 0.5
    assert np.allclose(voxel_to_world(aff_t, np.array([0, 0, 0.0])), (9.5, 19.5, 29.6))
    assert np.allclose(voxel_to_world(aff_t, np.array([7, 7, 14.0])), (16.5, 26.5, 43.6))
    fov_in = fov_corner_world(affine, (4, 4, 7))
    fov_out = fov_corner_world(aff_t, shape_t)
    assert np.allclose(fov_out.min(axis=0) - fov_in.min(axis=0), (0, 0, 0.2))
    assert np.allclose(fov_in.max(axis=0) - fov_out.max(axis=0), (0, 0, 0.2))


def test_exact_ratio_keeps_the_refined_grid() -> None:
    """An integer ratio gives the grid of mrisr.geometry.refine_affine itself (nothing resampled)."""
    from mrisr.geometry import refine_affine

    shape, affine = GRIDS["oblique"]
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    target = tuple(spacing / (2, 1, 5))
    aff_t, shape_t = target_grid(affine, shape, target)
    assert shape_t == (shape[0] * 2, shape[1], shape[2] * 5)
    assert np.allclose(aff_t, refine_affine(affine, (2, 1, 5)))


def test_resample_is_exact_on_linear_ramps_and_keeps_constants() -> None:
    """A linear function of world position is reproduced at the target centres (inside the FOV,
    away from the replicated edges) to 2 % of its change per source voxel — the stretched kernel's
    sampled weights are not exactly symmetric — and a constant stays constant."""
    shape, affine = GRIDS["oblique"]
    from mrisr.geometry import refine_affine

    fine = refine_affine(affine, (1, 1, 3))
    fshape = (shape[0], shape[1], shape[2] * 3)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in fshape], indexing="ij"), axis=-1).astype(float)
    world = voxel_to_world(fine, ijk)
    grad = np.array([0.3, -0.2, 0.7])
    ramp = (world @ grad).astype(np.float32)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    target = (spacing[0], spacing[1], 1.0)
    aff_t, shape_t = target_grid(affine, shape, target)
    out = resample_to_grid(ramp, fine, aff_t, shape_t)
    tijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape_t], indexing="ij"), axis=-1).astype(float)
    want = voxel_to_world(aff_t, tijk) @ grad
    inner = (slice(None), slice(None), slice(3, shape_t[2] - 3))
    per_voxel = abs(float(fine[:3, 2] @ grad))
    assert np.abs(out[inner] - want[inner]).max() < 0.02 * per_voxel
    # the control: a grid off by a tenth of a target voxel misses by far more
    assert np.abs(out[inner] - (want[inner] + 0.1 * float(aff_t[:3, 2] @ grad))).max() > 0.05 * per_voxel
    const = resample_to_grid(np.full((*fshape, 2), 7.5, np.float32), fine, aff_t, shape_t)
    assert const.shape == (*shape_t, 2)
    assert np.allclose(const, 7.5)
