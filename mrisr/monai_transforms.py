"""MONAI transform wrappers of :mod:`mrisr.transforms` (array transform + thin dictionary wrapper).

Kept apart so that inference, which needs no MONAI, does not pay for importing it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, Transform

from mrisr.degradation import degrade_and_upsample
from mrisr.transforms import fit_normalization


class NormalizeIntensity(Transform):
    """Array transform: robust percentile normalisation (see :func:`fit_normalization`)."""

    def __init__(self, upper_percentile: float = 99.5, lower_percentile: float = 0.5) -> None:
        self.upper_percentile = upper_percentile
        self.lower_percentile = lower_percentile

    def __call__(self, data: np.ndarray) -> np.ndarray:
        norm = fit_normalization(
            np.asarray(data), upper_percentile=self.upper_percentile, lower_percentile=self.lower_percentile
        )
        return norm.apply(np.asarray(data))


class NormalizeIntensityd(MapTransform):
    """Dictionary wrapper of :class:`NormalizeIntensity`."""

    def __init__(self, keys: Sequence[Hashable], upper_percentile: float = 99.5) -> None:
        super().__init__(keys)
        self.t = NormalizeIntensity(upper_percentile)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.t(d[key])
        return d


class Degrade(Transform):
    """Array transform: degrade a ``(C, H, W)`` HR image by ``factors`` and upsample it back (bicubic).

    The result is the network input that matches the HR image as target.
    """

    def __init__(self, factors: Sequence[int], mode: str = "bicubic") -> None:
        self.factors = (int(factors[0]), int(factors[1]))
        self.mode = mode

    def __call__(self, data: torch.Tensor | np.ndarray) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(data) if not isinstance(data, torch.Tensor) else data, dtype=torch.float32)
        return degrade_and_upsample(t[None], self.factors, self.mode)[0]


class Degraded(MapTransform):
    """Dictionary wrapper of :class:`Degrade`: writes the degraded-and-upsampled ``key`` to ``output_key``."""

    def __init__(self, key: Hashable, output_key: Hashable, factors: Sequence[int], mode: str = "bicubic") -> None:
        super().__init__([key])
        self.output_key = output_key
        self.t = Degrade(factors, mode)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = self.t(d[key])
        return d
