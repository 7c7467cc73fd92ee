"""Training SRCNN super-resolution networks on folders of NIfTI/DICOM studies.

Use :func:`train` with a :class:`TrainConfig`; ``mrisr train`` is a thin wrapper. The data side
(study split, normalisation, the typed :class:`~mrisr.training.data.TrainingData`) lives in
:mod:`mrisr.training.data`, the degraded patch pairs in :mod:`~mrisr.training.patches`, their random
contrast, bias field and blur in :mod:`~mrisr.training.augment`, tissue maps in
:mod:`~mrisr.training.tissue`; the loop (optimisation, checkpoints, the epoch) in
:mod:`mrisr.training.loop`, with :mod:`~mrisr.training.losses`, :mod:`~mrisr.training.validation`,
:mod:`~mrisr.training.run_state` (what ``last.pt`` saves, checkpoint metadata, RNG states,
``metrics.csv``, resume checks), :mod:`~mrisr.training.ddp` and :mod:`~mrisr.training.plots` apart.
"""

from mrisr.training.config import LOSSES, TrainConfig
from mrisr.training.data import Split, split_studies
from mrisr.training.loop import Callbacks, TrainResult, train
from mrisr.training.patches import PatchDataset
from mrisr.training.validation import validate

__all__ = [
    "LOSSES",
    "Callbacks",
    "PatchDataset",
    "Split",
    "TrainConfig",
    "TrainResult",
    "split_studies",
    "train",
    "validate",
]
