"""Grid geometry: affines of refined and coarsened grids, voxel spacing, world coordinates.

All affines are 4×4 matrices that map voxel indices ``(i, j, k, 1)`` to RAS world coordinates in mm
(see :mod:`mrisr.io` for the volume contract). Indices refer to voxel *centres*.

Refining a grid by an integer factor ``f`` along an axis keeps the field of view: the ``f`` new voxels
tile the old one exactly, so new voxel ``i`` has its centre at old (fractional) index

    ``(i + 0.5) / f - 0.5``

which is the convention of ``torch.nn.functional.interpolate(..., align_corners=False)``, of
antialiased downsampling by block averaging, and of ``docs/geometry.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Factors = tuple[int, int, int]


def as_factors(scale: int | Sequence[int]) -> Factors:
    """Normalise a scale to three positive integer factors (one per voxel axis).

    Args:
        scale: One integer for an in-plane scale of axes 0 and 1 (``4`` means ``(4, 4, 1)``), or three.

    Returns:
        A tuple ``(f0, f1, f2)``.

    Raises:
        ValueError: If a factor is not a positive integer or the count is not 1 or 3.
    """
    if isinstance(scale, (int, np.integer)):
        factors = (int(scale), int(scale), 1)
    else:
        vals = [int(s) for s in scale]
        if len(vals) == 1:
            factors = (vals[0], vals[0], 1)
        elif len(vals) == 3:
            factors = (vals[0], vals[1], vals[2])
        else:
            raise ValueError(f"scale needs 1 or 3 factors, got {len(vals)}")
    if any(f < 1 for f in factors):
        raise ValueError(f"scale factors must be positive integers, got {factors}")
    return factors


def in_plane(factor: int, axis: int = 2) -> Factors:
    """Factors refining the two axes other than ``axis`` (the plane of slices cut across it)."""
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    return tuple(1 if a == axis else int(factor) for a in range(3))  # type: ignore[return-value]


def parse_scale(text: str) -> Factors:
    """Parse ``"4"`` or ``"4,4,1"`` (as given on the command line) into three factors."""
    try:
        parts = [int(p) for p in text.replace("x", ",").split(",") if p.strip()]
    except ValueError as exc:
        raise ValueError(f"scale must be an integer or three comma-separated integers, got {text!r}") from exc
    return as_factors(parts[0] if len(parts) == 1 else parts)


def refine_affine(affine: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Affine of the grid refined by integer ``factors`` per axis, with the field of view kept.

    Args:
        affine: 4×4 voxel-to-world affine of the coarse grid.
        factors: Integer refinement per voxel axis (``len == 3``).

    Returns:
        The 4×4 affine of the fine grid: fine voxel ``i`` lies at coarse index ``(i + 0.5) / f - 0.5``.
    """
    f = np.asarray(factors, dtype=np.float64)
    step = np.eye(4)
    step[:3, :3] = np.diag(1.0 / f)
    step[:3, 3] = 0.5 / f - 0.5
    return np.asarray(affine, dtype=np.float64) @ step


def coarsen_affine(affine: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Affine of the grid coarsened by integer ``factors`` (inverse of :func:`refine_affine`).

    Coarse voxel ``i`` covers fine voxels ``f*i ... f*i + f - 1``; its centre is at fine index
    ``f * i + (f - 1) / 2``.
    """
    f = np.asarray(factors, dtype=np.float64)
    step = np.eye(4)
    step[:3, :3] = np.diag(f)
    step[:3, 3] = (f - 1.0) / 2.0
    return np.asarray(affine, dtype=np.float64) @ step


def refined_shape(shape: Sequence[int], factors: Sequence[int]) -> tuple[int, ...]:
    """Shape of the refined grid: the first three axes multiplied by their factors, the rest kept."""
    return tuple(int(n) * int(f) for n, f in zip(shape[:3], factors, strict=True)) + tuple(shape[3:])


def voxel_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along each voxel axis (norm of the affine's columns)."""
    cols = np.asarray(affine, dtype=np.float64)[:3, :3]
    return tuple(float(v) for v in np.sqrt((cols**2).sum(axis=0)))  # type: ignore[return-value]


def voxel_to_world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """World coordinates (mm, RAS) of voxel indices.

    Args:
        affine: 4×4 voxel-to-world affine.
        ijk: Indices, shape ``(..., 3)``.

    Returns:
        Coordinates, shape ``(..., 3)``.
    """
    pts = np.asarray(ijk, dtype=np.float64)
    a = np.asarray(affine, dtype=np.float64)
    return pts @ a[:3, :3].T + a[:3, 3]


def corner_world(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """World coordinates of the 8 corner voxel *centres* of a grid, shape ``(8, 3)``."""
    n = [int(s) - 1 for s in shape[:3]]
    corners = np.array([[i, j, k] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])], dtype=float)
    return voxel_to_world(affine, corners)


