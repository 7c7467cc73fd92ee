"""Enhancing studies: the tool's main job, usable from Python and wrapped by ``mrisr enhance``.

For each study: load → robust intensity normalisation (recorded) → slices across the slicing axis →
bicubic ×scale → SRCNN (or the coarse-grid ESPCN on the slices themselves) → slices reassembled →
normalisation inverted → clamped to the input's value range → cast back to the input dtype →
written on the refined grid from :mod:`mrisr.geometry`, then a JSON sidecar (written last, it marks
the study as done).

With ``simulate=True`` each input is a high-resolution *reference*: it is degraded by the scale, then
super-resolved back onto its own grid, and PSNR/SSIM of SR and of bicubic against it go into the
sidecar.

The package, one way from the top: :mod:`~mrisr.enhance.enhancer` (:class:`Enhancer`, the batch
loop) → :mod:`~mrisr.enhance.studies` (one whole study: lock, skip rule, outputs, sidecar) →
:mod:`~mrisr.enhance.compute` (one study's arrays: simulate or enhance) →
:mod:`~mrisr.enhance.arrays` (:class:`ArraySR`: arrays through the network). What is asked and the
defaults (the same for Python and ``mrisr enhance``) are in :mod:`~mrisr.enhance.options`; the
sidecar contract is :mod:`mrisr.sidecar`.
"""

from mrisr.enhance.arrays import ArraySR
from mrisr.enhance.enhancer import Enhancer
from mrisr.enhance.options import (
    DEFAULT_ADAPT,
    DEFAULT_ARCH,
    DEFAULT_DEVICE,
    EnhanceOptions,
    OutFormat,
    StudyResult,
    default_run,
    parse_factors,
    resolve_checkpoint,
    resolve_through_plane,
    split_stages,
)

__all__ = [
    "DEFAULT_ADAPT",
    "DEFAULT_ARCH",
    "DEFAULT_DEVICE",
    "ArraySR",
    "EnhanceOptions",
    "Enhancer",
    "OutFormat",
    "StudyResult",
    "default_run",
    "parse_factors",
    "resolve_checkpoint",
    "resolve_through_plane",
    "split_stages",
]
