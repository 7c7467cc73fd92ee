"""Faithful outputs (issue 15): physical values kept, honest NIfTI headers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from mrisr.checkpoint import save_checkpoint
from mrisr.cli import main
from mrisr.enhance import Enhancer
from mrisr.models import SRCNN, SRCNNConfig


@pytest.fixture()
def net(tmp_path: Path) -> Path:
    """A small random residual SRCNN (an output that is not bicubic)."""
    torch.manual_seed(0)
    cfg = SRCNNConfig(residual=True)
    model = SRCNN(cfg)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.normal_(0, 0.05)
    path = tmp_path / "net.pt"
    save_checkpoint(path, model, cfg.to_dict(), {"scale": [4, 4, 1], "degradation": "bicubic"})
    return path


def _oblique(spacing: tuple[float, float, float] = (2.0, 1.5, 3.0)) -> np.ndarray:
    a = np.deg2rad(25.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag(spacing)
    aff[:3, 3] = [-40.0, 12.0, 5.5]
    return aff


def _psnr(test: np.ndarray, ref: np.ndarray) -> float:
    mse = float(np.mean((test.astype(np.float64) - ref.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(float(np.ptp(ref)) ** 2 / mse)


def _capture(monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    """Record the in-memory float SR result of each study."""
    seen: list[np.ndarray] = []
    original = Enhancer.enhance_array

    def spy(self: Enhancer, *args: Any, **kwargs: Any) -> Any:
        out = original(self, *args, **kwargs)
        seen.append(np.array(out[0], dtype=np.float64))
        return out

    monkeypatch.setattr(Enhancer, "enhance_array", spy)
    return seen


@pytest.mark.parametrize(
    ("dtype", "slope", "inter"),
    [
        (np.int16, 1.0, 0.0),
        (np.uint8, 1.0, 0.0),
        (np.int16, 1e-4, 0.0),
        (np.int16, 1e-3, 0.0),
        (np.int16, 1e-3, 0.2),
        (np.uint16, 0.5, 0.0),
        (np.int16, 0.5, -100.0),
        (np.int16, 3.0, 0.0),
        (np.int16, 3.0, -1024.0),
        (np.float32, 1.0, 0.0),
    ],
)
def test_written_output_holds_the_sr_result_in_physical_units(
    tmp_path: Path, net: Path, monkeypatch: pytest.MonkeyPatch, dtype: type, slope: float, inter: float
) -> None:
    rng = np.random.default_rng(3)
    top = 200 if dtype == np.uint8 else 900
    yy, xx = np.mgrid[0:10, 0:9]
    base = np.stack([(np.sin(xx / 2.0 + k) * np.cos(yy / 3.0) + 1.2) for k in range(3)], axis=-1)
    raw = (base / base.max() * top + rng.normal(0, 3, base.shape)).clip(0, top).astype(dtype)
    img = nib.Nifti1Image(raw, _oblique())
    img.header.set_slope_inter(slope, inter)
    nib.save(img, str(tmp_path / "q.nii.gz"))
    seen = _capture(monkeypatch)
    out = tmp_path / "out"
    args = ["enhance", str(tmp_path / "q.nii.gz"), "--out", str(out), "--checkpoint", str(net), "--no-figure"]
    assert main([*args, "--ensemble", "1"]) == 0
    (result,) = seen
    assert np.ptp(result) > 0
    back = nib.load(out / "q_sr.nii.gz")
    values = back.get_fdata()
    assert values.shape == result.shape == (40, 36, 3)
    assert _psnr(values, result) >= 60.0
    assert len(np.unique(values)) > 0.5 * values.size  # today: 2 distinct values for slope 1e-3
    assert back.get_data_dtype() == (np.int16 if dtype == np.uint8 else dtype)
    # In physical units: within the input's physical range (the result is clamped to it).
    phys = raw.astype(np.float64) * slope + inter
    assert values.min() >= phys.min() - slope and values.max() <= phys.max() + slope


def test_simulate_of_a_scaled_input_measures_in_physical_units(tmp_path: Path, net: Path) -> None:
    yy, xx = np.mgrid[0:16, 0:12]
    raw = np.stack([(np.sin(xx / 3.0 + k) * np.cos(yy / 4.0) + 1.5) * 600 for k in range(2)], axis=-1)
    img = nib.Nifti1Image(raw.astype(np.int16), _oblique())
    img.header.set_slope_inter(1e-3, 0.0)  # a quantitative map in [0, 1.5]
    nib.save(img, str(tmp_path / "m.nii.gz"))
    out = tmp_path / "out"
    args = ["enhance", str(tmp_path / "m.nii.gz"), "--out", str(out), "--checkpoint", str(net), "--simulate"]
    assert main([*args, "--no-figure", "--ensemble", "1"]) == 0
    import json

    side = json.loads((out / "m_sr.json").read_text())
    sr = nib.load(out / "m_sr.nii.gz").get_fdata()
    ref = raw.astype(np.int16) * 1e-3
    assert _psnr(sr, ref) == pytest.approx(side["metrics"]["psnr_sr"], abs=0.05)
    assert side["metrics"]["psnr_bicubic"] > 20.0  # today the LR is rounded to 0, 1 and 2: bicubic ~ 5 dB
