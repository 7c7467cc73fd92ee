"""Intensity normalisation and the foreground rule it rests on.

Functions here work on NumPy arrays and import no MONAI, so that inference starts fast; their MONAI
array/dictionary transform wrappers are in :mod:`mrisr.monai_transforms`. The degradation model is
:mod:`mrisr.degradation`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: The name of the rule, in sidecars and checkpoints.
METHOD = "percentile"
#: The default percentiles of :func:`fit_normalization` (recorded in checkpoints and sidecars).
UPPER_PERCENTILE = 99.5
LOWER_PERCENTILE = 0.5
#: The foreground is what lies above this share of the 99.9th percentile (the head, not the air).
FOREGROUND_SHARE = 0.05


@dataclass(frozen=True)
class Normalization:
    """A recorded linear intensity normalisation ``y = (x - offset) / scale``.

    Attributes:
        offset: Value mapped to 0 (0 for non-negative data, else a low percentile), physical units.
        scale: Value range mapped to 1 (a high percentile of the foreground minus ``offset``).
        lower_percentile: Percentile used for ``offset`` when the data hold negatives.
        upper_percentile: Foreground percentile used for ``scale``.
        data_min: Minimum of the input, physical units (used to clamp outputs).
        data_max: Maximum of the input, physical units.
    """

    offset: float
    scale: float
    lower_percentile: float
    upper_percentile: float
    data_min: float
    data_max: float

    @property
    def constant(self) -> bool:
        """True when the data hold a single value (nothing to normalise or enhance)."""
        return self.data_max <= self.data_min

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Normalise to float32."""
        return ((np.asarray(x, dtype=np.float32) - np.float32(self.offset)) / np.float32(self.scale)).astype(
            np.float32, copy=False
        )

    def invert(self, y: np.ndarray) -> np.ndarray:
        """Back to physical units (float32)."""
        return (np.asarray(y, dtype=np.float32) * np.float32(self.scale) + np.float32(self.offset)).astype(
            np.float32, copy=False
        )

    def invert_(self, y: np.ndarray) -> np.ndarray:
        """Back to physical units in place (``y`` must be a float32 array); returns ``y``."""
        y *= np.float32(self.scale)
        y += np.float32(self.offset)
        return y

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for sidecars."""
        return {"method": METHOD, **asdict(self)}


def foreground_threshold(x: np.ndarray) -> float:
    """The foreground threshold in the units of ``x``: 5 % of its 99.9th percentile."""
    return FOREGROUND_SHARE * float(np.percentile(x, 99.9))


def normalization_method(
    *, upper_percentile: float = UPPER_PERCENTILE, lower_percentile: float = LOWER_PERCENTILE
) -> dict[str, Any]:
    """What a checkpoint records of the rule of :func:`fit_normalization` (not of one volume's fit)."""
    return {"method": METHOD, "upper_percentile": upper_percentile, "lower_percentile": lower_percentile}


def fit_normalization(
    x: np.ndarray, *, upper_percentile: float = UPPER_PERCENTILE, lower_percentile: float = LOWER_PERCENTILE
) -> Normalization:
    """Fit a robust normalisation to a volume.

    Non-negative data keep 0 at 0 and are divided by the ``upper_percentile`` of the foreground
    (:func:`foreground_threshold`: voxels above 5% of the 99.9th percentile — the head, not the air
    around it). Data with negative
    values are first shifted by their ``lower_percentile``. The same rule is used in training and at
    inference, so the network sees the same intensity range.

    Raises:
        ValueError: If ``x`` holds NaN or Inf.
    """
    a = np.asarray(x, dtype=np.float32)
    if not np.isfinite(a).all():
        raise ValueError("volume holds NaN or Inf voxels")
    lo_all, hi_all = float(a.min()), float(a.max())
    sample = a.ravel()
    if sample.size > 4_000_000:  # percentiles of a large volume from a fixed, deterministic subsample
        sample = sample[:: sample.size // 2_000_000]
    offset = 0.0 if lo_all >= 0 else float(np.percentile(sample, lower_percentile))
    shifted = sample - offset
    threshold = foreground_threshold(shifted)
    fg = shifted[shifted > threshold] if threshold > 0 else shifted
    scale = float(np.percentile(fg, upper_percentile)) if fg.size else 0.0
    if not scale > 0:
        scale = max(hi_all - offset, 1.0)
    return Normalization(offset, scale, lower_percentile, upper_percentile, lo_all, hi_all)
