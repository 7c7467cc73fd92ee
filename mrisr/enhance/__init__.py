"""Enhancing studies: the tool's main job, usable from Python and wrapped by ``mrisr enhance``.

For each study: load → robust intensity normalisation (recorded) → slices across the slicing axis →
bicubic ×scale → SRCNN (or the coarse-grid ESPCN on the slices themselves) → slices reassembled →
normalisation inverted → clamped to the input's value range → cast back to the input dtype →
written on the refined grid from :mod:`mrisr.geometry`, then a JSON sidecar (written last, it marks
the study as done).

With ``simulate=True`` each input is a high-resolution *reference*: it is degraded by the scale, then
super-resolved back onto its own grid, and PSNR/SSIM of SR and of bicubic against it go into the
sidecar.

The package: :mod:`~mrisr.enhance.options` (requests, results, checkpoint and factors),
:mod:`~mrisr.enhance.studies` (whole studies, outputs, sidecars) and
:mod:`~mrisr.enhance.enhancer` (:class:`Enhancer`, arrays).
"""

from mrisr.enhance.enhancer import Enhancer
from mrisr.enhance.options import (
    DEFAULT_ADAPT,
    DEFAULT_ARCH,
    EnhanceOptions,
    OutFormat,
    StudyResult,
    parse_factors,
    resolve_checkpoint,
    resolve_through_plane,
    split_stages,
)

__all__ = [
    "DEFAULT_ADAPT",
    "DEFAULT_ARCH",
    "EnhanceOptions",
    "Enhancer",
    "OutFormat",
    "StudyResult",
    "parse_factors",
    "resolve_checkpoint",
    "resolve_through_plane",
    "split_stages",
]
