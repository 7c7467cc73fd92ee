"""Checkpoints: network weights plus the metadata needed to use them correctly.

A checkpoint is a ``torch.save`` dictionary of plain types and tensors only, loaded with
``torch.load(weights_only=True)`` so that no arbitrary object is ever unpickled::

    {"format": "mrisr-checkpoint", "format_version": 1,
     "arch": {"name": "srcnn", "kernel_sizes": [9, 1, 5], "filters": [64, 32], "residual": true, ...},
     "state_dict": {...},
     "meta": {"scale": [4, 4, 1], "normalization": {...}, "degradation": "bicubic",
              "training_data": "...", "mrisr_version": "0.1.0", ...}}

Training checkpoints (``last.pt``) add ``"train_state"`` (optimiser, epoch, RNG states).
"""

from __future__ import annotations

import io
import logging
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mrisr import __version__
from mrisr.errors import CheckpointError
from mrisr.fsutil import atomic_path, sha256_file
from mrisr.models import build_model

log = logging.getLogger(__name__)

FORMAT = "mrisr-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        arch: Architecture description (see :func:`mrisr.models.build_model`).
        state_dict: Network weights.
        meta: Scale, normalisation, degradation, training data, version.
        path: Where it was loaded from.
        sha256: SHA-256 of the file.
        train_state: Optimiser/epoch/RNG state of a training checkpoint, else ``None``.
    """

    arch: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    sha256: str = ""
    train_state: dict[str, Any] | None = None

    def build(self) -> nn.Module:
        """The network with its weights loaded, in eval mode, on the CPU."""
        model = build_model(self.arch)
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as exc:
            raise CheckpointError(self.path, f"weights do not fit the architecture: {exc}") from exc
        return model.eval()

    @property
    def scale(self) -> tuple[int, int, int] | None:
        """The scale factors the network was trained for, if recorded."""
        s = self.meta.get("scale")
        return None if s is None else (int(s[0]), int(s[1]), int(s[2]))


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    arch: dict[str, Any],
    meta: dict[str, Any],
    *,
    train_state: dict[str, Any] | None = None,
) -> Path:
    """Save a checkpoint atomically (see the module docstring for the layout)."""
    obj: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": {"mrisr_version": __version__, **meta},
    }
    if train_state is not None:
        obj["train_state"] = train_state
    out = Path(path)
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)  # a file object: the archive's root is not named after the temporary file
    return out


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint without unpickling arbitrary objects.

    Raises:
        CheckpointError: Missing, empty, truncated, corrupt or foreign file.
    """
    p = Path(path)
    if p.is_dir():
        raise CheckpointError(p, "a folder, not a checkpoint file")
    if not p.is_file():
        raise CheckpointError(p, "no such checkpoint file")
    if p.stat().st_size == 0:
        raise CheckpointError(p, "empty checkpoint file (0 bytes)")
    try:
        raw = p.read_bytes()
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many exception types on bytes that are no checkpoint
        raise CheckpointError(
            p, f"not a readable checkpoint (corrupt, truncated or unsafe): {_load_failure(exc)}"
        ) from exc
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(p, "not an mrisr checkpoint (no 'format: mrisr-checkpoint' entry)")
    if int(obj.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(p, f"checkpoint format {obj.get('format_version')} is newer than this mrisr")
    if not isinstance(obj.get("arch"), dict) or not isinstance(obj.get("state_dict"), dict):
        raise CheckpointError(p, "checkpoint lacks 'arch' or 'state_dict'")
    return Checkpoint(
        arch=obj["arch"],
        state_dict=obj["state_dict"],
        meta=dict(obj.get("meta", {})),
        path=p,
        sha256=sha256_file(p),
        train_state=obj.get("train_state"),
    )


def _load_failure(exc: Exception) -> str:
    """One short line on why ``torch.load`` failed (without torch's advice to unpickle anyway)."""
    if isinstance(exc, pickle.UnpicklingError) and "weights_only" in str(exc):
        return "it holds objects other than tensors and plain data, which are not loaded"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    lines = str(exc).strip().splitlines()
    first = lines[0].split(". ")[0] if lines else ""
    return f"{type(exc).__name__}: {first[:160]}" if first else type(exc).__name__


def shipped_checkpoint(scale: tuple[int, int, int], *, arch: str = "srcnn") -> Path | None:
    """The checkpoint shipped in the package for ``scale`` (``None`` when there is none).

    In-plane scales ``(s, s, 1)`` look for ``{arch}_x{s}.pt``; others for ``{arch}_x{a}-{b}-{c}.pt``.
    """
    name = f"x{scale[0]}" if scale[0] == scale[1] and scale[2] == 1 else "x" + "-".join(map(str, scale))
    path = WEIGHTS_DIR / f"{arch}_{name}.pt"
    return path if path.is_file() else None
