"""Tiny seeded studies and configurations shared by the ``mrisr train`` option tests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from mrisr.models import SRCNNConfig
from mrisr.training import TrainConfig

#: A 3-1-3 SRCNN of 4 filters: trains in milliseconds, enough to tell weights apart.
TINY = SRCNNConfig(kernel_sizes=(3, 1, 3), filters=(4, 4), residual=True)


def tiny_volume(seed: int) -> np.ndarray:
    """A 16×16×8 int16 study: a smooth pattern that ``seed`` shifts, plus seeded noise."""
    rng = np.random.default_rng(seed)
    g = np.mgrid[:16, :16, :8].astype(np.float32)
    x = 300 + 100 * np.sin(g[0] / 1.7 + seed) * np.cos(g[1] / 2.3) + rng.normal(0, 5, (16, 16, 8))
    return x.astype(np.int16)


def write_studies(root: Path, names: tuple[str, ...]) -> Path:
    """``root/<name>.nii.gz`` for each name (subfolders allowed), study ``i`` seeded with ``i``."""
    for i, name in enumerate(names):
        path = root / f"{name}.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(tiny_volume(i), np.eye(4)), path)
    return root


def tiny_config(**kw: object) -> TrainConfig:
    """A ×2 run of one epoch of 2 steps on 8² patches with :data:`TINY`; ``kw`` overrides."""
    base: dict[str, object] = dict(
        scale=2, epochs=1, steps_per_epoch=2, batch_size=2, patch_size=8, device="cpu", seed=0, model=TINY
    )
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]
