"""Volumes turned for display: radiological convention, found with nibabel's orientation tools.

A volume ``(i, j, k)`` with its RAS affine (see :mod:`mrisr.io`) is first turned, by flips and
axis permutations only (``nibabel.orientations.io_orientation`` / ``ornt_transform`` /
``apply_orientation``; views, no copies, no resampling), so that its array axes run towards patient
Right, Anterior and Superior. An oblique grid takes the voxel axes nearest to those directions; its
letters are then approximate (the figure says so).

A display plane fixes one of these axes (:data:`PLANES`) and is returned as a 2D image whose row 0 is
the top of the screen and column 0 its left edge, in the radiological convention:

========  ==========  =====  ==========  ==========
plane     fixed axis  top    left edge   right edge
========  ==========  =====  ==========  ==========
axial     S           A      R           L
coronal   A           S      R           L
sagittal  R           S      A           P
========  ==========  =====  ==========  ==========

(patient left on the image right for axial and coronal views, as on a scanner console).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

#: Display planes: name → the RAS axis it fixes (0: R, 1: A, 2: S).
PLANES: dict[str, int] = {"axial": 2, "coronal": 1, "sagittal": 0}
_POSITIVE = "RAS"
_NEGATIVE = "LPI"


@dataclass(frozen=True)
class Display:
    """How a voxel grid is turned for display.

    Attributes:
        transform: nibabel orientation transform from the voxel axes to RAS axes (``(3, 2)``:
            target axis, flip) as ``ornt_transform`` returns it.
        shape: Shape of the turned (RAS-ordered) 3D array.
        spacing: Voxel size along each RAS array axis, mm.
        oblique: True when a voxel axis is more than 1° off the patient axis it was matched to.
    """

    transform: np.ndarray
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    oblique: bool

    @classmethod
    def of(cls, affine: np.ndarray, shape: tuple[int, ...]) -> Display:
        """The display of a grid of ``shape`` (the first three axes) with this RAS ``affine``."""
        a = np.asarray(affine, dtype=np.float64)
        ornt = io_orientation(a)
        transform = ornt_transform(ornt, axcodes2ornt(_POSITIVE))
        sizes = np.sqrt((a[:3, :3] ** 2).sum(axis=0))
        out_shape = [0, 0, 0]
        out_spacing = [0.0, 0.0, 0.0]
        for vox_axis, (ras_axis, _) in enumerate(ornt):
            out_shape[int(ras_axis)] = int(shape[vox_axis])
            out_spacing[int(ras_axis)] = float(sizes[vox_axis])
        cosines = np.abs(a[:3, :3] / np.where(sizes > 0, sizes, 1.0))
        oblique = bool(np.any(cosines.max(axis=0) < np.cos(np.deg2rad(1.0))))
        return cls(transform, (out_shape[0], out_shape[1], out_shape[2]), tuple(out_spacing), oblique)  # type: ignore[arg-type]

    def coarse(self, factors: tuple[int, int, int]) -> Display:
        """The display of the low-resolution grid that ``factors`` (voxel order) coarsen this one to."""
        shape, spacing = list(self.shape), list(self.spacing)
        for vox_axis, f in enumerate(factors):
            d = self.ras_axis(vox_axis)
            shape[d] //= int(f)
            spacing[d] *= int(f)
        return Display(
            self.transform, (shape[0], shape[1], shape[2]), (spacing[0], spacing[1], spacing[2]), self.oblique
        )

    def turn(self, vol: np.ndarray) -> np.ndarray:
        """The 3D array ``vol`` (voxel order) with its axes towards R, A, S (a view)."""
        return np.asarray(apply_orientation(np.asarray(vol), self.transform))

    def ras_axis(self, vox_axis: int) -> int:
        """The RAS axis (0, 1, 2) that voxel axis ``vox_axis`` was matched to."""
        return int(self.transform[vox_axis, 0])

    def vox_axis(self, ras_axis: int) -> int:
        """The voxel axis matched to RAS axis ``ras_axis``."""
        return int(np.flatnonzero(self.transform[:, 0] == ras_axis)[0])

    def vox_index(self, ras_axis: int, index: int) -> int:
        """The voxel index along the voxel axis of ``ras_axis`` of display index ``index``."""
        v = self.vox_axis(ras_axis)
        n = self.shape[ras_axis]
        return n - 1 - index if self.transform[v, 1] < 0 else index


def plane_axes(plane: str) -> tuple[int, int, int]:
    """``(fixed, horizontal, vertical)`` RAS axes of a display plane."""
    fixed = PLANES[plane]
    horizontal, vertical = (a for a in range(3) if a != fixed)
    return fixed, horizontal, vertical


def plane_image(ras: np.ndarray, plane: str, index: int) -> np.ndarray:
    """The 2D display image (row 0 at the top, column 0 at the left) of a turned array at ``index``.

    Args:
        ras: Array from :meth:`Display.turn` (axes towards R, A, S).
        plane: ``axial``, ``coronal`` or ``sagittal``.
        index: Index along the plane's fixed RAS axis.

    Returns:
        ``(n_vertical, n_horizontal)`` array; both axes are reversed so that the positive direction
        (R or A horizontally, A or S vertically) is at the left and at the top.
    """
    fixed, _, _ = plane_axes(plane)
    sl = np.take(ras, index, axis=fixed)
    return np.ascontiguousarray(sl[::-1, ::-1].T)


def plane_letters(plane: str) -> dict[str, str]:
    """Orientation letters at the ``left``, ``right``, ``top`` and ``bottom`` edges of a plane."""
    _, h, v = plane_axes(plane)
    return {"left": _POSITIVE[h], "right": _NEGATIVE[h], "top": _POSITIVE[v], "bottom": _NEGATIVE[v]}


def plane_extent(disp: Display, plane: str) -> tuple[float, float, float, float]:
    """``(left, right, bottom, top)`` of a plane in mm for ``imshow(..., origin="upper")``."""
    _, h, v = plane_axes(plane)
    return 0.0, disp.shape[h] * disp.spacing[h], disp.shape[v] * disp.spacing[v], 0.0


def main_plane(disp: Display, factors: tuple[int, int, int]) -> str:
    """The plane that shows what super-resolution changed: it contains the most refined axes.

    The fixed axis is one with the smallest factor (an unrefined one when there is one: the slice
    axis of in-plane ×4, one of the in-plane axes for thick slices ``1,1,F``, so that the refined
    axis lies in the plane); ties go to axial, then coronal, then sagittal.
    """
    ras_factor = [1, 1, 1]
    for vox_axis, f in enumerate(factors):
        ras_factor[disp.ras_axis(vox_axis)] = int(f)
    low = min(ras_factor)
    return next(p for p in ("axial", "coronal", "sagittal") if ras_factor[PLANES[p]] == low)


def busiest_window(
    diff: np.ndarray, size: tuple[int, int], *, inside: np.ndarray | None = None, min_inside: float = 0.75
) -> tuple[int, int]:
    """Top-left ``(row, col)`` of the ``size`` window with the largest sum of ``|diff|`` (a 2D map).

    With ``inside`` (a boolean map, e.g. the head), only windows of which at least ``min_inside`` is
    inside compete (all windows when none is). Ties go to the first window in row-major order; a
    window larger than the map is clipped to it.
    """
    d = np.nan_to_num(np.abs(np.asarray(diff, dtype=np.float64)))
    h, w = min(size[0], d.shape[0]), min(size[1], d.shape[1])
    sums = _window_sums(d, h, w)
    if inside is not None:
        frac = _window_sums(np.asarray(inside, dtype=np.float64), h, w) / (h * w)
        if (frac >= min_inside).any():
            sums = np.where(frac >= min_inside, sums, -1.0)
    r, col = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(r), int(col)


def _window_sums(a: np.ndarray, h: int, w: int) -> np.ndarray:
    c = np.zeros((a.shape[0] + 1, a.shape[1] + 1))
    c[1:, 1:] = a.cumsum(0).cumsum(1)
    return c[h:, w:] - c[:-h, w:] - c[h:, :-w] + c[:-h, :-w]


def nice_length(span_mm: float) -> float:
    """A round scale-bar length (1, 2 or 5 × 10ⁿ mm) of about a fifth of ``span_mm``."""
    target = max(span_mm / 5.0, 1e-6)
    exp = 10.0 ** np.floor(np.log10(target))
    return float(max(m * exp for m in (1.0, 2.0, 5.0) if m * exp <= target * (1 + 1e-9)))
