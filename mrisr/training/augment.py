"""Random changes of a high-resolution training patch before its degradation: tissue contrast (a random
curve, or one value per tissue probability map), a coil-like bias field and a softer truth.

Every function takes the patch (2D, normalised: foreground 99.5th percentile = 1) and the generator
that :class:`mrisr.training.patches.PatchDataset` seeds per item, and returns a float32 array.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mrisr.metrics import gaussian_window

#: Knots of :func:`random_contrast` over the normalised intensities (foreground 99.5th percentile = 1).
CONTRAST_KNOTS = np.linspace(0.0, 1.2, 7)


def random_contrast(hr: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``hr`` (normalised) with its voxels inside ``mask`` mapped through a random piecewise-linear
    curve: values at :data:`CONTRAST_KNOTS` drawn uniformly in 0.05–1, the largest scaled to 1 (values
    past the last knot take its value). Any order of the tissues can come out (T2-, PD-, FLAIR-like
    contrasts from a T1), as SynthSR's random contrasts do from label maps. Returns float32."""
    values = rng.uniform(0.05, 1.0, CONTRAST_KNOTS.size)
    values /= values.max()
    mapped = np.interp(hr, CONTRAST_KNOTS, values)
    return np.where(mask, mapped, hr).astype(np.float32)


def tissue_contrast(hr: np.ndarray, mask: np.ndarray, tissue: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``hr`` (normalised) with its voxels inside ``mask`` re-synthesised from tissue probability maps
    ``tissue`` (``(K, *hr.shape)``, each in 0–1): tissue ``k`` gets one intensity drawn uniformly in
    0.05–1, and the probability left over (``1 - sum``: CSF, skull, scalp) takes the template's value
    through :func:`random_contrast`'s random curve; the largest of all the drawn values is scaled to 1.
    A voxel shared by two tissues is their probability-weighted mean, the linear partial volume of a
    real acquisition (a curve of the template's value alone would put any intensity there).
    Returns float32."""
    k = tissue.shape[0]
    values = rng.uniform(0.05, 1.0, CONTRAST_KNOTS.size + k)
    values /= values.max()
    p = np.clip(tissue, 0.0, 1.0).astype(np.float64)
    total = p.sum(axis=0)
    p /= np.maximum(total, 1.0)  # maps that overlap by more than 1 are shared out
    rest = np.interp(hr, CONTRAST_KNOTS, values[: CONTRAST_KNOTS.size])
    synth = np.tensordot(values[CONTRAST_KNOTS.size :], p, axes=1) + (1.0 - p.sum(axis=0)) * rest
    return np.where(mask, synth, hr).astype(np.float32)


#: Range of the Gaussian's standard deviation (voxels) that ``hr_blur`` draws from.
HR_BLUR_SIGMA = (0.3, 1.0)
#: Range of the shrink factor that ``zoom_out`` draws from (a 1 mm template seen as 1-2 mm anatomy).
ZOOM_OUT = (1.0, 2.0)
#: Side of the coarse grid of random log-gains that :func:`random_bias_field` interpolates.
BIAS_GRID = 4


def random_bias_field(hr: np.ndarray, rng: np.random.Generator, strength: float = 0.3) -> np.ndarray:
    """``hr`` times a smooth random gain, like a receive coil's bias field: the exponential of a
    ``BIAS_GRID``×``BIAS_GRID`` grid of log-gains drawn from a normal law of standard deviation
    ``strength`` × U(0, 1), interpolated bicubically over the patch (corners on corners). Returns float32."""
    amp = strength * float(rng.random())
    grid = torch.from_numpy(rng.normal(0.0, amp, (1, 1, BIAS_GRID, BIAS_GRID)).astype(np.float32))
    field = F.interpolate(grid, size=hr.shape, mode="bicubic", align_corners=True)[0, 0]
    return (hr * np.exp(field.numpy())).astype(np.float32)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """``img`` (2D) smoothed by a separable Gaussian of ``sigma`` voxels, borders mirrored (no darkening
    at the edges). Returns float32."""
    r = max(1, int(np.ceil(3 * sigma)))
    k = gaussian_window(2 * r + 1, sigma)
    out = np.pad(img.astype(np.float64), r, mode="symmetric")
    out = np.apply_along_axis(np.convolve, 0, out, k, mode="valid")
    out = np.apply_along_axis(np.convolve, 1, out, k, mode="valid")
    return out.astype(np.float32)
