"""Training SRCNN super-resolution networks on folders of NIfTI/DICOM studies.

Use :func:`train` with a :class:`TrainConfig`; ``mrisr train`` is a thin wrapper. The data side
(study split, normalisation, degraded patch pairs) lives in :mod:`mrisr.training.data`, the loop
(optimisation, validation, checkpoints, resume, DDP) in :mod:`mrisr.training.loop`.
"""

from mrisr.training.config import LOSSES, TrainConfig
from mrisr.training.data import PatchDataset, Split, split_studies
from mrisr.training.loop import Callbacks, TrainResult, train, validate

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