def fov_corner_world(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """World coordinates of the 8 outer corners of the field of view (voxel edges), shape ``(8, 3)``.

    Refining a grid with :func:`refine_affine` keeps these exactly.
    """
    n = [int(s) - 0.5 for s in shape[:3]]
    corners = np.array([[i, j, k] for i in (-0.5, n[0]) for j in (-0.5, n[1]) for k in (-0.5, n[2])], dtype=float)
    return voxel_to_world(affine, corners)


def untouched_axes(
    affine_in: np.ndarray, shape_in: Sequence[int], affine_out: np.ndarray, shape_out: Sequence[int]
) -> tuple[bool, bool, bool]:
    """Per voxel axis, whether the output grid keeps it as the input had it: the same voxel count,
    and the voxel map ``inv(A_in) · A_out`` leaves that index unchanged (same spacing and start).

    An axis refined by :func:`refine_affine`, coarsened or cropped is not untouched; in-plane
    refinement leaves the slice axis untouched.
    """
    vox = np.linalg.solve(np.asarray(affine_in, dtype=np.float64), np.asarray(affine_out, dtype=np.float64))
    out = []
    for a in range(3):
        unit = np.zeros(3)
        unit[a] = 1.0
        same = np.allclose(vox[:3, a], unit, atol=1e-6) and abs(vox[a, 3]) < 1e-6
        out.append(bool(same and int(shape_in[a]) == int(shape_out[a])))
    return (out[0], out[1], out[2])


#: The largest integer refinement per axis that mrisr serves (thick slices up to ×6).
MAX_FACTOR = 6
#: Relative tolerance under which a spacing ratio counts as an integer (2.0001 mm → 1 mm is ×2).
RATIO_TOLERANCE = 1e-3


def factors_for_spacing(spacing: Sequence[float], target: Sequence[float]) -> Factors:
    """Integer factors that make each axis at least as fine as ``target`` (mm).

    ``f = ceil(spacing / target)``, where a ratio within :data:`RATIO_TOLERANCE` (relative) of an
    integer counts as that integer: 2.2 mm → 1 mm is ×3 (then resampled onto the 1 mm grid by
    :func:`target_grid`), 2 mm → 1 mm is ×2 exactly.

    Raises:
        ValueError: A target coarser than the spacing on an axis, or a factor above :data:`MAX_FACTOR`.
    """
    out = []
    for a, (s, t) in enumerate(zip(spacing, target, strict=True)):
        if not (math.isfinite(s) and math.isfinite(t) and s > 0 and t > 0):
            raise ValueError(f"spacing {s:g} mm and target {t:g} mm along axis {a} must be positive and finite")
        # A tiny target (1e-310 mm) overflows the ratio to inf: it asks for more than MAX_FACTOR anyway.
        ratio = float(s) / float(t)
        if not ratio <= MAX_FACTOR + 1:
            raise ValueError(
                f"target spacing {t:g} mm needs more than ×{MAX_FACTOR} along axis {a} (voxel spacing {s:g} mm); "
                f"at most ×{MAX_FACTOR} is served"
            )
        if ratio < 1 - RATIO_TOLERANCE:
            raise ValueError(
                f"target spacing {t:g} mm is coarser than the voxel spacing {s:g} mm along axis {a} "
                "(mrisr only refines grids)"
            )
        near = round(ratio)
        f = int(near) if abs(ratio - near) <= RATIO_TOLERANCE * ratio else int(np.ceil(ratio))
        if f > MAX_FACTOR:
            raise ValueError(
                f"target spacing {t:g} mm needs ×{f} along axis {a} (voxel spacing {s:g} mm); "
                f"at most ×{MAX_FACTOR} is served"
            )
        out.append(max(1, f))
    return (out[0], out[1], out[2])


def target_grid(
    affine: np.ndarray, shape: Sequence[int], target: Sequence[float]
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The grid of ``target`` spacing (mm) inside the field of view of a grid.

    Along each axis of ``n`` voxels of ``s`` mm (field of view ``n·s``, from voxel edge to voxel
    edge) the target grid has ``m = floor(n·s / t)`` voxels of ``t`` mm (at least one), **centred** in
    the field of view: the ``n·s − m·t`` mm that ``t`` does not divide are left out, half at each
    end. Target voxel ``i`` has its centre at (fractional) index of the input grid

        ``((n·s − m·t) / 2 + (i + 0.5)·t) / s − 0.5``

    (voxel centres, as in :func:`refine_affine`; an axis where ``t`` equals ``s`` is unchanged).
    Directions are kept; only the step along each axis changes.

    Returns:
        ``(affine, shape)`` of the target grid.
    """
    a = np.asarray(affine, dtype=np.float64)
    spacing = voxel_spacing(a)
    step = np.eye(4)
    dims = []
    for ax in range(3):
        n, s, t = int(shape[ax]), spacing[ax], float(target[ax])
        if abs(s - t) <= RATIO_TOLERANCE * t:
            dims.append(n)
            continue
        m = max(1, int(np.floor(n * s / t + RATIO_TOLERANCE)))
        step[ax, ax] = t / s
        step[ax, 3] = ((n * s - m * t) / 2 + 0.5 * t) / s - 0.5
        dims.append(m)
    return a @ step, (dims[0], dims[1], dims[2])


def grid_positions(affine_from: np.ndarray, affine_to: np.ndarray, shape_to: Sequence[int]) -> list[np.ndarray]:
    """Per axis, the (fractional) indices of grid ``from`` at the voxel centres of grid ``to``.

    The two grids must share directions (one grid refines or resamples the other axis by axis), so
    each axis maps on its own: ``from`` index ``= (A_from⁻¹ · A_to)[a, a] · i + (A_from⁻¹ · A_to)[a, 3]``.

    Raises:
        ValueError: The grids are not aligned axis by axis.
    """
    rel = np.linalg.inv(np.asarray(affine_from, dtype=np.float64)) @ np.asarray(affine_to, dtype=np.float64)
    off_diag = rel[:3, :3] - np.diag(np.diag(rel[:3, :3]))
    if np.abs(off_diag).max() > 1e-6:
        raise ValueError("grids are not aligned axis by axis")
    return [rel[a, a] * np.arange(int(shape_to[a])) + rel[a, 3] for a in range(3)]
