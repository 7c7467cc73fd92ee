"""Hostile inputs (issue 16): every case is generated in ``tmp_path`` and must end in one line naming
the file and the reason, with the exit code documented in docs/usage.md ("What is refused, and why").

Sections: bad checkpoints; hostile sidecars and figures for ``mrisr report``; locks held by others and
unusable output folders; discovery (depth cap, hidden files, FIFOs); messages.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from mrisr.checkpoint import FORMAT, FORMAT_VERSION, load_checkpoint
from mrisr.cli import main
from mrisr.errors import CheckpointError
from mrisr.models import SRCNN, SRCNNConfig

AFFINE = np.diag([1.5, 1.2, 3.0, 1.0])


def _volume(path: Path, shape: tuple[int, ...] = (6, 5, 3), seed: int = 0) -> Path:
    data = (np.random.default_rng(seed).random(shape) * 800 + 100).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, AFFINE), str(path))
    return path


def _good_obj(seed: int = 0) -> dict[str, Any]:
    """The dictionary ``save_checkpoint`` writes for a small residual SRCNN (a valid checkpoint)."""
    torch.manual_seed(seed)
    cfg = SRCNNConfig(kernel_sizes=(3, 1, 3), filters=(8, 4), residual=True)
    model = SRCNN(cfg)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": cfg.to_dict(),
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "meta": {"scale": [2, 2, 1], "degradation": "bicubic"},
    }


def _save_obj(path: Path, obj: dict[str, Any]) -> Path:
    with open(path, "wb") as fh:
        torch.save(obj, fh)
    return path


def _set(obj: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    *parents, last = dotted.split("/")
    node = obj
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return obj


_DELETE = object()
W0 = "body.0.weight"

#: (case, key path split by '/', new value, words the one error line must hold)
BAD_CONTENTS: list[tuple[str, str, Any, str]] = [
    ("nan-weights", f"state_dict/{W0}", torch.full((8, 1, 3, 3), float("nan")), "NaN/Inf"),
    ("one-inf", "state_dict/body.2.bias", torch.tensor([0.0, float("inf"), 0.0, 0.0]), "NaN/Inf"),
    ("int-weights", f"state_dict/{W0}", torch.zeros((8, 1, 3, 3), dtype=torch.int64), "not floating point"),
    ("version-text", "format_version", "one", "format version"),
    ("version-newer", "format_version", FORMAT_VERSION + 1, "format version"),
    ("version-zero", "format_version", 0, "format version"),
    ("arch-unknown", "arch/name", "resnet", "unknown architecture"),
    ("arch-name-list", "arch/name", ["srcnn"], "unknown architecture"),
    ("kernel-even", "arch/kernel_sizes", [3, 2, 3], "kernel_sizes"),
    ("kernel-huge", "arch/kernel_sizes", [101, 1, 3], "kernel_sizes"),
    ("kernel-missing", "arch/kernel_sizes", _DELETE, "kernel_sizes"),
    ("kernel-text", "arch/kernel_sizes", "3,1,3", "kernel_sizes"),
    ("kernel-bool", "arch/kernel_sizes", [True, 1, 3], "kernel_sizes"),
    ("filters-huge", "arch/filters", [100000, 4], "filters"),
    ("filters-zero", "arch/filters", [0, 4], "filters"),
    ("layers-mismatch", "arch/filters", [8], "kernel sizes for"),
    ("residual-text", "arch/residual", "yes", "residual"),
    ("padding-unknown", "arch/padding_mode", "circular!", "padding_mode"),
    ("meta-list", "meta", [1, 2], "'meta'"),
    ("scale-zero", "meta/scale", [0, 0, 0], "scale"),
    ("scale-text", "meta/scale", ["2", "2", "1"], "scale"),
    ("scale-short", "meta/scale", [2, 2], "scale"),
    ("scale-huge", "meta/scale", [1000, 1000, 1], "scale"),
    ("scale-float", "meta/scale", [2.5, 2.5, 1], "scale"),
    ("degradation-int", "meta/degradation", 5, "degradation"),
    ("normalization-text", "meta/normalization", "percentile", "normalization"),
    ("weights-missing", f"state_dict/{W0}", _DELETE, "do not fit"),
    ("weights-extra", "state_dict/body.9.weight", torch.zeros(3), "do not fit"),
    ("weights-shape", f"state_dict/{W0}", torch.zeros((8, 1, 5, 5)), "do not fit"),
    ("weights-list", f"state_dict/{W0}", [0.0, 1.0], "not a tensor"),
    ("train-state-text", "train_state", "resume me", "train_state"),
]


@pytest.mark.parametrize(("case", "key", "value", "words"), BAD_CONTENTS, ids=[c[0] for c in BAD_CONTENTS])
def test_bad_checkpoint_contents_are_one_line_exit_2(
    tmp_path: Path, case: str, key: str, value: Any, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each variant is refused before any study is read: one line naming the file, exit 2, no sidecar."""
    bad = _save_obj(tmp_path / f"{case}.pt", _set(_good_obj(), key, value))
    src = _volume(tmp_path / "in" / "s.nii.gz")
    out = tmp_path / "out"
    assert main(["enhance", str(src), "--out", str(out), "--checkpoint", str(bad), "--no-figure"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"{case}.pt" in err[0] and words in err[0], err
    assert not out.exists() or not any(out.iterdir())  # no study was touched


def test_the_control_checkpoint_is_accepted(tmp_path: Path) -> None:
    """The unmodified dictionary loads and enhances (the cases above fail for their change alone)."""
    good = _save_obj(tmp_path / "good.pt", _good_obj())
    src = _volume(tmp_path / "in" / "s.nii.gz")
    assert load_checkpoint(good).scale == (2, 2, 1)
    assert main(["enhance", str(src), "--out", str(tmp_path / "out"), "--checkpoint", str(good), "--no-figure"]) == 0
    assert json.loads((tmp_path / "out" / "s_sr.json").read_text())["status"] == "done"


def _member_data_offset(raw: bytes, member: str) -> tuple[int, int]:
    """(offset, size) of a stored zip member's bytes in the archive."""
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        info = zf.getinfo(member)
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def test_flipped_bytes_inside_the_archive_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """200 bytes flipped inside a weight tensor: torch.load accepts the file (the control), the CRC does not."""
    obj = _good_obj()
    obj["state_dict"][W0] = torch.randn(8, 1, 3, 3) * 0.1
    raw = bytearray(_save_obj(tmp_path / "good.pt", obj).read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as zf:
        member = max(zf.infolist(), key=lambda i: i.file_size if "/data/" in i.filename else -1).filename
    start, size = _member_data_offset(bytes(raw), member)
    n = min(200, size)
    raw[start : start + n] = bytes(b ^ 0x5A for b in raw[start : start + n])
    bad = tmp_path / "flipped.pt"
    bad.write_bytes(bytes(raw))
    torch.load(bad, weights_only=True)  # control: torch itself does not notice
    with pytest.raises(CheckpointError, match="CRC"):
        load_checkpoint(bad)
    src = _volume(tmp_path / "in" / "s.nii.gz")
    assert main(["enhance", str(src), "--out", str(tmp_path / "o"), "--checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "flipped.pt" in err[0] and "CRC" in err[0], err


def test_overflowing_network_fails_the_study_not_zeros(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Finite weights whose output overflows to inf: the study fails naming it, nothing is written as done."""
    obj = _good_obj()
    obj["state_dict"] = {k: v.abs() * 1e30 + 1e30 for k, v in obj["state_dict"].items()}
    ck = _save_obj(tmp_path / "overflow.pt", obj)
    src = _volume(tmp_path / "in" / "s.nii.gz")
    out = tmp_path / "out"
    args = ["enhance", str(src), "--out", str(out), "--checkpoint", str(ck), "--no-figure", "--ensemble", "1"]
    assert main(args) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "s.nii.gz" in err[0] and "NaN/Inf" in err[0] and "overflow.pt" in err[0], err
    assert json.loads((out / "s_sr.json").read_text())["status"] == "failed"
    assert not (out / "s_sr.nii.gz").exists()
