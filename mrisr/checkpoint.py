"""Checkpoints: network weights plus the metadata needed to use them correctly.

A checkpoint is a ``torch.save`` dictionary of plain types and tensors only, loaded with
``torch.load(weights_only=True)`` so that no arbitrary object is ever unpickled::

    {"format": "mrisr-checkpoint", "format_version": 1,
     "arch": {"name": "srcnn", "kernel_sizes": [9, 1, 5], "filters": [64, 32], "residual": true, ...},
     "state_dict": {...},
     "meta": {"scale": [4, 4, 1], "normalization": {...}, "degradation": "bicubic",
              "training_data": "...", "mrisr_version": "0.1.0", ...}}

Training checkpoints (``last.pt``) add ``"train_state"`` (optimiser, epoch, RNG states).

:func:`load_checkpoint` refuses, before any study is read, a file that is not exactly that: a zip
archive whose members fail their CRC (bit rot, a bad copy: ``torch.load`` itself does not check), a
format version or architecture it does not know, kernel sizes, filters, layers or scale factors out of
the bounds below, ``meta`` entries of the wrong type, weights that do not fit the architecture
(``load_state_dict(strict=True)``: every name, every shape) and weights that are not finite.
"""

from __future__ import annotations

import hashlib
import io
import logging
import pickle
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mrisr import __version__
from mrisr.degradation import TRAIN_DEGRADATIONS
from mrisr.errors import CheckpointError
from mrisr.fsutil import atomic_path
from mrisr.models import build_model

log = logging.getLogger(__name__)

FORMAT = "mrisr-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_DIR = Path(__file__).parent / "weights"

#: Architectures a checkpoint may name.
ARCHS = ("srcnn", "espcn", "axis-espcn")
#: Bounds of a stored architecture and scale (far above any useful network; they keep a hostile
#: file from allocating gigabytes before its weights are even compared).
MAX_KERNEL = 31
MAX_FILTERS = 1024
MAX_LAYERS = 16
MAX_FACTOR = 16
PADDING_MODES = ("replicate", "reflect", "zeros")


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
    except OSError as exc:
        raise CheckpointError(p, f"cannot be read ({exc.strerror or exc})") from exc
    _check_archive(p, raw)
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many exception types on bytes that are no checkpoint
        raise CheckpointError(
            p, f"not a readable checkpoint (corrupt, truncated or unsafe): {_load_failure(exc)}"
        ) from exc
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(p, "not an mrisr checkpoint (no 'format: mrisr-checkpoint' entry)")
    version = obj.get("format_version")
    if not (isinstance(version, int) and not isinstance(version, bool) and 1 <= version <= FORMAT_VERSION):
        raise CheckpointError(
            p, f"checkpoint format version {_short(version)} is not one this mrisr reads (1 to {FORMAT_VERSION})"
        )
    if not isinstance(obj.get("arch"), dict) or not isinstance(obj.get("state_dict"), dict):
        raise CheckpointError(p, "checkpoint lacks 'arch' or 'state_dict'")
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise CheckpointError(p, f"'meta' is a {type(meta).__name__}, not a dictionary")
    train_state = obj.get("train_state")
    if train_state is not None and not isinstance(train_state, dict):
        raise CheckpointError(p, f"'train_state' is a {type(train_state).__name__}, not a dictionary")
    for why in (_arch_problem(obj["arch"]), _meta_problem(meta)):
        if why:
            raise CheckpointError(p, why)
    ck = Checkpoint(
        arch=obj["arch"],
        state_dict=obj["state_dict"],
        meta=dict(meta),
        path=p,
        sha256=hashlib.sha256(raw).hexdigest(),
        train_state=train_state,
    )
    _check_weights(ck)
    return ck


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _int_list(v: Any, name: str, lo: int, hi: int, *, odd: bool = False) -> str | None:
    """Why ``v`` is not a list of integers in ``lo..hi`` (odd ones when ``odd``), or ``None``."""
    if not isinstance(v, list | tuple) or not all(_is_int(k) for k in v):
        return f"arch {name} {_short(v)} is not a list of integers"
    if not all(lo <= k <= hi for k in v) or (odd and any(k % 2 == 0 for k in v)):
        return f"arch {name} {list(v)} out of bounds ({'odd ' if odd else ''}integers {lo} to {hi})"
    return None


