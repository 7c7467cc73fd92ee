"""Grid geometry: refine/coarsen conventions, spacing, corners."""

from __future__ import annotations

import numpy as np
import pytest

from mrisr.geometry import (
    as_factors,
    coarsen_affine,
    corner_world,
    fov_corner_world,
    parse_scale,
    refine_affine,
    refined_shape,
    voxel_spacing,
    voxel_to_world,
)

OBLIQUE = np.array(
    [
        [0.0, -1.2, 0.5, 10.0],
        [2.0, 0.0, 0.0, -3.0],
        [0.0, 0.3, 3.9, 7.5],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def test_refine_4mm_by_4_gives_1mm_voxels_shifted_by_minus_1_5mm() -> None:
    coarse = np.diag([4.0, 4.0, 4.0, 1.0])
    coarse[:3, 3] = (100.0, -20.0, 8.0)
    fine = refine_affine(coarse, (4, 4, 4))
    np.testing.assert_allclose(fine[:3, :3], np.eye(3))
    np.testing.assert_allclose(fine[:3, 3], (98.5, -21.5, 6.5))


def test_refine_in_plane_only_keeps_third_axis() -> None:
    fine = refine_affine(OBLIQUE, (2, 3, 1))
    np.testing.assert_allclose(fine[:3, 2], OBLIQUE[:3, 2])
    np.testing.assert_allclose(fine[:3, 0], OBLIQUE[:3, 0] / 2)
    np.testing.assert_allclose(fine[:3, 1], OBLIQUE[:3, 1] / 3)


@pytest.mark.parametrize("factors", [(2, 2, 1), (4, 4, 4), (3, 1, 5)])
def test_fine_voxel_centre_lies_at_coarse_index_convention(factors: tuple[int, int, int]) -> None:
    fine = refine_affine(OBLIQUE, factors)
    f = np.array(factors, dtype=float)
    fine_idx = np.array([[0, 0, 0], [1, 2, 3], [7, 5, 4]], dtype=float)
    coarse_idx = (fine_idx + 0.5) / f - 0.5
    np.testing.assert_allclose(voxel_to_world(fine, fine_idx), voxel_to_world(OBLIQUE, coarse_idx), atol=1e-12)


@pytest.mark.parametrize("factors", [(2, 2, 1), (4, 4, 4), (3, 1, 5)])
def test_refine_keeps_field_of_view_corners(factors: tuple[int, int, int]) -> None:
    shape = (6, 5, 4)
    fine = refine_affine(OBLIQUE, factors)
    np.testing.assert_allclose(
        fov_corner_world(fine, refined_shape(shape, factors)), fov_corner_world(OBLIQUE, shape), atol=1e-9
    )
    # the voxel-centre corners move inwards (half a fine voxel from the edge), so they differ
    assert not np.allclose(corner_world(fine, refined_shape(shape, factors)), corner_world(OBLIQUE, shape))


@pytest.mark.parametrize("factors", [(2, 2, 1), (4, 4, 4), (3, 1, 5)])
def test_coarsen_inverts_refine(factors: tuple[int, int, int]) -> None:
    np.testing.assert_allclose(coarsen_affine(refine_affine(OBLIQUE, factors), factors), OBLIQUE, atol=1e-12)
    np.testing.assert_allclose(refine_affine(coarsen_affine(OBLIQUE, factors), factors), OBLIQUE, atol=1e-12)


def test_coarse_voxel_centre_is_mean_of_its_fine_voxels() -> None:
    coarse = coarsen_affine(OBLIQUE, (3, 2, 1))
    fine_centres = voxel_to_world(OBLIQUE, np.array([[i, j, 0] for i in range(3) for j in range(2)], dtype=float))
    np.testing.assert_allclose(voxel_to_world(coarse, np.zeros(3)), fine_centres.mean(axis=0), atol=1e-12)


def test_refined_shape_keeps_extra_axes() -> None:
    assert refined_shape((6, 5, 4, 3), (2, 3, 1)) == (12, 15, 4, 3)


def test_voxel_spacing_of_rotated_affine() -> None:
    assert voxel_spacing(OBLIQUE) == pytest.approx((2.0, np.hypot(1.2, 0.3), np.hypot(0.5, 3.9)))


def test_corner_world_of_axis_aligned_grid() -> None:
    a = np.diag([2.0, 3.0, 4.0, 1.0])
    corners = corner_world(a, (2, 3, 4))
    assert corners.shape == (8, 3)
    np.testing.assert_allclose(corners.min(axis=0), (0, 0, 0))
    np.testing.assert_allclose(corners.max(axis=0), (2.0, 6.0, 12.0))
    np.testing.assert_allclose(fov_corner_world(a, (2, 3, 4)).max(axis=0), (3.0, 7.5, 14.0))


def test_scale_parsing() -> None:
    assert as_factors(4) == (4, 4, 1)
    assert as_factors([2]) == (2, 2, 1)
    assert parse_scale("2,3,1") == (2, 3, 1)
    assert parse_scale("3") == (3, 3, 1)
    with pytest.raises(ValueError, match="positive"):
        as_factors((2, 0, 1))
    with pytest.raises(ValueError, match="1 or 3"):
        as_factors((2, 2))
    with pytest.raises(ValueError, match="integer"):
        parse_scale("two")
