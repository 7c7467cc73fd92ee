"""Helpers shared by the benchmark scripts (run as files: this folder is on ``sys.path``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np


def mrisr_command() -> list[str]:
    """The ``mrisr`` console script beside this Python, else ``python -m mrisr.cli`` (a source tree)."""
    script = Path(sys.executable).with_name("mrisr")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "mrisr.cli"]


def synthetic_study(path: Path, shape: Sequence[int], spacing: Sequence[float]) -> Path:
    """Write a seeded int16 NIfTI study of smooth texture plus noise (the same data every run)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    vol = np.stack([(np.sin(xx / 5 + k) * np.cos(yy / 7) + 1.2) * 400 for k in range(shape[2])], axis=-1)
    vol += rng.normal(0, 10, vol.shape)
    nib.save(nib.Nifti1Image(vol.astype(np.int16), np.diag([*map(float, spacing), 1.0])), str(path))
    return path
