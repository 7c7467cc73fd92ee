"""Helpers for 3D and 4D arrays handled frame by frame (split, stack)."""

from __future__ import annotations

import numpy as np


def first_frame(a: np.ndarray | None) -> np.ndarray | None:
    """The first 3D frame of a 4D array (a 3D array as it is; ``None`` stays ``None``)."""
    return None if a is None else (a if a.ndim == 3 else a[..., 0])


def frames_of(a: np.ndarray) -> list[np.ndarray]:
    """The 3D frames of a 3D (one frame) or 4D array (views, no copies)."""
    return [a] if a.ndim == 3 else [a[..., t] for t in range(a.shape[3])]


def stack_like(frames: list[np.ndarray], like: np.ndarray) -> np.ndarray:
    """Inverse of :func:`frames_of`: one frame for a 3D ``like``, frames stacked on axis 3 for 4D."""
    return frames[0] if like.ndim == 3 else np.stack(frames, axis=-1)