def _arch_problem(arch: dict[str, Any]) -> str | None:
    """Why ``arch`` does not describe a network this mrisr builds within its bounds, or ``None``."""
    name = arch.get("name", "srcnn")
    if name not in ARCHS:
        return f"unknown architecture {_short(name)} (known: {', '.join(ARCHS)})"
    kernels, filters = arch.get("kernel_sizes"), arch.get("filters")
    why = _int_list(kernels, "kernel_sizes", 1, MAX_KERNEL, odd=True) or _int_list(filters, "filters", 1, MAX_FILTERS)
    if why:
        return why
    assert isinstance(kernels, list | tuple) and isinstance(filters, list | tuple)
    if not 1 <= len(kernels) <= MAX_LAYERS or len(kernels) != len(filters) + 1:
        n_k, n_f = len(kernels), len(filters)
        return f"arch has {n_k} kernel sizes for {n_f} hidden layers (need one more, at most {MAX_LAYERS} layers)"
    if name in ("espcn", "axis-espcn"):
        factors = arch.get("factors")
        why = _int_list(factors, "factors", 1, MAX_FACTOR)
        if why or not isinstance(factors, list | tuple) or len(factors) != 2:
            return why or f"arch factors {_short(factors)} are not two integers"
        if name == "axis-espcn" and (min(factors) != 1 or max(factors) < 2):
            return f"arch factors {list(factors)} of a one-axis network must refine exactly one axis"
    if not isinstance(arch.get("residual", False), bool):
        return f"arch residual {_short(arch.get('residual'))} is not true or false"
    if arch.get("padding_mode", "replicate") not in PADDING_MODES:
        return f"arch padding_mode {_short(arch.get('padding_mode'))} is not one of {', '.join(PADDING_MODES)}"
    return None


def _meta_problem(meta: dict[str, Any]) -> str | None:
    """Why an entry of ``meta`` that mrisr uses has the wrong type or value, or ``None``."""
    scale = meta.get("scale")
    if scale is not None:
        if not isinstance(scale, list | tuple) or len(scale) != 3 or not all(_is_int(f) for f in scale):
            return f"meta scale {_short(scale)} is not three integers"
        if not all(1 <= f <= MAX_FACTOR for f in scale):
            return f"meta scale {list(scale)} out of bounds (integers 1 to {MAX_FACTOR})"
    degradation = meta.get("degradation")
    if degradation is not None and degradation not in TRAIN_DEGRADATIONS:
        return f"meta degradation {_short(degradation)} is not one of {', '.join(TRAIN_DEGRADATIONS)}"
    for key in ("normalization", "best_val", "train_config"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            return f"meta {key} is a {type(meta[key]).__name__}, not a dictionary"
    return None


def _check_archive(path: Path, raw: bytes) -> None:
    """Refuse a zip archive (``torch.save``'s format) with a member that fails its CRC-32 or cannot be read.

    Raises:
        CheckpointError: Naming the first bad member.
    """
    buf = io.BytesIO(raw)
    if not zipfile.is_zipfile(buf):
        return  # not a zip: torch.load's legacy format, or no checkpoint at all (torch.load says which)
    try:
        with zipfile.ZipFile(buf) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, RuntimeError) as exc:
        raise CheckpointError(path, f"corrupt checkpoint archive ({type(exc).__name__}: {str(exc)[:120]})") from exc
    if bad is not None:
        member = bad.rsplit("/", 1)[-1]
        raise CheckpointError(path, f"corrupt checkpoint archive: member {member!r} fails its CRC check")


def _check_weights(ck: Checkpoint) -> None:
    """Refuse weights that are not named tensors fitting the architecture exactly, or not finite.

    Raises:
        CheckpointError: Naming the first bad tensor.
    """
    for name, value in ck.state_dict.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            kind = type(value).__name__
            raise CheckpointError(ck.path, f"state_dict entry {_short(name)} is a {kind}, not a tensor")
        if not value.is_floating_point():
            raise CheckpointError(ck.path, f"weight {name} has dtype {value.dtype}, not floating point")
        if not bool(torch.isfinite(value).all()):
            n_bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(ck.path, f"weight {name} holds {n_bad} NaN/Inf values of {value.numel()}")
    try:
        model = build_model(ck.arch)
        model.load_state_dict(ck.state_dict, strict=True)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        first = " ".join(str(exc).split())
        raise CheckpointError(ck.path, f"weights do not fit the architecture: {first[:300]}") from exc


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
    path = WEIGHTS_DIR / shipped_name(scale, arch=arch)
    return path if path.is_file() else None


def shipped_name(scale: tuple[int, int, int], *, arch: str = "srcnn") -> str:
    """The file name the shipped weights for ``scale`` have (:func:`shipped_checkpoint`)."""
    name = f"x{scale[0]}" if scale[0] == scale[1] and scale[2] == 1 else "x" + "-".join(map(str, scale))
    return f"{arch}_{name}.pt"
