"""Drawing one display panel (:mod:`mrisr.display` planes): grey window, orientation letters, a
scale bar in mm, the slice label; shared by :mod:`mrisr.figures`' comparison figure and mosaic."""

from __future__ import annotations

from typing import Any

import numpy as np

from mrisr.display import Display, nice_length, plane_axes, plane_letters

_VOX = "ijk"


def pyplot() -> Any:
    """``matplotlib.pyplot`` with the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def window(*imgs: np.ndarray | None) -> tuple[float, float]:
    """Grey window: the 0.5th and 99.5th percentiles of the finite values of ``imgs``."""
    vals = [i[np.isfinite(i)] for i in imgs if i is not None]
    finite = np.concatenate(vals) if vals else np.zeros(0)
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [0.5, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def top(*maps: np.ndarray) -> float:
    """Top of a map's colour scale: the 99.5th percentile of ``|maps|`` (1 for an all-zero map)."""
    a = np.concatenate([np.abs(m[np.isfinite(m)]).ravel() for m in maps])
    if a.size == 0:
        return 1.0
    return float(np.percentile(a, 99.5)) or float(a.max()) or 1.0


def check_3d(name: str, a: np.ndarray | None, shape: tuple[int, ...] | None = None) -> None:
    """Raise ``ValueError`` unless ``a`` is ``None`` or 3D (and of ``shape`` when given)."""
    if a is None:
        return
    if a.ndim != 3:
        raise ValueError(f"{name}: expected a 3D (i, j, k) array, got shape {a.shape}")
    if shape is not None and a.shape != shape:
        raise ValueError(f"{name} {a.shape} and sr {shape} must share one grid")


def decorate(
    ax: Any, plane: str, extent: tuple[float, float, float, float], *, letters: bool = True, bar_color: str = "white"
) -> None:
    """Orientation letters at the edges and a scale bar in mm at the bottom left."""
    import matplotlib.patheffects as pe

    stroke = [pe.withStroke(linewidth=2.5, foreground="black")]
    bar_stroke = [pe.withStroke(linewidth=2.5, foreground="black" if bar_color == "white" else "white")]
    if letters:
        pos = {"left": (0.015, 0.5, "left", "center"), "right": (0.985, 0.5, "right", "center"),
               "top": (0.5, 0.985, "center", "top"), "bottom": (0.5, 0.015, "center", "bottom")}  # fmt: skip
        for edge, letter in plane_letters(plane).items():
            x, y, ha, va = pos[edge]
            ax.text(x, y, letter, transform=ax.transAxes, ha=ha, va=va, color="#ffd54a", fontsize=11,
                    fontweight="bold", path_effects=stroke)  # fmt: skip
    left, right, bottom, top = extent
    width, height = right - left, bottom - top
    if height < 0.3 * width:  # a thin slab: the bar would cover the letters
        return
    bar = nice_length(width)
    x0, y0 = left + 0.06 * width, bottom - 0.07 * height
    ax.plot([x0, x0 + bar], [y0, y0], color=bar_color, linewidth=3, solid_capstyle="butt", path_effects=bar_stroke)
    ax.text(x0 + bar / 2, y0 - 0.02 * height, f"{bar:g} mm", color=bar_color, ha="center", va="bottom",
            fontsize=9, path_effects=bar_stroke)  # fmt: skip


def slice_label(disp: Display, plane: str, index: int, frames: int) -> str:
    """``axial · k = 8/16`` (the voxel axis and index of the slice) and the frame of a 4D study."""
    fixed, _, _ = plane_axes(plane)
    v = disp.vox_axis(fixed)
    label = f"{plane} · {_VOX[v]} = {disp.vox_index(fixed, index)}/{disp.shape[fixed]}"
    return label + (f" · frame 0/{frames}" if frames > 1 else "")
