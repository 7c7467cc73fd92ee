"""MONAI transforms of mrisr's data path: the percentile normalisation of :mod:`mrisr.transforms`
(:class:`PercentileNormalize`, invertible in its dictionary form :class:`PercentileNormalized`) and
the slicing of a volume into 2D slices (:class:`SliceStack`, invertible), and the degradation of
:mod:`mrisr.degradation` (:class:`Degrade`, :class:`Degraded`), each an array transform with a thin
dictionary wrapper. Training and inference use the same classes.

The numbers are those of the plain functions, bit for bit. Importing MONAI costs about 1.3 s a
process (docs/performance.md): import this module inside the functions that need it, never at the
top of a module the CLI loads for ``--help``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from monai.transforms import InvertibleTransform, MapTransform, Transform
from monai.utils import TraceKeys

from mrisr.degradation import degrade_and_upsample
from mrisr.transforms import LOWER_PERCENTILE, UPPER_PERCENTILE, Normalization, fit_normalization


class PercentileNormalize(Transform):
    """Array transform: the robust percentile normalisation of :func:`mrisr.transforms.fit_normalization`
    (not MONAI's z-score ``NormalizeIntensity``), fitted to each array it is given.

    Returns float32, equal to ``fit_normalization(x).apply(x)`` bit for bit. :meth:`fit` gives the
    :class:`~mrisr.transforms.Normalization` itself, whose ``invert`` maps back to physical units.
    """

    def __init__(self, upper_percentile: float = UPPER_PERCENTILE, lower_percentile: float = LOWER_PERCENTILE) -> None:
        self.upper_percentile = upper_percentile
        self.lower_percentile = lower_percentile

    def fit(self, data: np.ndarray) -> Normalization:
        """The normalisation fitted to ``data`` (any shape; physical units)."""
        return fit_normalization(
            np.asarray(data), upper_percentile=self.upper_percentile, lower_percentile=self.lower_percentile
        )

    def __call__(self, data: np.ndarray) -> np.ndarray:
        return self.fit(data).apply(np.asarray(data))


class PercentileNormalized(MapTransform, InvertibleTransform):
    """Dictionary form of :class:`PercentileNormalize`, invertible: the normalisation fitted to each key
    is recorded with the data (MONAI's ``<key>_transforms`` trace, or a ``MetaTensor``'s operations),
    and :meth:`inverse` maps that key back to physical units with it (float32).

    :meth:`normalization` reads the recorded fit (for a sidecar or checkpoint).
    """

    def __init__(
        self,
        keys: Sequence[Hashable],
        *,
        upper_percentile: float = UPPER_PERCENTILE,
        lower_percentile: float = LOWER_PERCENTILE,
    ) -> None:
        super().__init__(keys)
        self.t = PercentileNormalize(upper_percentile, lower_percentile)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            norm = self.t.fit(d[key])
            d[key] = norm.apply(np.asarray(d[key]))
            self.push_transform(d, key, extra_info={"normalization": asdict(norm)})
        return d

    def normalization(self, data: Mapping[Hashable, Any], key: Hashable) -> Normalization:
        """The normalisation this transform recorded for ``key`` (the latest one)."""
        info = self.get_most_recent_transform(data, key, check=True, pop=False)
        return Normalization(**info[TraceKeys.EXTRA_INFO]["normalization"])

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            info = self.pop_transform(d, key)
            d[key] = Normalization(**info[TraceKeys.EXTRA_INFO]["normalization"]).invert(d[key])
        return d


class SliceStack(InvertibleTransform):
    """Array transform: a 3D array ``(i, j, k)`` as the stack of its 2D slices cut across ``axis``,
    shape ``(n, h, w)`` with the other two axes in increasing order.

    The stack is a view (``np.moveaxis``): writing into it writes into the array. :meth:`inverse` puts
    a stack of (possibly refined) slices back in the array's axis order. Inference cuts the slices it
    super-resolves with it (:func:`mrisr.inference.super_resolve_array`), training the slices it
    draws patches from (:class:`mrisr.training.patches.PatchDataset`).
    """

    def __init__(self, axis: int) -> None:
        if axis not in (0, 1, 2):
            raise ValueError(f"a slice axis is 0, 1 or 2, not {axis}")
        self.axis = axis

    def __call__(self, data: np.ndarray) -> np.ndarray:
        return np.moveaxis(data, self.axis, 0)

    def inverse(self, data: np.ndarray) -> np.ndarray:
        return np.moveaxis(data, 0, self.axis)


class SliceStackd(MapTransform, InvertibleTransform):
    """Dictionary form of :class:`SliceStack` (the same ``axis`` for every key)."""

    def __init__(self, keys: Sequence[Hashable], axis: int) -> None:
        super().__init__(keys)
        self.t = SliceStack(axis)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.t(d[key])
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.t.inverse(d[key])
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
