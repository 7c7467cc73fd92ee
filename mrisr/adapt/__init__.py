"""Per-study self-supervised adaptation across axes (the idea of SMORE and zero-shot SR).

A copy of the network is fine-tuned on the study itself, with no other data. The training signal
comes from an axis of the study that is *not* being refined and whose voxels are already about as
fine as the target (the *donor* axis): planes that contain it are degraded along it by the scale
factor and the network learns to undo that. Typical cases:

- **thick slices** (``--scale 1,1,4`` on 1×1×4 mm): the fine in-plane axes teach the network what
  a ×4 loss of resolution along one axis looks like; it then refines the slice axis;
- **coarse in-plane, fine slices** (``--scale 4`` on 4×4×1 mm, e.g. a study acquired or degraded
  in-plane): the fine slice axis is the donor and the network refines axes 0 and 1 in turn.

The adapted network works one axis at a time (:func:`mrisr.passes.axis_passes`). Part of the donor planes is held
out: the weights with the lowest held-out error are kept, and the adaptation is *rejected* (the
original network and its usual passes are used) when it does not beat bicubic interpolation on the
held-out planes by a margin, or when no donor axis exists. Everything is seeded: on the CPU a given
study and configuration always give the same weights.

A **coarse-grid** network (ESPCN, refining the plane of the slices by its own ×f×f) cannot learn
one-axis blur; :func:`adapt_coarse_grid` tunes its first layer in-plane instead, on the study's own
slices coarsened ×2, or, for small slices, on planes that contain the slice axis, with losses that
need no finer truth than the study holds (see there).

The package: :mod:`~mrisr.adapt.common` (settings, result, fitting loop),
:mod:`~mrisr.adapt.one_axis` (donor-axis adaptation, :func:`adapt_model`) and
:mod:`~mrisr.adapt.coarse_grid` (:func:`adapt_coarse_grid`).
"""

from mrisr.adapt.coarse_grid import (
    COARSE_ACCEPT_RATIO,
    COARSE_CHILD_ACCEPT,
    COARSE_CHILD_MIN,
    COARSE_CONSISTENCY_LIMIT,
    COARSE_MIN_BLOCKS,
    adapt_coarse_grid,
)
from mrisr.adapt.common import (
    ADAPT_BUDGET_SECONDS,
    STEPS_AXIS,
    STEPS_COARSE_GRID,
    STEPS_FINE_GRID,
    AdaptConfig,
    AdaptResult,
    effective_steps,
)
from mrisr.adapt.one_axis import (
    ACCEPT_RATIO,
    ACCEPT_RATIO_TWO_AXES,
    DONOR_TOLERANCE,
    adapt_model,
    donor_axis,
)

__all__ = [
    "ACCEPT_RATIO",
    "ACCEPT_RATIO_TWO_AXES",
    "ADAPT_BUDGET_SECONDS",
    "COARSE_ACCEPT_RATIO",
    "COARSE_CHILD_ACCEPT",
    "COARSE_CHILD_MIN",
    "COARSE_CONSISTENCY_LIMIT",
    "COARSE_MIN_BLOCKS",
    "DONOR_TOLERANCE",
    "STEPS_AXIS",
    "STEPS_COARSE_GRID",
    "STEPS_FINE_GRID",
    "AdaptConfig",
    "AdaptResult",
    "adapt_coarse_grid",
    "adapt_model",
    "donor_axis",
    "effective_steps",
]
